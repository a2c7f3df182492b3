//! regiondns: an authoritative DNS server that answers each client with the nearest healthy,
//! allowed region of a multi-region service.
//!
//! Data flows one way. [`config`] parses and validates zone files into immutable types, which
//! [`routing`] compiles into a [`routing::Plan`] (with [`zone`] holding each zone's static
//! data). [`health`] probes the regions and, on every state change, builds a new
//! [`routing::RoutingTable`] from the plan and the health of each region, and publishes it
//! through arc-swap. [`dns`] answers queries from a snapshot of that table and the client's
//! location from [`geo`], reading and writing messages with [`wire`]; the query path takes no lock and does no I/O. [`reload`] watches the
//! zone files and hands each new valid configuration to the publisher. [`admin`] serves health,
//! the drain switch and [`metrics`] over HTTP; [`explain`] shows why a client gets its answer.

pub mod admin;
pub mod answer;
pub mod cli;
pub mod config;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod region;
pub mod reload;
pub mod routing;
pub mod server;
pub mod wire;
pub mod zone;
