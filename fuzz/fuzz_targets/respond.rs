//! Request bytes to response bytes, as the UDP and TCP paths call it, on the example zone and
//! the bundled GeoIP database: no input may panic, and every response is a response to it.

#![no_main]

use std::{net::IpAddr, path::Path, sync::Arc, sync::LazyLock};

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use regiondns::{
    config,
    dns::{Responder, Transport},
    geo::{GeoIp, LookupCounters},
    metrics::Metrics,
    publish::Publisher,
};

static RESPONDER: LazyLock<Responder> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (zones, errors) = config::load_dir(&root.join("zones"), config::DEFAULT_MAX_ZONE_FILE);
    assert!(errors.is_empty(), "the example zone: {errors:?}");
    let geo = GeoIp::open(
        &[root.join("geoip/dbip-country.mmdb")],
        LookupCounters::default(),
    )
    .expect("the bundled GeoIP database");
    let metrics = Metrics::new();
    let table = Publisher::new(&zones, Arc::new(Metrics::new())).table();
    Responder::new(
        table,
        Arc::new(ArcSwap::from_pointee(geo)),
        &metrics,
        1232,
        Some("fuzz"),
    )
});

fuzz_target!(|packet: &[u8]| {
    let source: IpAddr = [192, 0, 2, 1].into();
    let mut out = Vec::with_capacity(4096);
    for transport in [Transport::Udp, Transport::Tcp] {
        if RESPONDER.respond(packet, source, transport, &mut out) {
            assert!(out.len() >= 12, "a response has a header");
            assert_eq!(out[..2], packet[..2], "the request's ID");
            assert!(out[2] & 0x80 != 0, "QR set");
            assert!(packet[2] & 0x80 == 0, "requests only are answered");
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "UDP responses fit the payload size");
            }
        }
    }
});
