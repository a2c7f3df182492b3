//! A crowd of TCP clients is capped, in all and per client network: connections over a limit
//! are closed on arrival, everyone else (UDP, other networks, the admin API) is still served,
//! and a freed slot is taken again. And a crowd that exhausts the process's file descriptors
//! cannot fake a failover: the probes it prevents count for nothing.

use std::{
    io::{ErrorKind, Read},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::common::{
    Server, ZONE,
    endpoint::{Endpoint, Mode},
    http, query, serve_args, tcp, udp, zone_dir,
};
use hickory_proto::rr::RecordType;
use socket2::{Domain, Socket, Type};

/// A TCP connection to `server` from `source` (any address of 127.0.0.0/8 is this host).
fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let source: SocketAddr = format!("{source}:0").parse().expect("address");
    socket
        .bind(&source.into())
        .expect("bind the source address");
    socket.connect(&server.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    stream
}

/// Whether the server closed the connection (rather than keeping it open, idle).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        other => panic!("unexpected read: {other:?}"),
    }
}

fn metric(server: &Server, line_start: &str) -> String {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    body.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tcp_connections_are_capped_in_all_and_per_network() {
    let server = Server::start_with(
        ZONE,
        &[
            "--tcp-connections",
            "5",
            "--tcp-connections-per-network",
            "3",
        ],
    );
    let addr = server.addr;

    let mut first: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", addr)).collect();
    let mut fourth = connect_from("127.0.0.1", addr);
    assert!(closed_by_server(&mut fourth), "a 4th from 127.0.0.0/24");
    assert!(
        !closed_by_server(&mut first[0]),
        "the first three stay open"
    );

    let mut other: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.1.1", addr)).collect();
    assert!(
        !closed_by_server(&mut other[1]),
        "another network has its own share"
    );
    let mut sixth = connect_from("127.0.2.1", addr);
    assert!(closed_by_server(&mut sixth), "over 5 in all");

    let q = query("api.llm.example.com.", RecordType::A, None);
    assert!(!udp(addr, &q).answers.is_empty(), "UDP is still answered");
    let (status, _) = http(server.admin.expect("admin"), "GET", "/healthz", &[]);
    assert_eq!(status, 200, "the admin API still answers");
    assert!(
        metric(
            &server,
            "regiondns_tcp_refused_total{limit=\"per_network\"}"
        )
        .ends_with(" 1")
    );
    assert!(
        metric(
            &server,
            "regiondns_tcp_refused_total{limit=\"connections\"}"
        )
        .ends_with(" 1")
    );

    drop(first.pop());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !tcp(addr, &q).answers.is_empty(),
        "a freed slot is taken again"
    );
}

/// A zone whose only region is probed every 100 ms at `endpoint` (down after 2 failures).
fn probed_zone(endpoint: &Endpoint) -> String {
    ZONE.replace(
        "  eu-west:",
        &format!(
            "  eu-west:\n    check: {{ http: \"{}\", interval: 100ms, timeout: 90ms, fall: 2 }}",
            endpoint.url()
        ),
    )
}

/// Runs the binary with `flags`, then lowers its open-files limit to 64 (hard and soft).
fn server_with_few_descriptors(zone: &str, flags: &[&str]) -> Server {
    let dir = zone_dir(zone);
    let mut args = vec!["--admin", "127.0.0.1:0", "--udp-workers", "1"];
    args.extend(flags);
    let args = serve_args(dir.path(), &args);
    let server = Server::spawn(dir, &args, None);
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=64:64"])
        .status()
        .expect("prlimit");
    assert!(status.success());
    server
}

/// 150 connections held open from 127.0.3.0/24 .. 127.0.8.0/24 (under the per-network cap).
fn crowd(addr: SocketAddr) -> Vec<TcpStream> {
    (0..150)
        .filter_map(|i| {
            let source = format!("127.0.{}.1", 3 + i / 25);
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
            let source: SocketAddr = format!("{source}:0").parse().ok()?;
            socket.bind(&source.into()).ok()?;
            socket.connect(&addr.into()).ok()?;
            Some(socket.into())
        })
        .collect()
}

fn eu_west_state(server: &Server) -> String {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/regions", &[]);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let regions = json["regions"].as_array().cloned().unwrap_or_default();
    let eu = regions.iter().find(|r| r["region"] == "eu-west");
    eu.map(|r| r["state"].to_string()).unwrap_or_default()
}

fn probes_not_made(server: &Server) -> u64 {
    let line = metric(server, "regiondns_probes_not_made_total{");
    line.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn out_of_descriptors_probes_count_for_nothing_and_the_region_stays_up() {
    let endpoint = Endpoint::start(Mode::Ok);
    // No useful cap: the crowd takes every descriptor.
    let server =
        server_with_few_descriptors(&probed_zone(&endpoint), &["--tcp-connections", "1000"]);
    let crowd = crowd(server.addr);
    std::thread::sleep(Duration::from_secs(2));
    // The admin API may itself be short of descriptors: look once the crowd is gone.
    drop(crowd);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        probes_not_made(&server) > 0,
        "the crowd did exhaust the descriptors"
    );
    assert_eq!(eu_west_state(&server), "\"up\"", "{}", server.log());
    assert!(
        !server.log().contains("eu-west down"),
        "never marked down: {}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("counted as neither success nor failure")
    );
}

#[test]
fn the_connection_cap_keeps_descriptors_for_the_probes() {
    let endpoint = Endpoint::start(Mode::Ok);
    let server = server_with_few_descriptors(&probed_zone(&endpoint), &["--tcp-connections", "20"]);
    let crowd = crowd(server.addr);
    let probed = endpoint.requests();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        endpoint.requests() >= probed + 10,
        "probes kept being made during the crowd"
    );
    let q = query("api.llm.example.com.", RecordType::A, None);
    assert!(!udp(server.addr, &q).answers.is_empty());
    assert_eq!(eu_west_state(&server), "\"up\"");
    assert_eq!(probes_not_made(&server), 0);
    drop(crowd);
}

/// Whether the server closes `stream` within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    closed_by_server(stream)
}

#[test]
fn the_admin_api_caps_connections_and_closes_idle_or_half_sent_ones() {
    let server = Server::start_with(ZONE, &["--admin-header-timeout", "300ms"]);
    let admin = server.admin.expect("admin");
    let mut idle: Vec<TcpStream> = (0..64).map(|_| connect_from("127.0.0.1", admin)).collect();
    let mut over = connect_from("127.0.0.1", admin);
    assert!(
        closed_within(&mut over, Duration::from_millis(200)),
        "a 65th connection is closed on arrival"
    );
    assert!(
        idle.iter_mut()
            .all(|s| closed_within(s, Duration::from_secs(2))),
        "idle connections are closed after the header timeout"
    );
    let mut half_sent = connect_from("127.0.0.1", admin);
    std::io::Write::write_all(&mut half_sent, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("send part of a request");
    assert!(
        closed_within(&mut half_sent, Duration::from_secs(2)),
        "a request whose headers never end is closed"
    );
    let (status, body) = http(admin, "GET", "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}
