//! The query path in-process, for the allocation test and the criterion bench: a responder on
//! the example zone and the bundled GeoIP database, and requests as bytes.

use std::{path::Path, sync::Arc};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use regiondns::{config, dns::Responder, geo::GeoIp, metrics::Metrics, publish::Publisher};

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
    let publisher = Publisher::new(&zones, geo, Arc::new(Metrics::new())).expect("compiled");
    Responder::new(publisher.table(), metrics, 1232, None)
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
