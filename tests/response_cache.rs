//! The UDP workers' response cache, seen from a client: a repeated request gets the same answer
//! with its own ID and question case, and is counted as the first was; a health change is never
//! answered from a response made before it; another client subnet is decided anew.

use std::time::Duration;

use crate::common::{
    Server, ZONE, addresses,
    endpoint::{Endpoint, Mode},
    http, query, udp, udp_exchange_raw, until_answered,
};
use hickory_proto::{op::Message, rr::RecordType};

const LONDON: &str = "81.2.69.0/24";
const TOKYO: &str = "133.242.0.0/24";

fn metric(server: &Server, series: &str) -> u64 {
    let (_, metrics) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn repeats_are_answered_alike_with_their_own_id_and_case_and_counted() {
    let eu = Endpoint::start(Mode::Ok);
    let check = format!(
        "{{ http: \"{}\", interval: 100ms, timeout: 80ms, fall: 2, rise: 2 }}",
        eu.url()
    );
    let zone = ZONE.replace(
        "    addresses: [203.0.113.20, \"2001:db8:20::1\"]",
        &format!("    addresses: [203.0.113.20]\n    check: {check}"),
    );
    // One worker: each keeps its own memory, and the kernel spreads clients over them.
    let server = Server::start_with(&zone, &["--udp-workers", "1"]);
    let dublin = "regiondns_queries_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\",region=\"eu-west\",rcode=\"NOERROR\"}";
    let remembered = "regiondns_remembered_responses_total";
    let located = "regiondns_geoip_lookups_total{result=\"located\"}";

    let first = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some(LONDON)),
    );
    assert_eq!(addresses(&first), ["203.0.113.20"]);
    // Remembered when it comes a second time (the first is only noted: most requests come once).
    let second = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some(LONDON)),
    );
    assert_eq!(addresses(&second), ["203.0.113.20"]);
    let (hits, lookups) = (metric(&server, remembered), metric(&server, located));
    assert_eq!(hits, 0, "nothing answered from memory yet");

    // The same request in other letters, with another ID.
    let mut again = query("api.llm.example.com.", RecordType::A, Some(LONDON))
        .to_vec()
        .expect("encode");
    again[0..2].copy_from_slice(&[0xbe, 0xef]);
    let name_at = 12;
    again[name_at + 1..name_at + 4].copy_from_slice(b"ApI");
    let raw = udp_exchange_raw(server.addr, &again).expect("an answer");
    assert_eq!(&raw[..2], &[0xbe, 0xef], "its own ID");
    assert_eq!(&raw[name_at + 1..name_at + 4], b"ApI", "its own case");
    let response = Message::from_vec(&raw).expect("a DNS message");
    assert_eq!(addresses(&response), ["203.0.113.20"]);
    assert_eq!(response.answers[0].name.to_string(), "ApI.llm.example.com.");
    assert_eq!(
        metric(&server, remembered),
        hits + 1,
        "answered from memory"
    );
    assert_eq!(metric(&server, located), lookups + 1, "counted as a lookup");
    assert_eq!(metric(&server, dublin), 3, "counted for its region");

    // Another subnet is decided for itself.
    let tokyo = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some(TOKYO)),
    );
    assert_eq!(addresses(&tokyo), ["203.0.113.30", "203.0.113.31"]);

    // Dublin fails: London's next answer moves at once, not from memory.
    eu.set(Mode::Fail);
    let moved = until_answered(&server, LONDON, &["203.0.113.10"], Duration::from_secs(5));
    assert!(moved.is_some(), "London moved to Virginia");
    for _ in 0..5 {
        let again = udp(
            server.addr,
            &query("api.llm.example.com.", RecordType::A, Some(LONDON)),
        );
        assert_eq!(addresses(&again), ["203.0.113.10"]);
    }
    eu.set(Mode::Ok);
    let back = until_answered(&server, LONDON, &["203.0.113.20"], Duration::from_secs(5));
    assert!(back.is_some(), "and back to Dublin");
}
