//! The fuzzers' kept corpus and past crashes (fuzz/corpus, fuzz/regressions), replayed through
//! the checks the fuzz targets make: on every test run, without a fuzzer.

mod common;

use std::{net::IpAddr, path::Path};

use common::query_path::responder;
use regiondns::{
    config,
    dns::Transport,
    metrics::Metrics,
    publish,
    routing::{Plan, RoutingTable},
};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = format!("{dir}/{target}/{}", entry.file_name().to_string_lossy());
            inputs.push((name, std::fs::read(entry.path()).expect("read an input")));
        }
    }
    inputs
}

#[test]
fn every_kept_request_gets_a_response_to_it_or_none() {
    let responder = responder();
    let source: IpAddr = [192, 0, 2, 1].into();
    let inputs = inputs("respond");
    assert!(inputs.len() >= 10, "the corpus is there: {}", inputs.len());
    let mut out = Vec::with_capacity(4096);
    let mut answered = 0;
    for (name, packet) in &inputs {
        for transport in [Transport::Udp, Transport::Tcp] {
            if responder.respond(packet, source, transport, &mut out) {
                answered += 1;
                assert!(out.len() >= 12, "{name}: a header");
                assert_eq!(out[..2], packet[..2], "{name}: the request's ID");
                assert!(out[2] & 0x80 != 0, "{name}: QR set");
                assert!(packet[2] & 0x80 == 0, "{name}: a response was answered");
                if transport == Transport::Udp {
                    assert!(out.len() <= 1232, "{name}: {} bytes over UDP", out.len());
                }
            }
        }
    }
    assert!(answered > 0);
}

#[test]
fn every_kept_zone_text_validates_or_says_why() {
    let inputs = inputs("zone");
    assert!(!inputs.is_empty(), "the corpus is there");
    for (name, bytes) in &inputs {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        match config::parse(Path::new("fuzz.yaml"), text, 1) {
            Ok(zone) => {
                let zones = [zone];
                let plan = Plan::new(&zones, &Metrics::new());
                let health = publish::initial_health(&zones);
                let _ = RoutingTable::build(&plan, &publish::states(&health));
            }
            Err(errors) => assert!(!errors.is_empty(), "{name}: an error without a message"),
        }
    }
}
