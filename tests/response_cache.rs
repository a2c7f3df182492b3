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

/// A request as bytes: `name` in the case `upper` picks letter by letter, with EDNS (DO,
/// NSID, and an ECS option of `subnet` when given) or without.
fn request_bytes(
    id: u16,
    name: &str,
    upper: u64,
    qtype: RecordType,
    edns: Option<(bool, bool, Option<String>)>,
) -> Vec<u8> {
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::{
        Name,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    };
    let cased: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| match upper >> (i % 64) & 1 {
            1 => c.to_ascii_uppercase(),
            _ => c,
        })
        .collect();
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(&cased).expect("name"), qtype));
    if let Some((dnssec_ok, nsid, subnet)) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(dnssec_ok);
        if nsid {
            edns.options_mut()
                .insert(EdnsOption::Unknown(u16::from(EdnsCode::NSID), Vec::new()));
        }
        if let Some(subnet) = subnet {
            let subnet: ClientSubnet = subnet.parse().expect("subnet");
            edns.options_mut().insert(EdnsOption::Subnet(subnet));
        }
        message.set_edns(edns);
    }
    message.to_vec().expect("encode")
}

mod remembered_equals_fresh {
    use std::net::IpAddr;

    use hickory_proto::rr::RecordType;
    use proptest::prelude::*;
    use regiondns::{
        dns::{ResponseCache, Transport},
        metrics::Metrics,
    };

    use super::request_bytes;
    use crate::common::query_path::responder_counted;

    /// One responder for every case: compiling its places takes longer than a case.
    static RESPONDER: std::sync::LazyLock<(Metrics, regiondns::dns::Responder)> =
        std::sync::LazyLock::new(|| {
            let metrics = Metrics::new();
            let responder = responder_counted(&metrics);
            (metrics, responder)
        });

    const NAMES: [&str; 8] = [
        "api.llm.example.com.",
        "ns1.llm.example.com.",
        "llm.example.com.",
        "docs.llm.example.com.",
        "_https._tcp.api.llm.example.com.",
        "nope.llm.example.com.",
        "deep.nope.llm.example.com.",
        "example.org.",
    ];
    const TYPES: [RecordType; 8] = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::MX,
        RecordType::SRV,
        RecordType::NS,
        RecordType::SOA,
        RecordType::ANY,
    ];

    fn subnet() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            any::<[u8; 3]>().prop_map(|o| Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))),
            any::<[u16; 4]>().prop_map(|h| Some(format!(
                "{:x}:{:x}:{:x}:{:x}00::/56",
                h[0] | 0x2000,
                h[1],
                h[2],
                h[3] >> 8
            ))),
        ]
    }

    fn edns() -> impl Strategy<Value = Option<(bool, bool, Option<String>)>> {
        prop_oneof![
            Just(None),
            (any::<bool>(), any::<bool>(), subnet()).prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The same request asked twice, then again with another ID and letter case: the
        /// third response comes from the cache and is byte for byte the one made afresh.
        #[test]
        fn a_response_from_the_cache_is_the_fresh_one(
            name in 0..NAMES.len(),
            qtype in 0..TYPES.len(),
            edns in edns(),
            cases in any::<(u64, u64)>(),
            ids in any::<(u16, u16)>(),
            source in any::<[u8; 4]>(),
        ) {
            let (metrics, responder) = &*RESPONDER;
            let remembered = metrics.remembered_responses_counter();
            let source = IpAddr::from(source);
            let (name, qtype) = (NAMES[name], TYPES[qtype]);
            let first = request_bytes(ids.0, name, cases.0, qtype, edns.clone());
            let again = request_bytes(ids.1, name, cases.1, qtype, edns);
            let mut cache = ResponseCache::default();
            let mut out = Vec::new();
            let answered = responder.respond_udp(&first, source, None, &mut cache, &mut out);
            responder.respond_udp(&first, source, None, &mut cache, &mut out);
            prop_assume!(answered);
            let before = remembered.get();
            let mut cached = Vec::new();
            responder.respond_udp(&again, source, None, &mut cache, &mut cached);
            let mut fresh = Vec::new();
            responder.respond(&again, source, Transport::Udp, &mut fresh);
            prop_assert_eq!(&cached, &fresh);
            // Remembered unless truncated, or made with another service's decision (the SRV
            // target's addresses): copied, not made afresh, so the comparison means something.
            let truncated = fresh.get(2).is_some_and(|flags| flags & 0x02 != 0);
            if !truncated && !name.starts_with("_https") {
                prop_assert_eq!(remembered.get() - before, 1);
            }
        }
    }
}
