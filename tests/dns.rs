//! DNS behaviour of the real server over real UDP and TCP sockets, with a Rust client.

use crate::common::{self, Server, ZONE, addresses, ecs, query, record_types, tcp, udp};
use hickory_proto::{
    op::{Edns, Message, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, RecordType,
        rdata::opt::{EdnsCode, EdnsOption, NSIDPayload},
    },
};

const API: &str = "api.llm.example.com.";

#[test]
fn service_answers_go_to_the_nearest_region_with_the_service_ttl_and_ecs_scope() {
    let server = Server::start(ZONE);
    let cases = [
        (
            "133.242.0.0/24",
            vec!["203.0.113.30", "203.0.113.31"],
            16,
            "Japan -> Tokyo",
        ),
        ("81.2.69.0/24", vec!["203.0.113.20"], 24, "London -> Dublin"),
        // The fixture knows no other address of 8.0.0.0/5: they go to the first region
        // listed, Virginia, as well, so the answer holds for all of them.
        ("8.8.8.0/24", vec!["203.0.113.10"], 5, "US -> Virginia"),
        (
            "1.0.0.0/24",
            vec!["203.0.113.30", "203.0.113.31"],
            24,
            "Sydney (flat record) -> Tokyo",
        ),
        (
            "89.160.20.0/24",
            vec!["203.0.113.20"],
            16,
            "Sweden (country only) -> Dublin",
        ),
    ];
    for (subnet, expected, scope, why) in cases {
        for response in [
            udp(server.addr, &query(API, RecordType::A, Some(subnet))),
            tcp(server.addr, &query(API, RecordType::A, Some(subnet))),
        ] {
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NoError,
                "{why}"
            );
            assert!(response.metadata.authoritative, "{why}: AA");
            assert!(!response.metadata.recursion_available, "{why}: RA");
            assert_eq!(addresses(&response), expected, "{why}");
            assert!(
                response.answers.iter().all(|r| r.ttl == 20),
                "{why}: service TTL"
            );
            assert_eq!(ecs(&response), Some((24, scope)), "{why}: ECS source/scope");
        }
    }
}

#[test]
fn ipv6_subnets_and_aaaa_answers() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query(API, RecordType::AAAA, Some("2a02:cf40:1::/48")),
    );
    assert_eq!(
        addresses(&response),
        vec!["2001:db8:20::1"],
        "Norway -> Dublin"
    );
    assert_eq!(ecs(&response), Some((48, 29)));
    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("2001:218:1::/56")),
    );
    assert_eq!(
        addresses(&response),
        vec!["203.0.113.30", "203.0.113.31"],
        "Japan over IPv6"
    );
    assert_eq!(ecs(&response), Some((56, 32)));
}

#[test]
fn aaaa_for_a_region_without_ipv6_is_nodata_with_the_soa() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query(API, RecordType::AAAA, Some("133.242.0.0/24")),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(record_types(&response.authorities), vec![RecordType::SOA]);
    assert_eq!(
        response.authorities[0].ttl, 30,
        "min(SOA TTL, negative_ttl)"
    );
    assert_eq!(
        ecs(&response),
        Some((24, 16)),
        "the region choice depended on location"
    );
}

#[test]
fn clients_without_ecs_are_located_by_source_address_and_unknown_ones_get_the_first_region() {
    let server = Server::start(ZONE);
    // The test client is 127.0.0.1: no GeoIP record.
    let mut plain = query(API, RecordType::A, None);
    let response = udp(server.addr, &plain);
    assert_eq!(
        addresses(&response),
        vec!["203.0.113.10"],
        "first region in the list"
    );
    assert!(
        response.edns.is_none(),
        "no OPT in the reply to a query without one"
    );

    plain.set_edns(Edns::new());
    let response = udp(server.addr, &plain);
    assert!(
        response.edns.is_some(),
        "OPT in the reply to a query with one"
    );
    assert_eq!(
        ecs(&response),
        None,
        "no ECS in the reply to a query without it"
    );

    let response = udp(server.addr, &query(API, RecordType::A, Some("10.1.0.0/16")));
    assert_eq!(
        addresses(&response),
        vec!["203.0.113.10"],
        "private range: unknown"
    );
    let (_, scope) = ecs(&response).expect("ECS");
    assert!(
        scope <= 16,
        "unknown over the database's empty network: {scope}"
    );

    // Source prefix 0: the resolver asks us not to use client information (RFC 7871 7.1.2).
    let response = udp(server.addr, &query(API, RecordType::A, Some("0.0.0.0/0")));
    assert_eq!(addresses(&response), vec!["203.0.113.10"]);
    assert_eq!(ecs(&response), Some((0, 0)));
}

#[test]
fn answers_that_do_not_depend_on_location_have_scope_zero() {
    let server = Server::start(ZONE);
    for (name, qtype) in [
        ("ns1.llm.example.com.", RecordType::A),
        ("llm.example.com.", RecordType::SOA),
        ("nope.llm.example.com.", RecordType::A),
        ("solo.llm.example.com.", RecordType::A),
        (API, RecordType::TXT),
    ] {
        let response = udp(server.addr, &query(name, qtype, Some("133.242.0.0/24")));
        assert_eq!(ecs(&response), Some((24, 0)), "{name} {qtype}");
    }
}

#[test]
fn static_records_of_every_type_are_served() {
    let server = Server::start(ZONE);
    let answer = |name: &str, qtype| {
        let response = udp(server.addr, &query(name, qtype, None));
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(response.metadata.authoritative, "{name} {qtype}");
        response
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        answer("ns1.llm.example.com.", RecordType::A),
        vec!["198.51.100.53"]
    );
    assert_eq!(
        answer("ns1.llm.example.com.", RecordType::AAAA),
        vec!["2001:db8::53"]
    );
    assert_eq!(
        answer("llm.example.com.", RecordType::TXT),
        vec!["v=spf1 -all"]
    );
    assert_eq!(
        answer("llm.example.com.", RecordType::MX),
        vec!["10 mail.example.com."]
    );
    assert_eq!(
        answer("llm.example.com.", RecordType::CAA),
        vec!["0 issue \"letsencrypt.org\""]
    );
    assert_eq!(
        answer("_https._tcp.api.llm.example.com.", RecordType::SRV),
        vec!["10 5 443 api.llm.example.com."]
    );
    assert_eq!(
        answer("docs.llm.example.com.", RecordType::CNAME),
        vec!["docs.example.net."]
    );
    assert_eq!(
        answer("10.in-addr.llm.example.com.", RecordType::PTR),
        vec!["host.example.net."]
    );
    assert_eq!(
        answer("docs.llm.example.com.", RecordType::A),
        vec!["docs.example.net."],
        "CNAME for any type"
    );
    assert_eq!(
        answer("llm.example.com.", RecordType::NS),
        vec!["ns1.llm.example.com.", "ns2.llm.example.com."]
    );
    let soa = answer("llm.example.com.", RecordType::SOA);
    assert_eq!(
        soa,
        vec!["ns1.llm.example.com. hostmaster.example.com. 2026112401 3600 600 1209600 30"]
    );
}

#[test]
fn names_match_case_insensitively_and_the_question_keeps_its_case() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query("API.Llm.EXAMPLE.com.", RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(addresses(&response), vec!["203.0.113.20"]);
    assert_eq!(
        response.queries[0].name().to_string(),
        "API.Llm.EXAMPLE.com."
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query("nope.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert_eq!(record_types(&response.authorities), vec![RecordType::SOA]);
    assert_eq!(response.authorities[0].ttl, 30);

    // _tcp.api exists only as an empty non-terminal above the SRV record: NODATA, not NXDOMAIN.
    for name in ["_tcp.api.llm.example.com.", "ns1.llm.example.com."] {
        let response = udp(server.addr, &query(name, RecordType::TXT, None));
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(response.answers.is_empty(), "{name}");
        assert_eq!(
            record_types(&response.authorities),
            vec![RecordType::SOA],
            "{name}"
        );
    }
}

#[test]
fn names_in_no_zone_are_refused() {
    let server = Server::start(ZONE);
    for name in ["example.org.", "example.com.", "."] {
        let response = udp(server.addr, &query(name, RecordType::A, None));
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!response.metadata.authoritative, "{name}");
    }
}

#[test]
fn names_below_a_delegation_get_a_referral_with_glue() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query("www.sub.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(
        !response.metadata.authoritative,
        "a referral is not authoritative"
    );
    assert!(response.answers.is_empty());
    assert_eq!(
        record_types(&response.authorities),
        vec![RecordType::NS, RecordType::NS]
    );
    let glue: Vec<String> = response
        .additionals
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    assert_eq!(glue, vec!["192.0.2.53"]);
}

#[test]
fn any_gets_a_minimal_answer() {
    let server = Server::start(ZONE);
    let response = tcp(
        server.addr,
        &query("llm.example.com.", RecordType::ANY, None),
    );
    let types = record_types(&response.answers);
    assert!(!types.is_empty(), "one RRset");
    assert!(
        types.iter().all(|t| *t == types[0]),
        "a single RRset, not everything: {types:?}"
    );
    let response = udp(
        server.addr,
        &query(API, RecordType::ANY, Some("81.2.69.0/24")),
    );
    assert_eq!(addresses(&response), vec!["203.0.113.20"]);
}

#[test]
fn edns_payload_is_clamped_and_versions_above_zero_get_badvers() {
    let server = Server::start(ZONE);
    let mut message = query(API, RecordType::A, None);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns.options_mut()
        .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
    message.set_edns(edns.clone());
    let response = udp(server.addr, &message);
    assert_eq!(
        response.metadata.response_code,
        ResponseCode::NoError,
        "unknown options ignored"
    );
    assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(1232));
    assert_eq!(addresses(&response), vec!["203.0.113.10"]);

    edns.set_version(1);
    message.set_edns(edns);
    let response = udp(server.addr, &message);
    // BADVERS and BADSIG share code 16; the decoder names it BADSIG.
    assert_eq!(u16::from(response.metadata.response_code), 16, "BADVERS");
    assert_eq!(response.edns.as_ref().map(Edns::version), Some(0));
    assert!(response.answers.is_empty());
}

#[test]
fn answers_too_large_for_udp_are_truncated_whole_and_complete_over_tcp() {
    let big: Vec<String> = (0..12)
        .map(|i| format!("\"{i:02}{}\"", "x".repeat(180)))
        .collect();
    let zone = ZONE.replace(
        "  docs: { CNAME: docs.example.net. }",
        &format!(
            "  docs: {{ CNAME: docs.example.net. }}\n  big: {{ TXT: [{}] }}",
            big.join(", ")
        ),
    );
    let server = Server::start(&zone);
    let name = "big.llm.example.com.";

    let response = udp(
        server.addr,
        &query(name, RecordType::TXT, Some("81.2.69.0/24")),
    );
    assert!(response.metadata.truncation, "TC over UDP");
    assert!(response.answers.is_empty(), "no partial RRset");
    assert!(response.edns.is_some(), "OPT kept in a truncated reply");
    assert_eq!(ecs(&response), Some((24, 0)));

    let response = udp(server.addr, &query(name, RecordType::TXT, None));
    assert!(response.metadata.truncation, "TC at 512 bytes without EDNS");

    let response = tcp(
        server.addr,
        &query(name, RecordType::TXT, Some("81.2.69.0/24")),
    );
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 12, "everything over TCP");

    let response = udp(server.addr, &query(API, RecordType::A, None));
    assert!(
        !response.metadata.truncation,
        "small answers are not truncated"
    );
}

#[test]
fn unsupported_requests_get_the_right_error() {
    let server = Server::start(ZONE);
    let mut notify = query(API, RecordType::A, None);
    notify.metadata.op_code = OpCode::Update;
    assert_eq!(
        udp(server.addr, &notify).metadata.response_code,
        ResponseCode::NotImp
    );

    let mut two = query(API, RecordType::A, None);
    two.add_query(Query::query(
        "ns1.llm.example.com.".parse().expect("name"),
        RecordType::A,
    ));
    assert_eq!(
        udp(server.addr, &two).metadata.response_code,
        ResponseCode::FormErr
    );

    let mut chaos = Message::query();
    chaos.metadata.id = 7;
    let mut question = Query::query(
        Name::from_ascii("version.bind.").expect("name"),
        RecordType::TXT,
    );
    question.set_query_class(DNSClass::CH);
    chaos.add_query(question);
    assert_eq!(
        udp(server.addr, &chaos).metadata.response_code,
        ResponseCode::Refused
    );

    let axfr = query("llm.example.com.", RecordType::AXFR, None);
    assert_eq!(
        tcp(server.addr, &axfr).metadata.response_code,
        ResponseCode::Refused
    );
}

/// A query for api.llm.example.com A with a hand-made OPT carrying `ecs` as the ECS payload.
fn raw_query_with_ecs(ecs: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["api", "llm", "example", "com"] {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let option_len = ecs.len() as u16;
    let rdlen = option_len + 4;
    bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]); // OPT, payload 1232, ttl 0
    bytes.extend_from_slice(&rdlen.to_be_bytes());
    bytes.extend_from_slice(&8u16.to_be_bytes());
    bytes.extend_from_slice(&option_len.to_be_bytes());
    bytes.extend_from_slice(ecs);
    bytes
}

#[test]
fn invalid_client_subnets_get_formerr_with_the_question_and_the_opt() {
    let server = Server::start(ZONE);
    let reply = |ecs: &[u8]| {
        let reply = common::udp_exchange_raw(server.addr, &raw_query_with_ecs(ecs)).expect("reply");
        Message::from_vec(&reply).expect("decodable reply")
    };
    // family 1, source /24, scope 0, 3 address bytes: valid.
    assert_eq!(
        reply(&[0, 1, 24, 0, 81, 2, 69]).metadata.response_code,
        ResponseCode::NoError
    );
    let invalid: [(&str, &[u8]); 6] = [
        (
            "bits set beyond the source prefix",
            &[0, 1, 20, 0, 81, 2, 69],
        ),
        (
            "IPv4 source prefix over 32",
            &[0, 1, 33, 0, 81, 2, 69, 0, 0],
        ),
        ("unknown family", &[0, 9, 24, 0, 81, 2, 69]),
        (
            "more address octets than the prefix needs",
            &[0, 1, 16, 0, 81, 2, 0],
        ),
        (
            "fewer address octets than the prefix needs",
            &[0, 1, 24, 0, 81, 2],
        ),
        ("empty option", &[]),
    ];
    for (why, ecs) in invalid {
        let response = reply(ecs);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::FormErr,
            "{why}"
        );
        // RFC 6891 6.1.1: a response to a request with OPT carries OPT, or the resolver
        // concludes the server has no EDNS at all.
        let edns = response
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{why}: OPT kept"));
        assert_eq!(edns.max_payload(), 1232, "{why}");
        assert_eq!(response.queries.len(), 1, "{why}: question kept");
        assert_eq!(response.queries[0].name().to_ascii(), API, "{why}");
    }
}

/// The test zone with in-zone aliases: to a static name, to the service, to nothing, in a loop.
fn zone_with_aliases() -> String {
    ZONE.replace(
        "records:\n",
        "records:\n  www: { CNAME: web }\n  web: { A: [192.0.2.80] }\n  geo: { CNAME: api }\n  \
         two: { CNAME: www }\n  dangling: { CNAME: missing }\n  loop1: { CNAME: loop2 }\n  \
         loop2: { CNAME: loop1 }\n  empty: { CNAME: ns2 }\n",
    )
}

#[test]
fn in_zone_cnames_are_followed_to_the_target_records() {
    let server = Server::start(&zone_with_aliases());
    let response = udp(
        server.addr,
        &query("two.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(
        record_types(&response.answers),
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    assert_eq!(addresses(&response), vec!["192.0.2.80"]);
    assert_eq!(response.answers[1].name.to_ascii(), "www.llm.example.com.");

    // Out of the zone: the CNAME alone, for the resolver to follow.
    let out = udp(
        server.addr,
        &query("docs.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(record_types(&out.answers), vec![RecordType::CNAME]);
    assert!(out.authorities.is_empty());
}

#[test]
fn a_cname_to_a_service_gets_the_geo_answer_with_its_scope() {
    let server = Server::start(&zone_with_aliases());
    for (subnet, expected, scope) in [
        ("81.2.69.0/24", "203.0.113.20", 24),
        ("8.8.8.0/24", "203.0.113.10", 5),
    ] {
        let response = udp(
            server.addr,
            &query("geo.llm.example.com.", RecordType::A, Some(subnet)),
        );
        assert_eq!(
            record_types(&response.answers)[0],
            RecordType::CNAME,
            "{subnet}"
        );
        assert_eq!(addresses(&response), vec![expected], "{subnet}");
        assert_eq!(
            ecs(&response),
            Some((24, scope)),
            "{subnet}: the scope of the geo decision"
        );
        assert!(
            response.answers[1..].iter().all(|r| r.ttl == 20),
            "service TTL"
        );
    }
}

#[test]
fn the_last_name_of_a_chain_sets_the_rcode_and_loops_end() {
    let server = Server::start(&zone_with_aliases());
    // RFC 6604: a dangling in-zone target is NXDOMAIN, with the CNAME and the SOA.
    let dangling = udp(
        server.addr,
        &query("dangling.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(dangling.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(record_types(&dangling.answers), vec![RecordType::CNAME]);
    assert_eq!(record_types(&dangling.authorities), vec![RecordType::SOA]);

    // A target without the type: NODATA, with the SOA.
    let nodata = udp(
        server.addr,
        &query("empty.llm.example.com.", RecordType::AAAA, None),
    );
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert_eq!(record_types(&nodata.answers), vec![RecordType::CNAME]);
    assert_eq!(record_types(&nodata.authorities), vec![RecordType::SOA]);

    // A loop: each CNAME once, then the answer ends.
    let looped = tcp(
        server.addr,
        &query("loop1.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(looped.metadata.response_code, ResponseCode::NoError);
    assert_eq!(record_types(&looped.answers), vec![RecordType::CNAME; 2]);
}

#[test]
fn do_bit_is_copied_nsid_answered_and_refusals_say_not_authoritative() {
    let dir = common::zone_dir(ZONE);
    let args = common::serve_args(dir.path(), &["--admin", "off", "--nsid", "ns-test-1"]);
    let server = Server::spawn(dir, &args, None);

    let mut signed = query(API, RecordType::A, Some("81.2.69.0/24"));
    if let Some(edns) = signed.edns.as_mut() {
        edns.set_dnssec_ok(true);
        edns.options_mut().insert(EdnsOption::NSID(
            NSIDPayload::new(Vec::<u8>::new()).expect("empty NSID"),
        ));
    }
    let response = udp(server.addr, &signed);
    let edns = response.edns.as_ref().expect("OPT");
    assert!(edns.flags().dnssec_ok, "RFC 3225 3: DO copied");
    let Some(EdnsOption::NSID(nsid)) = edns.option(EdnsCode::NSID) else {
        panic!("NSID expected: {edns:?}");
    };
    assert_eq!(nsid.as_ref(), b"ns-test-1");

    let plain = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    let edns = plain.edns.as_ref().expect("OPT");
    assert!(!edns.flags().dnssec_ok);
    assert!(
        edns.option(EdnsCode::NSID).is_none(),
        "NSID only when asked"
    );

    let elsewhere = udp(
        server.addr,
        &query("example.org.", RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(elsewhere.metadata.response_code, ResponseCode::Refused);
    assert!(!elsewhere.metadata.authoritative);
    let Some(EdnsOption::Unknown(15, ede)) = elsewhere
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Unknown(15)))
    else {
        panic!("EDE expected");
    };
    assert_eq!(ede[..2], 20u16.to_be_bytes(), "EDE 20: Not Authoritative");
}

#[test]
fn answers_are_compressed_against_the_question() {
    let server = Server::start(ZONE);
    let request = query(API, RecordType::A, None).to_vec().expect("encode");
    let reply = common::udp_exchange_raw(server.addr, &request).expect("reply");
    let answer_owner = request.len();
    assert_eq!(
        reply[answer_owner..answer_owner + 2],
        [0xC0, 12],
        "owner points at the question"
    );
    // Header, question, one A record with a pointer as owner: nothing else.
    assert_eq!(reply.len(), request.len() + 2 + 10 + 4);
    let soa = query("nope.llm.example.com.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    let reply = common::udp_exchange_raw(server.addr, &soa).expect("reply");
    let uncompressed = b"\x03llm\x07example\x03com\x00";
    let count = reply
        .windows(uncompressed.len())
        .filter(|w| w == uncompressed)
        .count();
    assert_eq!(count, 1, "the zone name is written once, in the question");
}

#[test]
fn malformed_packets_never_take_the_server_down() {
    let server = Server::start(ZONE);
    let valid = query(API, RecordType::A, Some("81.2.69.0/24"))
        .to_vec()
        .expect("encode");
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 11],
        vec![0xff; 12],
        vec![0; 512],
    ];
    // Every truncation of a valid query, and every single-byte corruption of it.
    garbage.extend((0..valid.len()).map(|n| valid[..n].to_vec()));
    garbage.extend((0..valid.len()).map(|i| {
        let mut bytes = valid.clone();
        bytes[i] ^= 0xa5;
        bytes
    }));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for packet in &garbage {
        socket.send_to(packet, server.addr).expect("send");
    }
    for packet in garbage.iter().filter(|p| p.len() >= 2) {
        let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
        use std::io::Write;
        let _ = stream.write_all(&(packet.len() as u16).to_be_bytes());
        let _ = stream.write_all(packet);
    }
    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(
        addresses(&response),
        vec!["203.0.113.20"],
        "still answering"
    );
    // A panic anywhere takes the supervised server down; a clean stop shows there was none.
    let (status, log) = server.stop();
    assert!(status.is_ok(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_response_echoes_the_client_subnet_address() {
    let server = Server::start(ZONE);
    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    let Some(EdnsOption::Subnet(subnet)) = response
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
    else {
        panic!("ECS expected");
    };
    assert_eq!(subnet.addr().to_string(), "81.2.69.0");
    let RData::A(_) = &response.answers[0].data else {
        panic!("A record")
    };
}
