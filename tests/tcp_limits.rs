//! A crowd of TCP clients is capped, in all and per client network: connections over a limit
//! are closed on arrival, everyone else (UDP, other networks, the admin API) is still served,
//! and a freed slot is taken again.

mod common;

use std::{
    io::{ErrorKind, Read},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::{Server, ZONE, http, query, tcp, udp};
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
