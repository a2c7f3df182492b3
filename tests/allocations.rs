//! The query path allocates nothing: after a first query has sized the buffers, answering a
//! geo query with ECS, a static query, NXDOMAIN, a malformed packet and a refused name costs
//! no heap allocation (counted by this test binary's allocator, per thread); nor does the UDP
//! workers' way, answering repeats from their response cache, once its slots are sized.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::IpAddr,
};

use common::query_path::{benchmarked, request, responder, responder_with_load};
use hickory_proto::rr::RecordType;
use regiondns::{
    counter::QueryCounter,
    dns::{RateLimiter, ResponseCache, RrlCounters, RrlSettings, Transport},
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn answering_allocates_nothing() {
    let responder = responder();
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut malformed = request("api.llm.example.com.", RecordType::A, None);
    malformed.push(0);
    let others = [
        (
            "geo AAAA from the source address",
            request("api.llm.example.com.", RecordType::AAAA, None),
        ),
        (
            "CNAME",
            request("docs.llm.example.com.", RecordType::A, None),
        ),
        ("refused", request("example.org.", RecordType::A, None)),
        ("malformed", malformed),
    ];
    let cases: Vec<(&str, Vec<u8>)> = benchmarked().into_iter().chain(others).collect();
    let counted = allocations();
    std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert_eq!(allocations(), counted + 1, "the allocator counts");
    let mut out = Vec::with_capacity(4096);
    for (what, packet) in &cases {
        assert!(
            responder.respond(packet, source, Transport::Udp, &mut out),
            "{what}: answered"
        );
        let before = allocations();
        for _ in 0..1000 {
            responder.respond(packet, source, Transport::Udp, &mut out);
        }
        let made = allocations() - before;
        assert_eq!(made, 0, "{what}: {made} allocations in 1000 queries");
    }
    // Under the rate limit too: its table is made once, answers, slips and drops make nothing.
    let settings = RrlSettings {
        rate: 100,
        slip: 2,
        exempt: Vec::new(),
    };
    let counters = RrlCounters {
        dropped: QueryCounter::default(),
        slipped: QueryCounter::default(),
    };
    let mut limiter = RateLimiter::new(&settings, 1, counters.clone()).expect("RRL on");
    limiter.set_now(std::time::Instant::now());
    for (what, packet) in &cases {
        let before = allocations();
        for _ in 0..1000 {
            responder.respond_limited(packet, source, &mut limiter, &mut out);
        }
        let made = allocations() - before;
        assert_eq!(
            made, 0,
            "{what}, rate-limited: {made} allocations in 1000 queries"
        );
    }
    assert!(counters.dropped.get() > 0 && counters.slipped.get() > 0);

    // The workers' way: remembered, copied, counted and limited without allocating.
    let mut cache = ResponseCache::default();
    for (what, packet) in &cases {
        // Remembered the second time (the doorkeeper's), with its slot's buffers made then.
        responder.respond_udp(packet, source, None, &mut cache, &mut out);
        responder.respond_udp(packet, source, None, &mut cache, &mut out);
        let before = allocations();
        for _ in 0..1000 {
            responder.respond_udp(packet, source, None, &mut cache, &mut out);
            responder.respond_udp(packet, source, Some(&mut limiter), &mut cache, &mut out);
        }
        let made = allocations() - before;
        assert_eq!(
            made, 0,
            "{what}, from the cache: {made} allocations in 2000 queries"
        );
    }
}

#[test]
fn weighing_a_subnet_for_load_allocates_nothing() {
    // The client's region (Tokyo) is over its load target and keeps half of its clients.
    let responder = responder_with_load(0.5);
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut out = Vec::with_capacity(4096);
    let mut answered = std::collections::BTreeSet::new();
    for subnet in ["133.242.0.0/24", "133.242.1.0/24"] {
        let packet = request("api.llm.example.com.", RecordType::A, Some(subnet));
        assert!(responder.respond(&packet, source, Transport::Udp, &mut out));
        let response = hickory_proto::op::Message::from_vec(&out).expect("a response");
        answered.insert(response.answers[0].data.to_string());
        let before = allocations();
        for _ in 0..1000 {
            responder.respond(&packet, source, Transport::Udp, &mut out);
        }
        let made = allocations() - before;
        assert_eq!(made, 0, "{subnet}: {made} allocations in 1000 queries");
    }
    // The benches' two cases: one subnet kept in Tokyo, the other moved.
    assert!(answered.contains("203.0.113.30"), "{answered:?}");
    assert_eq!(answered.len(), 2, "{answered:?}");
}
