//! The server's lifecycle: `server::run` in-process on port 0 (stop token, drain period, TCP
//! requests in flight), and the real binary on signals and on a task that dies.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{BINARY, ZONE, query, serve_args, udp, zone_dir};
use hickory_proto::{op::Message, rr::RecordType};
use regiondns::{
    config,
    dns::Listeners,
    geo::GeoIp,
    metrics::Metrics,
    server::{self, Config},
};
use tokio_util::sync::CancellationToken;

/// `server::run` on its own runtime thread, with its sockets bound on port 0.
struct InProcess {
    dns: SocketAddr,
    admin: SocketAddr,
    stop: CancellationToken,
    done: std::sync::mpsc::Receiver<(Result<(), server::ServerError>, Instant)>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start(drain_period: Duration) -> InProcess {
        let dir = zone_dir(ZONE);
        let zones = config::load_dir(&dir.path().join("zones")).expect("valid zones");
        let metrics = Arc::new(Metrics::new());
        let geo = GeoIp::open(
            &[dir.path().join("geo.mmdb")],
            metrics.geoip_lookup_counters(),
        )
        .expect("geoip");
        let config = Config {
            zones_dir: dir.path().join("zones"),
            zones,
            geo,
            metrics,
            admin_token: None,
            max_udp_payload: 1232,
            nsid: None,
            drain_period,
            shutdown_timeout: Duration::from_secs(5),
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (dns, admin) = runtime.block_on(async {
            let dns = Listeners::bind(&[addr]).await.expect("bind dns");
            let admin = tokio::net::TcpListener::bind(addr)
                .await
                .expect("bind admin");
            (dns, admin)
        });
        let (dns_addr, admin_addr) = (dns.local_addrs()[0], admin.local_addr().expect("addr"));
        let listeners = server::Listeners {
            dns,
            admin: Some(admin),
        };
        let stop = CancellationToken::new();
        let (done_tx, done) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let result = runtime.block_on(server::run(config, listeners, stopping));
            let _ = done_tx.send((result, Instant::now()));
        });
        InProcess {
            dns: dns_addr,
            admin: admin_addr,
            stop,
            done,
            _dir: dir,
        }
    }
}

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
    let server = InProcess::start(Duration::ZERO);
    assert_eq!(healthz(server.admin), (200, "ok\n".into()));
    let mut stream = TcpStream::connect(server.dns).expect("connect");
    pipeline(&mut stream, 200);
    server.stop.cancel();
    let ids = responses(&mut stream);
    assert_eq!(
        ids,
        (0..200).collect::<Vec<_>>(),
        "every query answered, in order"
    );
    let (result, _) = server
        .done
        .recv_timeout(Duration::from_secs(6))
        .expect("run returns within the shutdown timeout");
    result.expect("a clean stop");
}

#[test]
fn during_the_drain_period_healthz_says_stopping_while_dns_still_answers() {
    let server = InProcess::start(Duration::from_millis(1500));
    server.stop.cancel();
    let stopped_at = Instant::now();
    let (status, body) = healthz(server.admin);
    assert_eq!((status, body.as_str()), (503, "stopping\n"));
    let answer = udp(
        server.dns,
        &query("api.llm.example.com.", RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(
        common::addresses(&answer),
        ["203.0.113.20"],
        "still answering"
    );
    let (result, ended) = server
        .done
        .recv_timeout(Duration::from_secs(8))
        .expect("run returns");
    result.expect("a clean stop");
    let took = ended - stopped_at;
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(1500 + 5000),
        "returned {took:?} after the stop: after the drain period, within the timeout"
    );
}

#[test]
fn sigterm_stops_the_binary_cleanly_and_a_second_signal_at_once() {
    let dir = zone_dir(ZONE);
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let mut server = common::Server::spawn(dir, &args, None);
    let term = |pid: u32| {
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    term(server.pid());
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
    let mut server = common::Server::spawn(dir, &args, None);
    term(server.pid());
    common::until_logged(&server, "DNS answers for the drain period", 1);
    let second = Instant::now();
    term(server.pid());
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
