//! The query path in-process, for the allocation test and the criterion bench: a responder on
//! the example zone and the bundled GeoIP database, and requests as bytes.

use std::{path::Path, sync::Arc};

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
    dns::Responder,
    geo::GeoIp,
    metrics::Metrics,
    publish::Publisher,
    region::{RegionKey, States},
    routing::{
        Loads, Plan, RoutingTable,
        load_control::{Controller, ShiftKey},
    },
    transfer::{Transfers, TsigKeys},
};

/// The repository's root: this crate's, or the one above it for the fuzz targets.
fn root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("zones").is_dir())
        .unwrap_or(manifest)
}

/// The bundled GeoIP database (geoip/ of this repository).
pub fn bundled_geoip() -> GeoIp {
    let path = root().join("geoip/dbip-country.mmdb");
    GeoIp::open(&[path]).expect("the bundled GeoIP database")
}

/// A responder as the server builds it, on zones/ and geoip/ of this repository.
pub fn responder() -> Responder {
    responder_counted(&Metrics::new())
}

/// As [`responder`], counting into `metrics`.
pub fn responder_counted(metrics: &Metrics) -> Responder {
    let (zones, errors) = config::load_dir(&root().join("zones"), config::DEFAULT_MAX_ZONE_FILE);
    assert!(errors.is_empty(), "the example zone: {errors:?}");
    let geo = bundled_geoip();
    let publisher = Publisher::new(&zones, geo, None, Arc::new(Metrics::new())).expect("compiled");
    let transfers = Transfers::new(
        publisher.table(),
        TsigKeys::default(),
        Arc::new(Metrics::new()),
    );
    Responder::new(publisher.table(), transfers, metrics, 1232, None)
}

/// A responder on the example zone whose regions report load and whose service has a load
/// target of 80%: ap-northeast at 100% keeps `kept` of its clients, the others have headroom.
pub fn responder_with_load(kept: f64) -> Responder {
    let text = std::fs::read_to_string(root().join("zones/llm.yaml")).expect("the example zone");
    let check = "\n    check: { http: \"http://127.0.0.1:9/\", load: { header: X-Load } }";
    let mut text = text.replace("    ttl: 20\n", "    ttl: 20\n    load_target: 80%\n");
    for region in ["10", "20", "30"] {
        let addresses = format!("\"2001:db8:{region}::1\"]");
        text = text.replace(&addresses, &format!("{addresses}{check}"));
    }
    let zone = config::parse(Path::new("llm.yaml"), &text, 1).expect("the example zone, loaded");
    let metrics = Metrics::new();
    let plan = Plan::new(
        std::slice::from_ref(&zone),
        &metrics,
        &bundled_geoip(),
        None,
    )
    .expect("plan");
    let key = |region: &str| RegionKey {
        zone: "llm.example.com.".into(),
        region: region.into(),
    };
    let mut loads = Loads::default();
    for (region, load) in [("us-east", 0.3), ("eu-west", 0.5), ("ap-northeast", 1.0)] {
        loads.load.insert(key(region), load);
    }
    let shift = ShiftKey {
        region: key("ap-northeast"),
        service: "api.llm.example.com.".into(),
    };
    loads
        .shares
        .insert(shift, Controller::with_shares(kept, 1.0));
    let table = RoutingTable::build(&plan, &States::new(), &loads);
    let table = Arc::new(ArcSwap::from_pointee(table));
    let transfers = Transfers::new(
        Arc::clone(&table),
        TsigKeys::default(),
        Arc::new(Metrics::new()),
    );
    Responder::new(table, transfers, &metrics, 1232, None)
}

/// A query with EDNS (1232), and an ECS option when `subnet` is set, as bytes.
pub fn request(name: &str, qtype: RecordType, subnet: Option<&str>) -> Vec<u8> {
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

/// The benchmarked requests (a geo answer with ECS, a static answer, NXDOMAIN), by name: what
/// `cargo bench --bench respond` times and tests/allocations.rs checks, among others.
pub fn benchmarked() -> [(&'static str, Vec<u8>); 3] {
    [
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
    ]
}
