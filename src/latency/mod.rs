//! Measured round trips from client networks to regions: the table the servers read
//! (`--latency FILE`), what a client's order by latency is made of ([`estimate`]), and the
//! builder that makes the table from the regions' gateway logs ([`build`]).
//!
//! This module owns the table's format and its checks, and the pure arithmetic of estimates.
//! It never locates a client and never touches health: the routing module joins the table into
//! the network map of a `policy: latency` service, off the query path, at load.

pub mod build;
pub mod estimate;
mod table;

pub use table::{LatencyTable, Measure, TableError, TableSummary};
