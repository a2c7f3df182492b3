//! regiondns: an authoritative DNS server that answers each client with the nearest healthy,
//! allowed region of a multi-region service.
//!
//! Data flows one way. [`config`] parses and validates zone files into immutable types, which
//! [`routing`] compiles into a [`routing::Plan`] (with [`zone`] holding each zone's static
//! data, signed with a key from [`dnssec`]). [`health`] probes the regions and reports to [`publish`], the one owner of every
//! region's state (in the words of [`region`]), which on every change builds a new
//! [`routing::RoutingTable`] and publishes it through arc-swap. [`dns`] reads requests and
//! writes responses with [`wire`], and asks [`answer`] what to say, from a snapshot of that
//! table and the client's location from [`geo`] (joined with the measured round trips of
//! [`latency`]; both find the innermost of nested networks with [`nesting`]): the query path
//! takes no lock and does no I/O.
//! [`reload`] watches the zone and GeoIP files and swaps in what is new and valid. [`admin`]
//! serves health, the drain switch and [`metrics`] over HTTP; [`fleet`] makes several instances
//! agree on health and share drains, with the [`timeline`] of state changes, and
//! [`events`] tells other tools of each failover; [`explain`] shows why a client
//! gets its answer, and [`drill`] rehearses a failover against a running server; [`transfer`]
//! gives the zones to secondaries at other providers. [`server`] runs all of it as one supervised process, and [`memory`] keeps the allocator from holding what a reload frees.

pub mod admin;
pub mod answer;
pub mod bearer;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod counter;
pub mod dns;
pub mod dnssec;
pub mod drill;
pub mod events;
pub mod explain;
pub mod fleet;
pub mod geo;
pub mod health;
pub mod history;
pub mod latency;
pub mod memory;
pub mod metrics;
pub mod nesting;
pub mod publish;
pub mod region;
pub mod reload;
pub mod routing;
pub mod server;
#[cfg(test)]
mod test_records;
pub mod timeline;
pub mod transfer;
pub mod wire;
pub mod zone;
