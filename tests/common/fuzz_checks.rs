//! What the fuzz targets (fuzz/fuzz_targets) check for each input, shared with
//! tests/fuzz_corpus.rs, which replays their kept corpus on every test run.

use std::{net::IpAddr, path::Path};

use regiondns::{
    config,
    dns::{Responder, Transport},
    metrics::Metrics,
    publish,
    routing::{Plan, RoutingTable},
};

/// Answers `packet` over UDP and TCP; every response must be a response to it. Returns how
/// many responses there were (0 to 2).
pub fn respond_checked(responder: &Responder, packet: &[u8], out: &mut Vec<u8>) -> usize {
    let source: IpAddr = [192, 0, 2, 1].into();
    let mut answered = 0;
    for transport in [Transport::Udp, Transport::Tcp] {
        if responder.respond(packet, source, transport, out) {
            answered += 1;
            assert!(out.len() >= 12, "a response has a header");
            assert_eq!(out[..2], packet[..2], "the request's ID");
            assert!(out[2] & 0x80 != 0, "QR set");
            assert!(packet[2] & 0x80 == 0, "requests only are answered");
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "{} bytes over UDP", out.len());
            }
        }
    }
    answered
}

/// Validates `text` as a zone file and builds what the server builds from it; an invalid one
/// must come with an error.
pub fn zone_checked(text: &str) {
    match config::parse(Path::new("fuzz.yaml"), text, 1) {
        Ok(zone) => {
            let zones = [zone];
            let geo = super::query_path::bundled_geoip();
            let plan = Plan::new(&zones, &Metrics::new(), &geo, None).expect("compiled");
            let health = publish::initial_health(&zones);
            let _ = RoutingTable::build(&plan, &publish::states(&health), &Default::default());
        }
        Err(errors) => assert!(!errors.is_empty(), "an error says what is wrong"),
    }
}
