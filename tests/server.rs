//! The server's lifecycle: in-process (the stop token, the drain period, TCP requests in
//! flight at the stop), and the real binary on signals and on a task that dies.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{self, BINARY, Server, ZONE, query, serve_args, udp, zone_dir};
use hickory_proto::{op::Message, rr::RecordType};

fn healthz(admin: SocketAddr) -> (u16, String) {
    common::http(admin, "GET", "/healthz", &[])
}

/// Writes `count` queries on one TCP connection without waiting for answers.
fn pipeline(stream: &mut TcpStream, count: u16) {
    let mut bytes = Vec::new();
    for id in 0..count {
        let mut message = query("api.llm.example.com.", RecordType::A, Some("81.2.69.0/24"));
        message.metadata.id = id;
        let wire = message.to_vec().expect("encode");
        bytes.extend_from_slice(&(wire.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&wire);
    }
    stream.write_all(&bytes).expect("write queries");
}

/// Every response on the connection until the server closes it, by ID.
fn responses(stream: &mut TcpStream) -> Vec<u16> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut ids = Vec::new();
    loop {
        let mut length = [0; 2];
        if stream.read_exact(&mut length).is_err() {
            return ids;
        }
        let mut message = vec![0; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut message).expect("a whole response");
        let message = Message::from_vec(&message).expect("decodable");
        assert_eq!(common::addresses(&message), ["203.0.113.20"]);
        ids.push(message.metadata.id);
    }
}

#[test]
fn at_the_stop_every_tcp_query_already_sent_is_answered_then_the_server_returns() {
    let server = Server::start(ZONE);
    assert_eq!(healthz(server.admin.expect("admin")), (200, "ok\n".into()));
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    pipeline(&mut stream, 2000);
    server.begin_stop();
    let ids = responses(&mut stream);
    assert_eq!(
        ids.len(),
        2000,
        "every query sent before the stop is answered"
    );
    assert!(ids.iter().copied().eq(0..2000), "in order");
    let stopping = Instant::now();
    let (ended, log) = server.stop();
    ended.expect("a clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "within the shutdown timeout"
    );
    assert!(log.contains("stopping: /healthz answers 503"), "{log}");
}

#[test]
fn during_the_drain_period_healthz_says_stopping_while_dns_still_answers() {
    let server = Server::start_with(ZONE, &["--drain-period", "1500ms"]);
    server.begin_stop();
    let stopped_at = Instant::now();
    let (status, body) = healthz(server.admin.expect("admin"));
    assert_eq!((status, body.as_str()), (503, "stopping\n"));
    let answer = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(
        common::addresses(&answer),
        ["203.0.113.20"],
        "still answering"
    );
    let (ended, _) = server.stop();
    ended.expect("a clean stop");
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(1500 + 5000),
        "returned {took:?} after the stop: after the drain period, within the timeout"
    );
}

#[test]
fn sigterm_stops_the_binary_cleanly_and_a_second_signal_at_once() {
    let dir = zone_dir(ZONE);
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let mut server = Server::spawn(dir, &args, None);
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(6))
        .expect("exits within the grace period");
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    assert!(
        server.log().contains("SIGTERM: shutting down"),
        "{}",
        server.log()
    );

    let dir = zone_dir(ZONE);
    let args = serve_args(dir.path(), &["--admin", "off", "--drain-period", "30s"]);
    let mut server = Server::spawn(dir, &args, None);
    server.signal("TERM");
    common::until_logged(&server, "DNS answers for the drain period", 1);
    let second = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal ends it");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "at once: {:?}",
        second.elapsed()
    );
    assert!(!status.success(), "not a clean stop: {status:?}");
    assert!(
        server.log().contains("SIGTERM again: exiting now"),
        "{}",
        server.log()
    );
}

/// Runs the binary with a panic injected into `task` (feature `test-hooks`) until it exits.
fn run_with_panic_in(task: &str, zone: &str) -> (std::process::ExitStatus, String) {
    let dir = zone_dir(zone);
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let output = Command::new(BINARY)
        .args(&args)
        .current_dir(dir.path())
        .env("REGIONDNS_TEST_PANIC", task)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
        .wait_with_output()
        .expect("runs to its end");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stderr)
}

#[test]
fn a_publisher_that_panics_takes_the_process_down_non_zero_saying_why() {
    let (status, stderr) = run_with_panic_in("publisher", ZONE);
    assert!(!status.success(), "exit status: {status:?}");
    assert!(
        stderr.contains("the publisher task stopped: panicked: injected by REGIONDNS_TEST_PANIC"),
        "{stderr}"
    );
}

#[test]
fn a_prober_that_panics_takes_the_process_down_non_zero_saying_which() {
    let zone = ZONE.replace(
        "    addresses: [203.0.113.20, \"2001:db8:20::1\"]",
        "    addresses: [203.0.113.20]\n    check: { tcp: \"127.0.0.1:9\" }",
    );
    assert!(zone.contains("check:"), "the zone has a check");
    let (status, stderr) = run_with_panic_in("prober", &zone);
    assert!(!status.success(), "exit status: {status:?}");
    assert!(
        stderr.contains(
            "the zone reload task stopped: the prober of llm.example.com. eu-west stopped: \
             panicked: injected by REGIONDNS_TEST_PANIC"
        ),
        "{stderr}"
    );
}

/// Sends queries to `server` from `senders` threads without pause until `stop` is set (or 30 s
/// have passed: the loop is bounded).
fn flood_until(
    server: SocketAddr,
    senders: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    let bytes = query("api.llm.example.com.", RecordType::A, Some("192.0.2.0/24"))
        .to_vec()
        .expect("encode");
    (0..senders)
        .map(|_| {
            let (stop, bytes) = (std::sync::Arc::clone(stop), bytes.clone());
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                let started = Instant::now();
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(30)
                {
                    if socket.send_to(&bytes, server).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect()
}

#[test]
fn a_sender_that_never_stops_does_not_hold_the_stop_past_its_deadline() {
    let dir = zone_dir(ZONE);
    let flags = [
        "--admin",
        "off",
        "--udp-workers",
        "1",
        "--drain-period",
        "0s",
    ];
    let args = serve_args(
        dir.path(),
        &[&flags[..], &["--shutdown-timeout", "3s"]].concat(),
    );
    let mut server = Server::spawn(dir, &args, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders = flood_until(server.addr, 3, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = senders.into_iter().map(|s| s.join().unwrap_or(0)).sum();
    let status = status.expect("the server exits while the flood goes on");
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(
        took < Duration::from_secs(3),
        "stopped {took:?} after the signal"
    );
    assert!(sent > 1000, "the flood was sent: {sent}");
}
