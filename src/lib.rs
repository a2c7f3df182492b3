//! regiondns: an authoritative DNS server that answers each client with the nearest healthy,
//! allowed region of a multi-region service.
//!
//! Data flows one way. [`config`] parses and validates zone files into immutable types;
//! [`routing`] builds a [`routing::RoutingTable`] from them (with [`zone`] holding each zone's
//! static data), which is published through arc-swap; [`dns`] answers queries from a snapshot
//! of that table and the client's location from [`geo`]. The query path takes no lock and does
//! no I/O.

pub mod cli;
pub mod config;
pub mod dns;
pub mod geo;
pub mod routing;
pub mod zone;
