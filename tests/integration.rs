//! The integration tests, as one binary: each module drives the real binary or server the way an
//! operator would (the harness is `common`). One binary links the crate and its dependencies
//! once; two dozen took over 1 GB of disk and a link each. `allocations.rs` stays its own binary
//! because it replaces the global allocator.

mod common;

mod cli;
mod differential;
mod dig;
mod dns;
mod dnssec;
mod drill;
mod events;
mod fleet;
mod fuzz_corpus;
mod geoip;
mod health;
mod health_timing;
mod latency;
mod load;
mod malformed;
mod module_graph;
mod monitoring;
mod policies;
pub mod real_geoip;
mod reload;
mod response_cache;
mod rrl;
mod server;
mod status_page;
mod tcp_limits;
mod timeline;
mod transfer;
