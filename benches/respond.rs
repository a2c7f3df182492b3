//! The query path in-process, request bytes in and response bytes out, for a geo answer with
//! ECS, a static answer and NXDOMAIN: what a later change costs, without a network.
//!
//!   cargo bench --bench respond

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::rr::RecordType;
use query_path::{request, responder};
use regiondns::dns::Transport;

fn bench(c: &mut Criterion) {
    let responder = responder();
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let cases = [
        (
            "geo answer with ECS",
            request(
                "api.llm.example.com.",
                RecordType::A,
                Some("133.242.0.0/24"),
            ),
        ),
        (
            "static answer",
            request("ns1.llm.example.com.", RecordType::A, None),
        ),
        (
            "NXDOMAIN",
            request("nope.llm.example.com.", RecordType::A, None),
        ),
    ];
    let mut out = Vec::with_capacity(4096);
    for (name, packet) in &cases {
        c.bench_function(name, |b| {
            b.iter(|| responder.respond(black_box(packet), source, Transport::Udp, &mut out))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
