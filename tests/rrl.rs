//! Response rate limiting: a flood of queries from one network gets at most the configured
//! rate of answers, every second limited response goes out truncated (so that a real resolver
//! retries over TCP), and nobody else is affected: other networks, other names and classes,
//! TCP. `--rrl-rate 0` turns it off.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::common::{Server, ZONE, http, query, tcp, udp};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

/// What came back for a flood of `count` queries sent at once from `socket`.
#[derive(Debug, Default)]
struct Outcome {
    answered: usize,
    truncated: usize,
}

fn flood(socket: &UdpSocket, server: SocketAddr, count: u16) -> Outcome {
    let mut message = query("api.llm.example.com.", RecordType::A, Some("192.0.2.0/24"));
    for id in 0..count {
        message.metadata.id = id;
        let bytes = message.to_vec().expect("encode");
        socket.send_to(&bytes, server).expect("send");
    }
    let mut outcome = Outcome::default();
    let mut buffer = [0; 1500];
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    while let Ok(n) = socket.recv(&mut buffer) {
        let response = Message::from_vec(&buffer[..n]).expect("a DNS response");
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        if response.metadata.truncation {
            // A slip: no records, the question and the OPT record kept.
            assert!(response.answers.is_empty(), "{response:?}");
            assert_eq!(response.queries.len(), 1);
            assert!(response.edns.is_some(), "the OPT record stays");
            outcome.truncated += 1;
        } else {
            assert_eq!(response.answers.len(), 1, "{response:?}");
            outcome.answered += 1;
        }
    }
    outcome
}

fn bound(source: &str) -> UdpSocket {
    UdpSocket::bind(format!("{source}:0")).expect("bind the source address")
}

fn metric(server: &Server, line_start: &str) -> u64 {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    let line = body.lines().find(|l| l.starts_with(line_start));
    let value = line.and_then(|l| l.rsplit(' ').next()?.parse().ok());
    value.unwrap_or_else(|| panic!("no {line_start} in\n{body}"))
}

/// The sum of every series whose line starts so.
fn metric_sum(server: &Server, line_start: &str) -> u64 {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    let lines = body.lines().filter(|l| l.starts_with(line_start));
    lines
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_flooding_network_gets_its_rate_and_slips_while_others_are_served() {
    let flags = ["--rrl-rate", "20", "--rrl-slip", "2", "--udp-workers", "1"];
    let server = Server::start_with(ZONE, &flags);
    let flooder = bound("127.0.0.1");
    let outcome = flood(&flooder, server.addr, 200);
    // A second's burst of 20, plus what the time the flood took earned (a few ms).
    assert!((20..=22).contains(&outcome.answered), "{outcome:?}");
    let limited = 200 - outcome.answered;
    assert!(
        limited / 2 - outcome.truncated <= 1,
        "every second one slips: {outcome:?}"
    );
    let dropped = metric(
        &server,
        "regiondns_rate_limited_responses_total{action=\"dropped\"}",
    );
    let slipped = metric(
        &server,
        "regiondns_rate_limited_responses_total{action=\"slipped\"}",
    );
    assert_eq!(slipped as usize, outcome.truncated);
    assert_eq!((dropped + slipped) as usize, limited);
    // Only the answers that went out whole count as answers of a region.
    let answers = metric_sum(
        &server,
        "regiondns_queries_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\",region=\"",
    );
    assert_eq!(answers as usize, outcome.answered, "{outcome:?}");

    // Another /24 of this host, another name, another class and TCP are all still answered.
    let api = query("api.llm.example.com.", RecordType::A, Some("192.0.2.0/24"));
    let neighbour = bound("127.0.1.1");
    neighbour
        .send_to(&api.to_vec().expect("encode"), server.addr)
        .expect("send");
    let mut buffer = [0; 1500];
    let n = neighbour
        .recv(&mut buffer)
        .expect("the other network is answered");
    let response = Message::from_vec(&buffer[..n]).expect("response");
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 1);
    let static_name = udp(
        server.addr,
        &query("ns1.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(
        static_name.answers.len(),
        1,
        "another name has its own allowance"
    );
    let nxdomain = udp(
        server.addr,
        &query("nope.llm.example.com.", RecordType::A, None),
    );
    assert_eq!(nxdomain.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        tcp(server.addr, &api).answers.len(),
        1,
        "TCP is not limited"
    );
    // The flooding network never gets more than a second's burst at once.
    assert!(flood(&flooder, server.addr, 100).answered <= 22);
    assert!(
        server
            .log()
            .contains("response rate limit: answers to 127.0.0.0/24")
    );
}

#[test]
fn exempt_networks_and_a_rate_of_zero_are_not_limited() {
    let exempt = [
        "--rrl-rate",
        "20",
        "--rrl-exempt",
        "127.0.0.0/24",
        "--udp-workers",
        "1",
    ];
    let server = Server::start_with(ZONE, &exempt);
    let outcome = flood(&bound("127.0.0.1"), server.addr, 200);
    assert_eq!(outcome.answered, 200, "{outcome:?}");
    let outcome = flood(&bound("127.0.1.1"), server.addr, 200);
    assert!(
        outcome.answered <= 22,
        "only the exempt network: {outcome:?}"
    );
    drop(server);

    let server = Server::start_with(ZONE, &["--rrl-rate", "0", "--udp-workers", "1"]);
    let outcome = flood(&bound("127.0.0.1"), server.addr, 200);
    assert_eq!(outcome.answered, 200, "{outcome:?}");
}
