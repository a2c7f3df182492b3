//! The query path allocates nothing: after a first query has sized the buffers, answering a
//! geo query with ECS, a static query, NXDOMAIN, a malformed packet and a refused name costs
//! no heap allocation (counted by this test binary's allocator, per thread).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::IpAddr,
    path::Path,
    sync::Arc,
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use regiondns::{
    config,
    dns::{Responder, Transport},
    geo::{GeoIp, LookupCounters},
    metrics::Metrics,
    publish::Publisher,
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

fn request(name: &str, qtype: RecordType, subnet: Option<&str>) -> Vec<u8> {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(subnet) = subnet {
        let subnet: ClientSubnet = subnet.parse().expect("subnet");
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    message.set_edns(edns);
    message.to_vec().expect("encode")
}

#[test]
fn answering_allocates_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let zones = config::load_dir(&root.join("zones")).expect("the example zone");
    let metrics = Metrics::new();
    let geo = GeoIp::open(
        &[root.join("geoip/dbip-country.mmdb")],
        LookupCounters::default(),
    )
    .expect("the bundled GeoIP database");
    let table = Publisher::new(&zones, Arc::new(Metrics::new())).table();
    let responder = Responder::new(
        table,
        Arc::new(ArcSwap::from_pointee(geo)),
        &metrics,
        1232,
        None,
    );
    let source: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut malformed = request("api.llm.example.com.", RecordType::A, None);
    malformed.push(0);
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
            "geo AAAA from the source address",
            request("api.llm.example.com.", RecordType::AAAA, None),
        ),
        (
            "static answer",
            request("ns1.llm.example.com.", RecordType::A, None),
        ),
        (
            "CNAME",
            request("docs.llm.example.com.", RecordType::A, None),
        ),
        (
            "NXDOMAIN",
            request("nope.llm.example.com.", RecordType::A, None),
        ),
        ("refused", request("example.org.", RecordType::A, None)),
        ("malformed", malformed),
    ];
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
}
