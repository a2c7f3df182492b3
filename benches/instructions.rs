//! Answers one of the criterion bench's cases a given number of times, for a count of
//! instructions under callgrind, which repeats across runs on a noisy machine where clocks do
//! not. `bench/instructions.sh` runs it twice per case and prints the difference per query.
//!
//!   cargo bench --bench instructions -- CASE COUNT
//!
//! CASE: 0 geo, 1 static, 2 NXDOMAIN, answered afresh; 3 geo as a UDP worker answers a repeat
//! (from its response cache).

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr};

use query_path::{benchmarked, responder};
use regiondns::dns::{ResponseCache, Transport};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let case: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let responder = responder();
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let cases = benchmarked();
    let (_, packet) = &cases[case % cases.len()];
    let mut out = Vec::with_capacity(4096);
    let mut cache = ResponseCache::default();
    for _ in 0..count {
        if case < cases.len() {
            responder.respond(black_box(packet), source, Transport::Udp, &mut out);
        } else {
            responder.respond_udp(black_box(packet), source, None, &mut cache, &mut out);
        }
        black_box(&out);
    }
}
