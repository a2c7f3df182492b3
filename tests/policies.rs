//! Routing policies end to end: the real server, real HTTP health endpoints on 127.0.0.1,
//! queries over UDP from many client subnets, `dig`, and `regiondns explain`.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::common::{
    self, Server, addresses, dig,
    endpoint::{Endpoint, Mode},
    path_arg, query, run, udp,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RecordType, rdata::opt::EdnsOption},
};

const API: &str = "api.llm.example.com.";
const US_EAST: &str = "203.0.113.10";
const EU_WEST: &str = "203.0.113.20";
const EU_NORTH: &str = "203.0.113.40";

/// Three regions with checks against the given endpoints, and the service settings given.
fn zone(us: &Endpoint, eu_west: &Endpoint, eu_north: &Endpoint, service: &str) -> String {
    let check = |e: &Endpoint| {
        format!(
            "{{ http: \"{}\", interval: 300ms, timeout: 250ms, fall: 2, rise: 2 }}",
            e.url()
        )
    };
    format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
explain: true
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [{US_EAST}], jurisdiction: us, weight: 200, check: {} }}
  eu-west: {{ location: {{ lat: 53.3, lon: -6.3 }}, addresses: [{EU_WEST}], jurisdiction: eu, weight: 100, check: {} }}
  eu-north: {{ location: {{ lat: 59.3, lon: 18.1 }}, addresses: [{EU_NORTH}], jurisdiction: eu, weight: 100, check: {} }}
services:
  api:
    ttl: 20
{service}"#,
        check(us),
        check(eu_west),
        check(eu_north)
    )
}

fn endpoints() -> (Endpoint, Endpoint, Endpoint) {
    (
        Endpoint::start(Mode::Ok),
        Endpoint::start(Mode::Ok),
        Endpoint::start(Mode::Ok),
    )
}

/// Waits until `region`'s state in the admin API is `state`.
fn wait_state(server: &Server, region: &str, state: &str) {
    let start = Instant::now();
    loop {
        let (_, body) = common::http(server.admin.expect("admin"), "GET", "/regions", &[]);
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let current = json["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["region"] == region))
            .map(|r| r["state"].clone());
        if current.as_ref().and_then(|s| s.as_str()) == Some(state) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{region} never {state}: {body}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The first address answered to each of `count` distinct /24s (10.x.y.0/24), twice each:
/// asserts both answers agree (stable per subnet).
fn answers_per_subnet(addr: SocketAddr, count: u32) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buffer = vec![0u8; 4096];
    let mut ask = |subnet: &str| {
        let message = query(API, RecordType::A, Some(subnet));
        socket
            .send_to(&message.to_vec().expect("encode"), addr)
            .expect("send");
        let (n, _) = socket.recv_from(&mut buffer).expect("reply");
        let reply = Message::from_vec(&buffer[..n]).expect("decode");
        addresses(&reply).first().cloned().unwrap_or_default()
    };
    (0..count)
        .map(|i| {
            let subnet = format!("{}/24", Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            let first = ask(&subnet);
            if i % 10 == 0 {
                assert_eq!(first, ask(&subnet), "{subnet} must keep its answer");
            }
            first
        })
        .collect()
}

fn share(answers: &[String], address: &str) -> f64 {
    answers.iter().filter(|a| *a == address).count() as f64 / answers.len() as f64
}

const SOVEREIGN: &str = "    regions: [us-east, eu-west, eu-north]
    rules:
      - match: { continent: [EU] }
        allow: { jurisdiction: [eu] }
        when_none: refuse
";

/// 10,000 queries from one client as fast as it can: far over any response rate limit.
const UNLIMITED: &[&str] = &["--rrl-rate", "0"];

#[test]
fn eu_clients_fail_closed_with_the_reason_while_us_clients_get_us() {
    let (us, west, north) = endpoints();
    let server = Server::start(&zone(&us, &west, &north, SOVEREIGN));
    assert_eq!(
        addresses(&udp(
            server.addr,
            &query(API, RecordType::A, Some("81.2.69.0/24"))
        )),
        [EU_WEST]
    );

    west.set(Mode::Fail);
    wait_state(&server, "eu-west", "down");
    assert_eq!(
        addresses(&udp(
            server.addr,
            &query(API, RecordType::A, Some("81.2.69.0/24"))
        )),
        [EU_NORTH]
    );
    north.set(Mode::Closed);
    wait_state(&server, "eu-north", "down");

    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    assert!(response.answers.is_empty(), "never a US address");
    let edns = response.edns.as_ref().expect("OPT");
    let ede = edns
        .options()
        .as_ref()
        .iter()
        .find_map(|(_, option)| match option {
            EdnsOption::Unknown(15, data) => Some(data.clone()),
            _ => None,
        });
    let ede = ede.expect("an Extended DNS Error option");
    assert_eq!(&ede[..2], &[0, 0], "INFO-CODE 0");
    assert_eq!(
        String::from_utf8_lossy(&ede[2..]),
        "no healthy region allowed for jurisdiction eu"
    );

    let us_client = udp(server.addr, &query(API, RecordType::A, Some("8.8.8.0/24")));
    assert_eq!(
        addresses(&us_client),
        [US_EAST],
        "US clients in the same moment"
    );

    let out = dig(
        server.addr,
        &["api.llm.example.com", "A", "+subnet=81.2.69.0/24"],
    );
    assert!(out.contains("status: REFUSED"), "{out}");
    assert!(
        out.contains("no healthy region allowed for jurisdiction eu"),
        "dig shows the EDE: {out}"
    );

    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(metrics.contains("regiondns_fail_closed_answers_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\"}"), "{metrics}");
}

#[test]
fn a_canary_takes_five_percent_of_ten_thousand_subnets_stably() {
    let (us, west, north) = endpoints();
    let service = "    regions: [eu-west, us-east, eu-north]\n    policy: priority\n    canary: { region: eu-north, share: 5% }\n";
    let server = Server::start_with(&zone(&us, &west, &north, service), UNLIMITED);
    let answers = answers_per_subnet(server.addr, 10_000);
    let canary = share(&answers, EU_NORTH);
    assert!((canary - 0.05).abs() <= 0.01, "canary share {canary}");
    assert!(
        (share(&answers, EU_WEST) + canary - 1.0).abs() < 1e-9,
        "the rest where they would go"
    );
}

#[test]
fn weighted_regions_share_subnets_by_weight() {
    let (us, west, north) = endpoints();
    let service = "    regions: [eu-west, us-east]\n    policy: weighted\n";
    let server = Server::start_with(&zone(&us, &west, &north, service), UNLIMITED);
    let answers = answers_per_subnet(server.addr, 10_000);
    let (light, heavy) = (share(&answers, EU_WEST), share(&answers, US_EAST));
    assert!((light - 1.0 / 3.0).abs() <= 0.02, "weight 100: {light}");
    assert!((heavy - 2.0 / 3.0).abs() <= 0.02, "weight 200: {heavy}");
}

#[test]
fn a_degraded_region_keeps_half_its_clients_with_shed_50() {
    let (us, west, north) = endpoints();
    let service =
        "    regions: [eu-west, us-east, eu-north]\n    policy: priority\n    shed: 50%\n";
    let server = Server::start_with(&zone(&us, &west, &north, service), UNLIMITED);
    west.set(Mode::TooMany);
    wait_state(&server, "eu-west", "degraded");
    let answers = answers_per_subnet(server.addr, 10_000);
    let kept = share(&answers, EU_WEST);
    assert!((kept - 0.5).abs() <= 0.03, "kept {kept}");
    assert!(
        (share(&answers, US_EAST) + kept - 1.0).abs() < 1e-9,
        "the rest to the next region"
    );
}

#[test]
fn answers_two_returns_the_two_best_regions() {
    let (us, west, north) = endpoints();
    let service = "    regions: [us-east, eu-west, eu-north]\n    answers: 2\n";
    let server = Server::start(&zone(&us, &west, &north, service));
    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(
        addresses(&response),
        [EU_WEST, EU_NORTH],
        "London: Dublin, then Stockholm"
    );
    west.set(Mode::Fail);
    wait_state(&server, "eu-west", "down");
    let response = udp(
        server.addr,
        &query(API, RecordType::A, Some("81.2.69.0/24")),
    );
    assert_eq!(addresses(&response), [EU_NORTH, US_EAST]);
}

#[test]
fn explain_names_the_rule_and_the_reason_from_the_cli_and_from_dig() {
    let (us, west, north) = endpoints();
    let zone_text = zone(&us, &west, &north, SOVEREIGN);
    let server = Server::start(&zone_text);
    west.set(Mode::Fail);
    north.set(Mode::Fail);
    wait_state(&server, "eu-west", "down");
    wait_state(&server, "eu-north", "down");

    let out = explain_cli(&server, "81.2.69.7", Health::FromAdmin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "client 81.2.69.7 (given with --client): country GB, continent EU, at 51.51,-0.09, GeoIP network /24",
        "rule 1 matched: continent EU; allow jurisdiction eu; when none: Refuse",
        "region eu-west: down, ",
        "not eligible: down",
        "region us-east: up, ",
        "not allowed by the rule",
        "answer: REFUSED, extended error: no healthy region allowed for jurisdiction eu, ECS scope /24",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }

    let out = explain_cli(&server, "8.8.8.8", Health::AllUp);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rule: none matched"), "{text}");
    assert!(
        text.contains("answer: NOERROR from us-east A 203.0.113.10, TTL 20"),
        "without --admin all up: {text}"
    );

    let out = dig(
        server.addr,
        &[
            "_explain.api.llm.example.com",
            "TXT",
            "+subnet=81.2.69.0/24",
            "+short",
        ],
    );
    assert!(
        out.contains(
            "client 81.2.69.0 (from the EDNS Client Subnet): country GB, continent EU, at \
             51.51,-0.09, GeoIP network /24"
        ),
        "{out}"
    );
    assert!(
        out.contains("rule 1 matched: continent EU; allow jurisdiction eu"),
        "{out}"
    );
    assert!(
        out.contains(
            "answer: REFUSED, extended error: no healthy region allowed for jurisdiction eu"
        ),
        "{out}"
    );
}

/// Where `regiondns explain` takes the regions' health from.
enum Health {
    /// The running server's admin API.
    FromAdmin,
    /// None: every region up.
    AllUp,
}

/// `regiondns explain` for `client` and api.llm.example.com, on `server`'s zones and GeoIP.
fn explain_cli(server: &Server, client: &str, health: Health) -> std::process::Output {
    let zones = path_arg(&server.dir.path().join("zones"));
    let geoip = path_arg(&server.dir.path().join("geo.mmdb"));
    let mut args = vec!["explain", "--zones", &zones, "--geoip", &geoip];
    let admin = format!("http://{}", server.admin.expect("admin"));
    if let Health::FromAdmin = health {
        args.extend(["--admin", &admin]);
    }
    args.extend(["--client", client, "api.llm.example.com"]);
    run(&args, server.dir.path())
}

/// The lines of `_explain` TXT answers as `dig +short` prints them: one a record, its
/// character-strings joined.
fn txt_lines(printed: &str) -> Vec<String> {
    let lines = printed.lines().map(|line| {
        let line = line.trim().trim_start_matches('"').trim_end_matches('"');
        line.replace("\" \"", "")
    });
    lines.collect()
}

#[test]
fn explain_over_dns_says_what_the_cli_says_for_the_same_client() {
    let (us, west, north) = endpoints();
    let server = Server::start(&zone(&us, &west, &north, SOVEREIGN));
    north.set(Mode::Fail);
    wait_state(&server, "eu-north", "down");
    for client in ["81.2.69.7", "133.242.1.1", "2a02:cf40::7"] {
        let out = explain_cli(&server, client, Health::FromAdmin);
        let cli: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().replace(" (given with --client)", ""))
            .filter(|l| !l.is_empty())
            .collect();
        let prefix = if client.contains(':') { 128 } else { 32 };
        let subnet = format!("+subnet={client}/{prefix}");
        let printed = dig(
            server.addr,
            &["_explain.api.llm.example.com", "TXT", &subnet, "+short"],
        );
        let dns: Vec<String> = txt_lines(&printed)
            .iter()
            .map(|l| l.replace(" (from the EDNS Client Subnet)", ""))
            .collect();
        assert!(
            cli[0].contains(" at ") && cli[0].contains("country"),
            "{cli:?}"
        );
        assert!(cli.iter().any(|l| l.contains(" km")), "distances: {cli:?}");
        for line in &cli {
            assert!(dns.contains(line), "{client}: {line:?} is not in\n{dns:#?}");
        }
    }
}

#[test]
fn explain_over_dns_is_off_unless_the_zone_turns_it_on() {
    let (us, west, north) = endpoints();
    let server = Server::start(&zone(&us, &west, &north, SOVEREIGN).replace("explain: true\n", ""));
    let response = udp(
        server.addr,
        &query("_explain.api.llm.example.com.", RecordType::TXT, None),
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
}
