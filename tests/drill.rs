//! `regiondns drill` against a real server, as an operator rehearses a failover: London's
//! answer moves off a drained Dublin and comes back; a client the region does not serve makes
//! the drill fail, and the region is undrained either way. `--dry-run` changes nothing.

use crate::common::{Server, ZONE, http, run};
use serde_json::Value;

const TOKEN: &str = "drill-token";

fn drill(server: &Server, clients: &[&str], extra: &[&str]) -> (bool, String) {
    drill_via(server, server.addr, clients, extra)
}

/// [`drill`], asking DNS at `dns` (the server, or something in front of it).
fn drill_via(
    server: &Server,
    dns: std::net::SocketAddr,
    clients: &[&str],
    extra: &[&str],
) -> (bool, String) {
    let admin = format!("http://{}", server.admin.expect("admin"));
    let dns = dns.to_string();
    let token = server.dir.path().join("admin-token");
    let token = token.to_str().expect("path");
    let mut args = vec![
        "drill",
        "--admin",
        &admin,
        "--admin-token-file",
        token,
        "--dns",
        &dns,
        "--zone",
        "llm.example.com.",
        "--region",
        "eu-west",
        "--name",
        "api.llm.example.com",
    ];
    for client in clients {
        args.extend(["--client", client]);
    }
    args.extend(extra);
    let out = run(&args, server.dir.path());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn drained(server: &Server) -> bool {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/regions", &[]);
    let json: Value = serde_json::from_str(&body).expect("JSON");
    let regions = json["regions"].as_array().expect("regions");
    let dublin = regions
        .iter()
        .find(|r| r["region"] == "eu-west")
        .expect("eu-west");
    dublin["drained"].as_bool().expect("drained")
}

/// How many state changes are on the server's timeline.
fn events(server: &Server) -> usize {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/events", &[]);
    let json: Value = serde_json::from_str(&body).expect("JSON");
    json["events"].as_array().expect("events").len()
}

#[test]
fn a_drill_moves_london_off_dublin_and_back() {
    let server = Server::start_with_token(ZONE, TOKEN);
    let (passed, out) = drill(&server, &["81.2.69.0/24"], &["--limit", "10s"]);
    assert!(passed, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("81.2.69.0/24: "))
        .expect("London's line");
    assert!(line.starts_with("81.2.69.0/24: 203.0.113.20 -> "), "{line}");
    assert!(
        line.contains(" after ") && line.contains("; back after "),
        "{line}"
    );
    assert!(
        out.contains("passed: eu-west drained and undrained"),
        "{out}"
    );
    assert!(!drained(&server));
    assert_eq!(events(&server), 2, "drained, then undrained");
}

#[test]
fn a_client_that_never_moves_fails_the_drill_and_the_region_is_undrained() {
    let server = Server::start_with_token(ZONE, TOKEN);
    let (passed, out) = drill(
        &server,
        &["81.2.69.0/24", "133.242.0.0/24"],
        &["--limit", "1s"],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains("133.242.0.0/24: 203.0.113.30 203.0.113.31: DID NOT MOVE within 1s"),
        "{out}"
    );
    assert!(out.contains("FAILED: eu-west"), "{out}");
    assert!(!drained(&server), "undrained after a failed drill");

    let changes = events(&server);
    let (passed, out) = drill(&server, &["81.2.69.0/24"], &["--dry-run"]);
    assert!(passed, "{out}");
    assert!(
        out.contains("/regions/llm.example.com./eu-west/drain"),
        "{out}"
    );
    assert_eq!(events(&server), changes, "a dry run drains nothing");
}

/// A UDP relay in front of `server` that answers every query twice: first a forged response
/// with another ID and an address of its own (192.0.2.66), then the server's.
fn forging_relay(server: std::net::SocketAddr) -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind relay");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let upstream = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
        upstream
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .expect("timeout");
        let mut buffer = [0u8; 4096];
        while let Ok((n, client)) = socket.recv_from(&mut buffer) {
            let request = buffer[..n].to_vec();
            if let Ok(mut forged) = hickory_proto::op::Message::from_vec(&request) {
                forged.metadata.id = forged.metadata.id.wrapping_add(1);
                forged.metadata.message_type = hickory_proto::op::MessageType::Response;
                let name = forged.queries[0].name().clone();
                let rdata = hickory_proto::rr::RData::A("192.0.2.66".parse().expect("ip"));
                forged.add_answer(hickory_proto::rr::Record::from_rdata(name, 20, rdata));
                if let Ok(bytes) = forged.to_vec() {
                    let _ = socket.send_to(&bytes, client);
                }
            }
            let _ = upstream.send_to(&request, server);
            if let Ok(m) = upstream.recv(&mut buffer) {
                let _ = socket.send_to(&buffer[..m], client);
            }
        }
    });
    addr
}

#[test]
fn a_response_with_another_id_is_not_taken_for_the_answer() {
    let server = Server::start_with_token(ZONE, TOKEN);
    let relay = forging_relay(server.addr);
    let (passed, out) = drill_via(&server, relay, &["81.2.69.0/24"], &["--limit", "10s"]);
    assert!(passed, "{out}");
    assert!(!out.contains("192.0.2.66"), "{out}");
    assert!(out.contains("81.2.69.0/24: 203.0.113.20 -> "), "{out}");
}
