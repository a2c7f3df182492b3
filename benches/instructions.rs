//! Answers one of the criterion bench's cases a given number of times, for a count of
//! instructions under callgrind, which repeats across runs on a noisy machine where clocks do
//! not. `bench/instructions.sh` runs it twice per case and prints the difference per query.
//!
//!   cargo bench --bench instructions -- CASE COUNT
//!
//! CASE: 0 geo, 1 static, 2 NXDOMAIN, answered afresh; 3 geo as a UDP worker answers a repeat
//! (from its response cache); 4 geo with the client's region over its load target, the
//! subnet weighed and kept, and 5 moved; 6 geo from 4,096 Japanese /24s in turn, and 7 the
//! same with Tokyo over its load target (about half of them kept, half moved).

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr};

use hickory_proto::rr::RecordType;

use query_path::{benchmarked, request, responder, responder_with_load};
use regiondns::dns::{ResponseCache, Transport};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let case: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let responder = match case {
        4 | 5 | 7 => responder_with_load(0.5),
        _ => responder(),
    };
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let cases = benchmarked();
    let moved = request(
        "api.llm.example.com.",
        RecordType::A,
        Some("133.242.1.0/24"),
    );
    let many: Vec<Vec<u8>> = (0..4_096)
        .map(|n| {
            let subnet = format!("133.{}.{}.0/24", n / 256, n % 256);
            request("api.llm.example.com.", RecordType::A, Some(&subnet))
        })
        .collect();
    let single = match case {
        4 => &cases[0].1,
        5 => &moved,
        _ => &cases[case % cases.len()].1,
    };
    let mut out = Vec::with_capacity(4096);
    let mut cache = ResponseCache::default();
    for n in 0..count {
        let packet = match case {
            6 | 7 => &many[n as usize % many.len()],
            _ => single,
        };
        if case != 3 {
            responder.respond(black_box(packet), source, Transport::Udp, &mut out);
        } else {
            responder.respond_udp(black_box(packet), source, None, &mut cache, &mut out);
        }
        black_box(&out);
    }
}
