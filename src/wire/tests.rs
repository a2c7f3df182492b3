//! Parsing and writing checked against hickory-proto's own encoder and decoder, which this
//! module does not share code with.

use std::{net::IpAddr, str::FromStr};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{
            A, CNAME, MX, NS, SOA, SRV,
            opt::{ClientSubnet as HickorySubnet, EdnsOption},
        },
    },
};

use super::*;

fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

fn query(qname: &str, qtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x1234;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message.to_vec().expect("encode query")
}

/// A query with one raw EDNS option, as a client that hickory would refuse to encode sends it.
fn query_with_option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut packet = query("api.llm.example.com.", RecordType::A, None);
    packet[11] = 1; // ARCOUNT
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    let rdlen = u16::try_from(4 + data.len()).expect("small");
    packet.extend_from_slice(&rdlen.to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(&u16::try_from(data.len()).expect("small").to_be_bytes());
    packet.extend_from_slice(data);
    packet
}

fn rcode_of(result: Result<Request<'_>, Malformed<'_>>) -> Option<Rcode> {
    match result {
        Ok(_) => None,
        Err(Malformed::Drop) => panic!("dropped"),
        Err(Malformed::Reply { rcode, .. }) => Some(rcode),
    }
}

#[test]
fn a_plain_query_is_read_with_its_question_as_sent() {
    let mut packet = query("api.llm.example.com.", RecordType::AAAA, None);
    // hickory writes names in lower case; a client may not.
    packet[13] = b'A';
    let request = parse(&packet).expect("valid");
    assert_eq!(request.id, 0x1234);
    assert_eq!(request.question.qtype, 28);
    assert_eq!(request.question.qclass, 1);
    assert_eq!(&request.question.wire[..4], b"\x03Api");
    assert_eq!(
        request.question.lower_name(&mut NameBuf::new()),
        b"\x03api\x03llm\x07example\x03com\x00"
    );
    assert!(request.edns.is_none());
}

#[test]
fn edns_payload_version_do_and_client_subnet_are_read() {
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns.set_dnssec_ok(true);
    let subnet = HickorySubnet::new("81.2.69.0".parse().expect("ip"), 24, 0);
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    let packet = query("api.llm.example.com.", RecordType::A, Some(edns));
    let request = parse(&packet).expect("valid");
    let edns = request.edns.expect("edns");
    assert_eq!(edns.payload, 4096);
    assert!(edns.dnssec_ok);
    assert_eq!(
        edns.client_subnet,
        Some(ClientSubnet {
            address: "81.2.69.0".parse().expect("ip"),
            source_prefix: 24
        })
    );
}

#[test]
fn malformed_client_subnets_are_formerr_with_the_opt_kept() {
    let cases: [(&str, &[u8]); 6] = [
        ("unknown family", &[0, 3, 24, 0, 81, 2, 69]),
        ("prefix longer than IPv4", &[0, 1, 33, 0, 81, 2, 69, 1, 0]),
        ("too few octets", &[0, 1, 24, 0, 81, 2]),
        ("too many octets", &[0, 1, 16, 0, 81, 2, 69]),
        ("bits beyond the prefix", &[0, 1, 20, 0, 81, 2, 69]),
        ("empty option", &[]),
    ];
    for (what, data) in cases {
        let packet = query_with_option(option::CLIENT_SUBNET, data);
        match parse(&packet) {
            Err(Malformed::Reply {
                rcode: Rcode::FormErr,
                question: Some(_),
                edns: Some(edns),
                ..
            }) => assert_eq!(edns.payload, 1232, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let valid = query_with_option(option::CLIENT_SUBNET, &[0, 1, 24, 0, 81, 2, 69]);
    assert!(parse(&valid).is_ok());
    let any = query_with_option(option::CLIENT_SUBNET, &[0, 2, 0, 0]);
    assert!(parse(&any).is_ok(), "source prefix 0 has no address octets");
}

#[test]
fn nsid_requests_are_noticed() {
    let packet = query_with_option(option::NSID, &[]);
    assert!(parse(&packet).expect("valid").edns.expect("edns").nsid);
}

#[test]
fn responses_and_runts_are_dropped() {
    let mut packet = query("a.example.", RecordType::A, None);
    assert!(matches!(parse(&packet[..11]), Err(Malformed::Drop)));
    packet[2] |= 0x80;
    assert!(matches!(parse(&packet), Err(Malformed::Drop)));
}

#[test]
fn structural_errors_are_formerr_and_other_opcodes_notimp() {
    let packet = query("a.example.", RecordType::A, None);
    let mut no_question = packet.clone();
    no_question[5] = 0;
    no_question.truncate(12);
    assert_eq!(rcode_of(parse(&no_question)), Some(Rcode::FormErr));
    let mut two_questions = packet.clone();
    two_questions[5] = 2;
    two_questions.extend_from_slice(&packet[12..]);
    assert_eq!(rcode_of(parse(&two_questions)), Some(Rcode::FormErr));
    assert_eq!(
        rcode_of(parse(&packet[..packet.len() - 1])),
        Some(Rcode::FormErr)
    );
    let mut trailing = packet.clone();
    trailing.push(0);
    assert_eq!(rcode_of(parse(&trailing)), Some(Rcode::FormErr));
    let mut pointer = packet[..12].to_vec();
    pointer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode_of(parse(&pointer)), Some(Rcode::FormErr));
    let mut long_label = packet[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode_of(parse(&long_label)), Some(Rcode::FormErr));
    let mut long_name = packet[..12].to_vec();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode_of(parse(&long_name)), Some(Rcode::FormErr));
    let mut notify = packet.clone();
    notify[2] |= 4 << 3;
    assert_eq!(rcode_of(parse(&notify)), Some(Rcode::NotImp));
}

#[test]
fn opt_twice_outside_additional_or_not_at_the_root_is_formerr() {
    let once = query_with_option(option::NSID, &[]);
    let opt = once[once.len() - 15..].to_vec();
    let mut twice = once.clone();
    twice[11] = 2;
    twice.extend_from_slice(&opt);
    assert_eq!(rcode_of(parse(&twice)), Some(Rcode::FormErr));
    let mut in_answer = once.clone();
    in_answer[7] = 1;
    in_answer[11] = 0;
    assert_eq!(rcode_of(parse(&in_answer)), Some(Rcode::FormErr));
    let mut owned = once[..once.len() - 15].to_vec();
    owned.extend_from_slice(&[1, b'x', 0]);
    owned.extend_from_slice(&opt[1..]);
    assert_eq!(rcode_of(parse(&owned)), Some(Rcode::FormErr));
    let mut version_1 = once.clone();
    let at = version_1.len() - 15 + 6;
    version_1[at] = 1;
    assert_eq!(rcode_of(parse(&version_1)), Some(Rcode::BadVers));
}

fn record(owner: &str, ttl: u32, rdata: RData) -> Record {
    Record::from_rdata(name(owner), ttl, rdata)
}

fn rrset(records: &[Record]) -> WireRRset {
    encode_rrset(records).expect("encodable")
}

/// Writes a response to `packet` with the given answer and authority sets.
fn respond(
    packet: &[u8],
    answer: &[WireRRset],
    authority: &[WireRRset],
    edns: Option<EdnsResponse<'_>>,
) -> Vec<u8> {
    let request = parse(packet).expect("valid");
    let mut buf = Vec::new();
    let room = edns.as_ref().map_or(0, opt_len);
    let mut writer = ResponseWriter::new(
        &mut buf,
        request.id,
        request.flags,
        Some(request.question.wire),
        65535,
        room,
    );
    for set in answer {
        writer.answer(set).expect("fits");
    }
    for set in authority {
        writer.authority(set).expect("fits");
    }
    writer.finish(Rcode::NoError, true, false, edns.as_ref());
    buf
}

#[test]
fn responses_decode_with_hickory_and_compress_against_the_question() {
    let mut packet = query("www.llm.example.com.", RecordType::A, None);
    packet[13..16].copy_from_slice(b"WWW");
    let cname = rrset(&[record(
        "www.llm.example.com.",
        300,
        RData::CNAME(CNAME(name("api.llm.example.com."))),
    )]);
    let a = rrset(&[
        record(
            "api.llm.example.com.",
            20,
            RData::A(A::new(203, 0, 113, 10)),
        ),
        record(
            "api.llm.example.com.",
            20,
            RData::A(A::new(203, 0, 113, 11)),
        ),
    ]);
    let soa = rrset(&[record(
        "llm.example.com.",
        30,
        RData::SOA(SOA::new(
            name("ns1.llm.example.com."),
            name("hostmaster.example.com."),
            7,
            3600,
            600,
            1209600,
            60,
        )),
    )]);
    let bytes = respond(&packet, &[cname, a], &[soa], None);
    let message = Message::from_vec(&bytes).expect("hickory decodes it");
    assert_eq!(message.metadata.id, 0x1234);
    assert!(message.metadata.authoritative && message.metadata.recursion_desired);
    assert_eq!(message.queries[0].name().to_ascii(), "WWW.llm.example.com.");
    assert_eq!(message.answers.len(), 3);
    assert_eq!(
        message.answers[0].data,
        RData::CNAME(CNAME(name("api.llm.example.com.")))
    );
    assert_eq!(message.answers[2].data, RData::A(A::new(203, 0, 113, 11)));
    assert_eq!(message.authorities[0].record_type(), RecordType::SOA);
    // The first answer's owner is a pointer to the question (offset 12), as Knot writes it.
    let question_end = 12 + 21 + 4;
    assert_eq!(&bytes[question_end..question_end + 2], &[0xC0, 12]);
    assert!(
        bytes.len() < 12 + 25 + 3 * 16 + 12 + 60,
        "names compressed: {} bytes",
        bytes.len()
    );
}

#[test]
fn srv_targets_are_not_compressed_but_mx_exchanges_are() {
    let packet = query("llm.example.com.", RecordType::MX, None);
    let mx = rrset(&[record(
        "llm.example.com.",
        60,
        RData::MX(MX::new(10, name("mail.llm.example.com."))),
    )]);
    let srv = rrset(&[record(
        "llm.example.com.",
        60,
        RData::SRV(SRV::new(1, 2, 443, name("api.llm.example.com."))),
    )]);
    let bytes = respond(&packet, &[mx, srv], &[], None);
    let message = Message::from_vec(&bytes).expect("decodes");
    assert_eq!(
        message.answers[0].data,
        RData::MX(MX::new(10, name("mail.llm.example.com.")))
    );
    assert_eq!(
        message.answers[1].data,
        RData::SRV(SRV::new(1, 2, 443, name("api.llm.example.com.")))
    );
    let srv_target = b"\x03api\x03llm\x07example\x03com\x00";
    assert!(
        bytes.windows(srv_target.len()).any(|w| w == srv_target),
        "SRV target written in full"
    );
}

#[test]
fn opt_carries_the_subnet_scope_do_nsid_and_extended_error() {
    let packet = query("api.llm.example.com.", RecordType::A, None);
    let subnet = ClientSubnet {
        address: "2001:db8::".parse::<IpAddr>().expect("ip"),
        source_prefix: 56,
    };
    let edns = EdnsResponse {
        payload: 1232,
        dnssec_ok: true,
        client_subnet: Some((subnet, 48)),
        nsid: Some(b"ns-7"),
        cookie: Some(([1, 2, 3, 4, 5, 6, 7, 8], [9; 16])),
        extended_error: Some(ExtendedError { code: 20, text: "" }),
    };
    let bytes = respond(&packet, &[], &[], Some(edns));
    assert_eq!(bytes.len(), 12 + 25 + opt_len(&edns));
    let message = Message::from_vec(&bytes).expect("decodes");
    let opt = message.edns.expect("opt");
    assert!(opt.flags().dnssec_ok);
    assert_eq!(opt.max_payload(), 1232);
    match opt.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => assert_eq!((s.source_prefix(), s.scope_prefix()), (56, 48)),
        other => panic!("no subnet: {other:?}"),
    }
    let raw = &bytes[bytes.len() - 42..];
    let cookie = [[0, 10, 0, 24, 1, 2, 3, 4, 5, 6, 7, 8].as_slice(), &[9; 16]].concat();
    let expected = [
        [0, 3, 0, 4, b'n', b's', b'-', b'7'].as_slice(),
        &cookie,
        &[0, 15, 0, 2, 0, 20],
    ]
    .concat();
    assert_eq!(raw, &expected[..]);
}

#[test]
fn a_record_set_that_does_not_fit_is_taken_back_whole() {
    let packet = query("big.example.", RecordType::NS, None);
    let request = parse(&packet).expect("valid");
    let records: Vec<Record> = (0..40)
        .map(|i| {
            record(
                "big.example.",
                60,
                RData::NS(NS(name(&format!("ns{i}.elsewhere.example.net.")))),
            )
        })
        .collect();
    let set = rrset(&records);
    let mut buf = Vec::new();
    let mut writer = ResponseWriter::new(
        &mut buf,
        request.id,
        request.flags,
        Some(request.question.wire),
        512,
        0,
    );
    assert_eq!(writer.answer(&set), Err(Full));
    writer.finish(Rcode::NoError, true, true, None);
    assert_eq!(buf.len(), 12 + 17);
    let message = Message::from_vec(&buf).expect("decodes");
    assert!(message.metadata.truncation);
    assert!(message.answers.is_empty());
}

#[test]
fn skip_name_stops_at_pointers_and_rejects_runaway_names() {
    assert_eq!(skip_name(b"\x01a\x00", 0), Some(3));
    assert_eq!(skip_name(b"\x01a\xC0\x00", 0), Some(4));
    assert_eq!(skip_name(b"\x01a", 0), None);
    assert_eq!(skip_name(b"\x41", 0), None);
}

#[test]
fn a_cookie_is_a_client_cookie_and_perhaps_a_server_cookie_else_formerr() {
    let client = [1, 2, 3, 4, 5, 6, 7, 8];
    let alone = query_with_option(option::COOKIE, &client);
    let cookie = parse(&alone).expect("valid").edns.and_then(|e| e.cookie);
    let cookie = cookie.expect("a cookie");
    assert_eq!((cookie.client(), cookie.server()), (client, &[][..]));
    let both = query_with_option(option::COOKIE, &[client.as_slice(), &[9; 16]].concat());
    let cookie = parse(&both).expect("valid").edns.and_then(|e| e.cookie);
    assert_eq!(cookie.expect("a cookie").server(), &[9; 16]);
    // RFC 7873 5.2.2: a client cookie of another length, or a server cookie under 8 or over 32
    // bytes, is FORMERR.
    for length in [0, 5, 9, 15, 41] {
        let packet = query_with_option(option::COOKIE, &vec![7; length]);
        assert_eq!(
            rcode_of(parse(&packet)),
            Some(Rcode::FormErr),
            "{length} bytes"
        );
    }
}
