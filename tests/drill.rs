//! `regiondns drill` against a real server, as an operator rehearses a failover: London's
//! answer moves off a drained Dublin and comes back; a client the region does not serve makes
//! the drill fail, and the region is undrained either way. `--dry-run` changes nothing.

use crate::common::{Server, ZONE, http, run};
use serde_json::Value;

const TOKEN: &str = "drill-token";

fn drill(server: &Server, clients: &[&str], extra: &[&str]) -> (bool, String) {
    let admin = format!("http://{}", server.admin.expect("admin"));
    let dns = server.addr.to_string();
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
