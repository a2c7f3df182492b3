//! The query path in-process, request bytes in and response bytes out, for a geo answer with
//! ECS, a static answer and NXDOMAIN: what a later change costs, without a network.
//!
//!   cargo bench --bench respond

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use query_path::{benchmarked, responder};
use regiondns::dns::Transport;

fn bench(c: &mut Criterion) {
    let responder = responder();
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let cases = benchmarked();
    let mut out = Vec::with_capacity(4096);
    for (name, packet) in &cases {
        c.bench_function(name, |b| {
            b.iter(|| responder.respond(black_box(packet), source, Transport::Udp, &mut out))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
