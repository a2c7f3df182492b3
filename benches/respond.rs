//! The query path in-process, request bytes in and response bytes out, for a geo answer with
//! ECS, a static answer and NXDOMAIN: what a later change costs, without a network.
//!
//!   cargo bench --bench respond

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use query_path::{benchmarked, responder};
use regiondns::{
    counter::QueryCounter,
    dns::{RateLimiter, ResponseCache, RrlCounters, RrlSettings, Transport},
};

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
    // The first case again as a UDP worker answers a repeat: from its response cache.
    let mut cache = ResponseCache::default();
    let (name, packet) = &cases[0];
    c.bench_function(&format!("{name}, a repeat (response cache)"), |b| {
        b.iter(|| responder.respond_udp(black_box(packet), source, None, &mut cache, &mut out))
    });
    // The first case again, under a response rate limit it never reaches: the limit's cost.
    let settings = RrlSettings {
        rate: u32::MAX,
        slip: 2,
        exempt: Vec::new(),
    };
    let counters = RrlCounters {
        dropped: QueryCounter::default(),
        slipped: QueryCounter::default(),
    };
    let mut limiter = RateLimiter::new(&settings, 1, counters).expect("RRL on");
    let (name, packet) = &cases[0];
    c.bench_function(&format!("{name}, RRL on"), |b| {
        b.iter(|| {
            limiter.set_now(Instant::now());
            responder.respond_limited(black_box(packet), source, &mut limiter, &mut out)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
