//! Response rate limiting: a flood of queries from one network gets at most the configured
//! rate of answers, every second limited response goes out truncated (so that a real resolver
//! retries over TCP), and nobody else is affected: other networks, other names and classes,
//! TCP. `--rrl-rate 0` turns it off.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::common::{self, Server, ZONE, http, query, tcp, udp};
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

/// What a paced flood got back, and the bytes both ways.
#[derive(Debug, Default)]
struct Traffic {
    sent: usize,
    sent_bytes: usize,
    answered: usize,
    truncated: usize,
    received_bytes: usize,
}

/// Sends `count` queries from a socket of its own on `source` at `rate` per second, the `n`th
/// made by `make(n)`; counts what comes back until half a second after the last.
fn paced(
    server: SocketAddr,
    source: &str,
    count: usize,
    rate: usize,
    make: impl Fn(usize) -> Vec<u8>,
) -> Traffic {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    socket.set_recv_buffer_size(8 << 20).expect("buffer");
    let address: SocketAddr = format!("{source}:0").parse().expect("source");
    socket
        .bind(&address.into())
        .expect("bind the source address");
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let receiving = {
        let (socket, counts) = (socket.try_clone().expect("clone"), Arc::clone(&counts));
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                let response = Message::from_vec(&buffer[..n]).expect("a DNS response");
                let which = usize::from(response.metadata.truncation);
                counts[which].fetch_add(1, Ordering::Relaxed);
                counts[2].fetch_add(n, Ordering::Relaxed);
            }
        })
    };
    let start = std::time::Instant::now();
    let mut traffic = Traffic::default();
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let bytes = make(n);
        socket.send_to(&bytes, server).expect("send");
        traffic.sent += 1;
        traffic.sent_bytes += bytes.len();
    }
    receiving.join().expect("receiver");
    traffic.answered = counts[0].load(Ordering::Relaxed);
    traffic.truncated = counts[1].load(Ordering::Relaxed);
    traffic.received_bytes = counts[2].load(Ordering::Relaxed);
    println!(
        "{count} at {rate}/s: {traffic:?}, {:.2} bytes back per byte sent",
        traffic.received_bytes as f64 / traffic.sent_bytes as f64
    );
    traffic
}

/// A query for api.llm.example.com A with id `n`, for the client network `subnet` (none
/// without), with DO when `dnssec`.
fn asking(n: usize, subnet: Option<&str>, dnssec: bool) -> Vec<u8> {
    let mut message = query("api.llm.example.com.", RecordType::A, subnet);
    message.metadata.id = (n % 65_536) as u16;
    if let Some(edns) = message.edns.as_mut() {
        edns.set_dnssec_ok(dnssec);
    }
    message.to_vec().expect("encode")
}

/// The /24 of client `n`, a different one for each of 65,536.
fn client_network(n: usize) -> String {
    format!("10.{}.{}.0/24", (n >> 8) % 256, n % 256)
}

#[test]
fn a_big_resolver_asking_for_each_of_its_clients_is_answered_whole() {
    let server = Server::start(ZONE);
    // One resolver site, one source /24, 5,000 queries a second for one name, each for
    // another client /24: the default limit (1,000 a second) lets them all through.
    let traffic = paced(server.addr, "127.0.10.1", 10_000, 5_000, |n| {
        asking(n, Some(&client_network(n)), false)
    });
    assert!(
        traffic.answered * 1_000 >= traffic.sent * 999,
        "answered whole over UDP: {traffic:?}"
    );
    assert_eq!(traffic.truncated, 0, "{traffic:?}");
}

#[test]
fn a_forged_flood_for_one_client_network_is_limited_as_ever() {
    let server = Server::start(ZONE);
    for (source, subnet) in [("127.0.11.1", Some("192.0.2.0/24")), ("127.0.12.1", None)] {
        let traffic = paced(server.addr, source, 20_000, 20_000, |n| {
            asking(n, subnet, false)
        });
        assert!(traffic.answered <= 3_000, "{subnet:?}: {traffic:?}");
        assert!(
            traffic.truncated > 1_000,
            "{subnet:?}: slipped: {traffic:?}"
        );
    }
}

#[test]
fn a_forged_flood_with_another_client_network_each_time_amplifies_at_most_twice() {
    // Signed, so that DO brings signatures: answers much larger than the queries.
    let dir = common::zone_dir(&format!("{ZONE}dnssec: {{ key: k.pem }}\n"));
    let keygen = common::run(
        &[
            "dnssec",
            "keygen",
            "--zone",
            "llm.example.com.",
            "--out",
            "k.pem",
        ],
        &dir.path().join("zones"),
    );
    assert!(keygen.status.success(), "{keygen:?}");
    let server = Server::start_in(dir, &[]);
    // Each UDP worker keeps its own budget: a burst each.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let burst = workers * 64 * 1024;
    for (source, dnssec) in [("127.0.13.1", false), ("127.0.14.1", true)] {
        let traffic = paced(server.addr, source, 20_000, 20_000, |n| {
            asking(n, Some(&client_network(n)), dnssec)
        });
        assert!(
            traffic.received_bytes <= 2 * traffic.sent_bytes + burst,
            "DO {dnssec}: {traffic:?}"
        );
        if dnssec {
            assert!(traffic.truncated > 1_000, "limited: {traffic:?}");
        } else {
            assert_eq!(
                traffic.truncated, 0,
                "small answers are not held back: {traffic:?}"
            );
        }
    }
}

/// `asking`'s query with a COOKIE option: the client cookie, and `server` (none at first).
fn with_cookie(n: usize, subnet: Option<&str>, client: [u8; 8], server: &[u8]) -> Vec<u8> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let mut message = query("api.llm.example.com.", RecordType::A, subnet);
    message.metadata.id = (n % 65_536) as u16;
    let cookie = [client.as_slice(), server].concat();
    if let Some(edns) = message.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Unknown(u16::from(EdnsCode::Cookie), cookie));
    }
    message.to_vec().expect("encode")
}

/// The COOKIE option of a response: client cookie, then server cookie.
fn cookie_of(response: &Message) -> Vec<u8> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let option = response
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Cookie));
    match option {
        Some(EdnsOption::Unknown(_, bytes)) => bytes.clone(),
        other => panic!("no cookie: {other:?}"),
    }
}

#[test]
fn a_client_that_returns_our_server_cookie_is_not_rate_limited() {
    let server = Server::start(ZONE);
    // dig sends a client cookie, and checks the one that comes back with ours.
    let said = common::dig(server.addr, &["+cookie", "api.llm.example.com", "A"]);
    let line = said.lines().find(|l| l.starts_with("; COOKIE:"));
    let line = line.unwrap_or_else(|| panic!("no cookie: {said}"));
    assert!(line.ends_with("(good)"), "{line}");
    let returned = line.split_whitespace().nth(2).expect("the cookie's hex");
    assert_eq!(returned.len(), 2 * (8 + 16), "{line}");
    let again = common::dig(
        server.addr,
        &[&format!("+cookie={returned}"), "api.llm.example.com"],
    );
    assert!(again.contains("(good)"), "{again}");

    // One source, one client network, 20,000 a second: with the server cookie we made for it,
    // every query is answered; with a forged one, or none, it is limited as any flood.
    let client = [7; 8];
    let first = udp_raw(
        server.addr,
        "127.0.15.1",
        &with_cookie(0, Some("192.0.2.0/24"), client, &[]),
    );
    let ours = cookie_of(&first);
    assert_eq!(&ours[..8], &client, "our client cookie echoed");
    let server_cookie = ours[8..].to_vec();
    let traffic = paced(server.addr, "127.0.15.1", 20_000, 20_000, |n| {
        with_cookie(n, Some("192.0.2.0/24"), client, &server_cookie)
    });
    assert_eq!(traffic.answered, 20_000, "{traffic:?}");
    let mut forged = server_cookie.clone();
    forged[15] ^= 1;
    let traffic = paced(server.addr, "127.0.15.1", 20_000, 20_000, |n| {
        with_cookie(n, Some("192.0.2.0/24"), client, &forged)
    });
    assert!(traffic.answered <= 3_000, "{traffic:?}");
    // Another address cannot use it.
    let elsewhere = paced(server.addr, "127.0.16.1", 20_000, 20_000, |n| {
        with_cookie(n, Some("192.0.2.0/24"), client, &server_cookie)
    });
    assert!(elsewhere.answered <= 3_000, "{elsewhere:?}");
    let valid = r#"regiondns_cookies_total{reason="valid"}"#;
    assert!(metric(&server, valid) >= 20_000);
}

/// One query from a socket on `source`, and its response.
fn udp_raw(server: SocketAddr, source: &str, bytes: &[u8]) -> Message {
    let socket = bound(source);
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket.send_to(bytes, server).expect("send");
    let mut buffer = [0; 4096];
    let n = socket.recv(&mut buffer).expect("a response");
    Message::from_vec(&buffer[..n]).expect("a DNS response")
}

#[test]
fn bind_as_a_resolver_returns_our_server_cookie_and_it_is_valid() {
    let server = Server::start(ZONE);
    let dir = tempfile::tempdir().expect("named's directory");
    // named listens only on addresses an interface has: 127.0.0.1, on a port free now.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let conf = dir.path().join("named.conf");
    let path = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            r#"options {{
  directory "{path}";
  pid-file "{path}/named.pid";
  session-keyfile "{path}/session.key";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-query {{ any; }};
  dnssec-validation no;
}};
controls {{ }};
zone "." {{
  type forward;
  forward only;
  forwarders {{ {ip} port {server_port}; }};
}};
"#,
            ip = server.addr.ip(),
            server_port = server.addr.port()
        ),
    )
    .expect("named.conf");
    let named = std::process::Command::new("named")
        .args(["-g", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("named (from the bind9 package) runs");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _named = Stop(named);
    let resolver: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // Each name is asked upstream once: from the second on, BIND returns our server cookie.
    let start = std::time::Instant::now();
    while !common::dig(resolver, &["api.llm.example.com", "A"]).contains("203.0.113.") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "named did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every name goes to our server alone (the root is forwarded there): nothing leaves
    // loopback. Names in our zone only, so that no answer points elsewhere.
    for name in [
        "api.llm.example.com AAAA",
        "ns1.llm.example.com A",
        "ns2.llm.example.com A",
    ] {
        let args: Vec<&str> = name.split(' ').collect();
        let said = common::dig(resolver, &args);
        assert!(said.contains("status: NOERROR"), "{name}: {said}");
    }
    let valid = metric(&server, r#"regiondns_cookies_total{reason="valid"}"#);
    assert!(valid >= 1, "BIND's queries returned no valid server cookie");
    assert_eq!(
        metric(&server, r#"regiondns_cookies_total{reason="invalid"}"#),
        0
    );
}
