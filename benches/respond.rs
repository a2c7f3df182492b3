//! The query path in-process, request bytes in and response bytes out, for a geo answer with
//! ECS, a static answer and NXDOMAIN: what a later change costs, without a network.
//!
//!   cargo bench --bench respond

#[path = "../tests/common/query_path.rs"]
mod query_path;

use std::{hint::black_box, net::IpAddr, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::rr::RecordType;
use query_path::{benchmarked, request, responder, responder_with_load};
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
    // The first case with a load target: all kept (the region is below it), and with the
    // client's region over it, its subnet weighed, kept and moved.
    let (name, packet) = &cases[0];
    for (kept, what) in [
        (1.0, "below the load target"),
        (0.5, "over it, subnet weighed"),
    ] {
        let loaded = responder_with_load(kept);
        c.bench_function(&format!("{name}, {what}"), |b| {
            b.iter(|| loaded.respond(black_box(packet), source, Transport::Udp, &mut out))
        });
    }
    let loaded = responder_with_load(0.5);
    let moved = request(
        "api.llm.example.com.",
        RecordType::A,
        Some("133.242.1.0/24"),
    );
    c.bench_function(
        &format!("{name}, over the load target, subnet moved"),
        |b| b.iter(|| loaded.respond(black_box(&moved), source, Transport::Udp, &mut out)),
    );
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
