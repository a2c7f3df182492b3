//! Malformed packets against the running server: every one gets FORMERR or silence (never a
//! reply to a response, never a crash), and a normal query is answered right after.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::common::{Server, ZONE, http, query, udp};
use hickory_proto::{op::ResponseCode, rr::RecordType};

const FORMERR: u8 = 1;

/// A query for api.llm.example.com A with an OPT record (payload 1232), as bytes.
fn valid() -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    packet.extend(name(&["api", "llm", "example", "com"]));
    packet.extend([0, 1, 0, 1]);
    packet.extend(OPT);
    packet
}

const OPT: [u8; 11] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0];

fn name(labels: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in labels {
        out.push(label.len() as u8);
        out.extend(label.as_bytes());
    }
    out.push(0);
    out
}

/// A packet with `question` (name, type, class) and `additional` records after the header.
fn packet(qdcount: u16, question: &[u8], ancount: u16, arcount: u16, rest: &[u8]) -> Vec<u8> {
    let mut packet = vec![0xAB, 0xCD, 0x01, 0x00];
    for count in [qdcount, ancount, 0, arcount] {
        packet.extend(count.to_be_bytes());
    }
    packet.extend(question);
    packet.extend(rest);
    packet
}

fn question(name: &[u8]) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend([0, 1, 0, 1]);
    out
}

/// The reply to `bytes`, if any within `wait`.
fn exchange(socket: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(bytes, server).expect("send");
    let mut buffer = [0; 4096];
    socket.recv(&mut buffer).ok().map(|n| buffer[..n].to_vec())
}

fn socket(wait: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(wait)).expect("timeout");
    socket
}

fn assert_formerr_or_silence(what: &str, sent: &[u8], reply: Option<Vec<u8>>) {
    let Some(reply) = reply else { return };
    assert!(reply.len() >= 12, "{what}: a reply shorter than a header");
    assert_eq!(reply[..2], sent[..2], "{what}: the reply keeps the ID");
    assert!(reply[2] & 0x80 != 0, "{what}: QR set");
    assert_eq!(reply[3] & 0x0F, FORMERR, "{what}: FORMERR, got {reply:?}");
}

fn assert_still_answering(server: &Server) {
    let response = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(!response.answers.is_empty());
}

#[test]
fn malformed_packets_get_formerr_or_silence_and_the_server_keeps_answering() {
    let server = Server::start(ZONE);
    let socket = socket(Duration::from_millis(300));
    let base = valid();
    assert!(exchange(&socket, server.addr, &base).is_some_and(|r| r[3] & 0x0F == 0));

    let long_label = "a".repeat(64);
    let label_63 = "b".repeat(63);
    let too_long: Vec<&str> = vec![&label_63; 5];
    let mut opt_twice = base.clone();
    opt_twice[11] = 2;
    opt_twice.extend(OPT);
    let bad_ecs_option = [0, 8, 0, 7, 0, 3, 24, 0, 192, 0, 2];
    let mut bad_ecs = base[..base.len() - 2].to_vec();
    bad_ecs.extend((bad_ecs_option.len() as u16).to_be_bytes());
    bad_ecs.extend(bad_ecs_option);
    let valid_question = question(&name(&["api", "llm", "example", "com"]));
    let mut forward = vec![0xC0, 0xFF];
    forward.extend(&OPT[1..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "label of 64 octets",
            packet(1, &question(&name(&[&long_label, "com"])), 0, 0, &[]),
        ),
        (
            "name over 255 octets",
            packet(1, &question(&name(&too_long)), 0, 0, &[]),
        ),
        (
            "question name pointing at itself",
            packet(1, &[0xC0, 0x0C, 0, 1, 0, 1], 0, 0, &[]),
        ),
        (
            "forward pointer in an additional record",
            packet(1, &valid_question, 0, 1, &forward),
        ),
        ("QDCOUNT 0", packet(0, &[], 0, 0, &[])),
        (
            "QDCOUNT 2",
            packet(
                2,
                &[valid_question.clone(), valid_question.clone()].concat(),
                0,
                0,
                &[],
            ),
        ),
        ("OPT twice", opt_twice),
        (
            "OPT in the answer section",
            packet(1, &valid_question, 1, 0, &OPT),
        ),
        ("Client Subnet of an unknown family", bad_ecs),
        (
            "a count beyond the records",
            packet(1, &valid_question, 0, 3, &OPT),
        ),
        ("trailing garbage", [base.clone(), vec![0xFF; 7]].concat()),
    ];
    for (what, bytes) in &cases {
        let reply = exchange(&socket, server.addr, bytes);
        assert!(reply.is_some(), "{what}: a readable header gets FORMERR");
        assert_formerr_or_silence(what, bytes, reply);
    }
    for cut in 0..base.len() {
        let what = format!("truncated to {cut} octets");
        let reply = exchange(&socket, server.addr, &base[..cut]);
        assert_formerr_or_silence(&what, &base[..cut], reply);
    }
    let mut response = base.clone();
    response[2] |= 0x80;
    assert_eq!(
        exchange(&socket, server.addr, &response),
        None,
        "a response (QR=1) is never answered"
    );
    assert_still_answering(&server);
    // Runts (truncated under 12 octets) and the response: dropped, and counted.
    assert_eq!(counter(&server, "regiondns_dropped_requests_total"), 13);
    let formerr = "regiondns_queries_total{zone=\"\",service=\"\",region=\"\",rcode=\"FORMERR\"}";
    assert!(counter(&server, formerr) >= cases.len() as u64);
}

fn counter(server: &Server, name: &str) -> u64 {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A small deterministic generator (PCG-style LCG): the same packets on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

#[test]
fn ten_thousand_random_packets_get_well_formed_replies_or_none() {
    let server = Server::start(ZONE);
    let socket = socket(Duration::from_millis(50));
    let base = valid();
    let mut random = Lcg(7);
    let mut replies = Vec::new();
    for batch in 0..100 {
        for i in 0..100 {
            let mut bytes = if (batch + i) % 2 == 0 {
                // A valid query with a few octets changed.
                let mut bytes = base.clone();
                for _ in 0..1 + random.next() % 4 {
                    let at = random.next() as usize % bytes.len();
                    bytes[at] = random.next() as u8;
                }
                bytes
            } else {
                let len = random.next() as usize % 300;
                (0..len).map(|_| random.next() as u8).collect()
            };
            // Responses are dropped: most random packets would otherwise be silent.
            if bytes.len() > 2 && random.next().is_multiple_of(2) {
                bytes[2] &= 0x7F;
            }
            socket.send_to(&bytes, server.addr).expect("send");
        }
        let mut buffer = [0; 4096];
        while let Ok(n) = socket.recv(&mut buffer) {
            replies.push(buffer[..n].to_vec());
        }
    }
    assert!(replies.len() > 1000, "{} replies", replies.len());
    for reply in &replies {
        assert!(reply.len() >= 12 && reply[2] & 0x80 != 0, "{reply:?}");
    }
    assert_still_answering(&server);
}
