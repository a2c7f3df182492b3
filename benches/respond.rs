//! The query path in-process, request bytes in and response bytes out, for a geo answer with
//! ECS, a static answer and NXDOMAIN: what a later change costs, without a network.
//!
//!   cargo bench --bench respond

use std::{hint::black_box, net::IpAddr, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
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

fn responder() -> Responder {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let zones = config::load_dir(&root.join("zones")).expect("the example zone");
    let metrics = Metrics::new();
    let geo = GeoIp::open(
        &[root.join("geoip/dbip-country.mmdb")],
        LookupCounters::default(),
    )
    .expect("the bundled GeoIP database");
    let table = Publisher::new(&zones, Arc::new(Metrics::new())).table();
    Responder::new(
        table,
        Arc::new(ArcSwap::from_pointee(geo)),
        &metrics,
        1232,
        None,
    )
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
