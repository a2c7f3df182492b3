//! Health-driven answers: the real server probing real HTTP endpoints on 127.0.0.1 that the
//! tests switch between behaviours, queried over UDP like a resolver would.

use std::time::{Duration, Instant};

use crate::common::{
    self, Server, addresses,
    endpoint::{Endpoint, Mode},
    http, query, udp,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};

const API: &str = "api.llm.example.com.";
const UK: &str = "81.2.69.0/24";
const EU_WEST: &str = "203.0.113.20";
const US_EAST: &str = "203.0.113.10";
const INTERVAL: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;

/// us-east and eu-west probed at `us` and `eu` (check YAML).
fn zone(us: &str, eu: &str, service_extra: &str) -> String {
    let regions = format!(
        "  eu-west:\n    location: {{ lat: 53.3, lon: -6.3 }}\n    addresses: [{EU_WEST}]\n    check: {eu}\n"
    );
    zone_with(
        us,
        &regions,
        &format!("ttl: 5\n    regions: [us-east, eu-west]\n    {service_extra}"),
    )
}

/// A zone with us-east (probed with the `us` check), the `regions` given (YAML), and the
/// service `api` with `service` settings (YAML, indented to its keys).
fn zone_with(us: &str, regions: &str, service: &str) -> String {
    format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com, negative_ttl: 30 }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east:
    location: {{ lat: 37.4, lon: -79.1 }}
    addresses: [{US_EAST}]
    check: {us}
{regions}services:
  api:
    {service}
"#
    )
}

/// A fast HTTP check of `endpoint`.
fn check(endpoint: &Endpoint) -> String {
    format!(
        "{{ http: \"{}\", interval: {}ms, timeout: 400ms, fall: {FALL}, rise: {RISE}, slow: 150ms }}",
        endpoint.url(),
        INTERVAL.as_millis()
    )
}

fn answer(server: &Server, subnet: &str) -> Vec<String> {
    addresses(&udp(server.addr, &query(API, RecordType::A, Some(subnet))))
}

/// Queries every 20 ms until the UK client is answered with `address`; returns how long it took.
fn until_answered(server: &Server, address: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if answer(server, UK) == [address] {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits for the probes to have run a while (both regions probed at least `probes` times).
fn settle(endpoints: &[&Endpoint], probes: usize) {
    let start = Instant::now();
    while endpoints.iter().any(|e| e.requests() < probes)
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn regions_json(server: &Server) -> serde_json::Value {
    let (status, body) = http(server.admin.expect("admin API"), "GET", "/regions", &[]);
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

fn region(server: &Server, name: &str) -> serde_json::Value {
    let json = regions_json(server);
    let regions = json["regions"].as_array().expect("regions array").clone();
    regions
        .into_iter()
        .find(|r| r["region"] == name)
        .expect("region in /regions")
}

#[test]
fn a_failing_region_stops_being_answered_within_seconds_and_comes_back() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let server = Server::start(&zone(&check(&us), &check(&eu), ""));
    settle(&[&eu], 2);
    assert_eq!(answer(&server, UK), [EU_WEST]);

    // How long it takes is measured on the paused clock (tests/health_timing.rs); here the
    // real server and a real endpoint only need to get there.
    eu.set(Mode::Fail);
    until_answered(&server, US_EAST, Duration::from_secs(10)).expect("failover");
    assert_eq!(region(&server, "eu-west")["state"], "down");
    assert!(
        server
            .log()
            .contains("eu-west down: 2 consecutive failures, last: HTTP 503"),
        "{}",
        server.log()
    );

    eu.set(Mode::Ok);
    until_answered(&server, EU_WEST, Duration::from_secs(10)).expect("recovery");
    assert!(
        server
            .log()
            .contains("eu-west up: 2 consecutive successful probes")
    );
}

#[test]
fn one_failed_probe_or_flapping_does_not_move_traffic() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Flap));
    let flap_check = check(&eu).replace("fall: 2", "fall: 3");
    let server = Server::start(&zone(&check(&us), &flap_check, ""));
    let start = Instant::now();
    while start.elapsed() < INTERVAL * 8 {
        assert_eq!(
            answer(&server, UK),
            [EU_WEST],
            "flapping must not move answers"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(eu.requests() >= 6, "probed all along: {}", eu.requests());
    let eu_west = region(&server, "eu-west");
    assert_eq!(eu_west["state"], "up");
    let reason = eu_west["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("up since the first probe ("),
        "probed, so no longer 'not probed yet': {reason}"
    );
}

#[test]
fn slow_or_overloaded_regions_are_degraded_and_shed_their_clients_until_they_recover() {
    for overload in [Mode::TooMany, Mode::RetryAfter, Mode::Slow] {
        let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
        let server = Server::start(&zone(&check(&us), &check(&eu), ""));
        settle(&[&eu], 1);
        eu.set(overload);
        until_answered(&server, US_EAST, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{overload:?}: clients go to the next nearest up region"));
        assert_eq!(
            region(&server, "eu-west")["state"],
            "degraded",
            "{overload:?}"
        );
        eu.set(Mode::Ok);
        until_answered(&server, EU_WEST, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{overload:?}: clients come back"));
    }
}

#[test]
fn a_degraded_region_still_answers_when_no_region_is_up() {
    let (us, eu) = (Endpoint::start(Mode::Fail), Endpoint::start(Mode::TooMany));
    let server = Server::start(&zone(&check(&us), &check(&eu), ""));
    settle(&[&us, &eu], 3);
    std::thread::sleep(INTERVAL);
    // The answer alone would also come from an EU region that is simply up: check the states.
    assert_eq!(
        region(&server, "us-east")["state"],
        "down",
        "{}",
        regions_json(&server)
    );
    assert_eq!(
        region(&server, "eu-west")["state"],
        "degraded",
        "{}",
        regions_json(&server)
    );
    assert_eq!(
        answer(&server, "8.8.8.0/24"),
        [EU_WEST],
        "US client to the degraded region"
    );
}

#[test]
fn every_region_down_fails_open_to_the_nearest_or_servfails_when_configured() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let server = Server::start(&zone(&check(&us), &check(&eu), ""));
    us.set(Mode::Fail);
    eu.set(Mode::Fail);
    settle(&[&us, &eu], 3);
    let start = Instant::now();
    while region(&server, "us-east")["state"] != "down"
        || region(&server, "eu-west")["state"] != "down"
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{}",
            regions_json(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        answer(&server, UK),
        [EU_WEST],
        "fail open: nearest as if all were up"
    );
    assert_eq!(answer(&server, "8.8.8.0/24"), [US_EAST]);
    assert!(
        server
            .log()
            .contains("every region is down: answering as if all were up")
    );
    let (_, metrics) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(
        metrics.contains("regiondns_fail_open_answers_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\"} 2"),
        "{metrics}"
    );

    let (us, eu) = (Endpoint::start(Mode::Fail), Endpoint::start(Mode::Fail));
    let strict = Server::start(&zone(&check(&us), &check(&eu), "when_all_down: servfail"));
    settle(&[&us, &eu], 3);
    std::thread::sleep(INTERVAL);
    let response = udp(strict.addr, &query(API, RecordType::A, Some(UK)));
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn drain_with_the_token_moves_traffic_at_once_and_nothing_moves_without_it() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let zone = zone(&check(&us), &check(&eu), "");
    let server = Server::start_with_token(&zone, "s3cret");
    let admin = server.admin.expect("admin");
    let path = "/regions/llm.example.com/eu-west/drain";

    let (status, _) = http(admin, "POST", path, &[]);
    assert_eq!(status, 401, "no token");
    let (status, _) = http(admin, "POST", path, &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401, "wrong token");
    assert_eq!(answer(&server, UK), [EU_WEST], "nothing moved");

    let (status, body) = http(admin, "POST", path, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"drained\""), "{body}");
    assert_eq!(answer(&server, UK), [US_EAST], "the very next query");
    assert_eq!(region(&server, "eu-west")["state"], "drained");

    let undrain = "/regions/llm.example.com./eu-west/undrain";
    // The scheme is case-insensitive (RFC 9110 11.1).
    let (status, _) = http(
        admin,
        "POST",
        undrain,
        &[("Authorization", "bearer s3cret")],
    );
    assert_eq!(status, 200);
    assert_eq!(answer(&server, UK), [EU_WEST]);

    let (status, _) = http(
        admin,
        "POST",
        "/regions/llm.example.com/nowhere/drain",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(status, 404);

    let without_token = Server::start(&zone);
    let (status, _) = http(
        without_token.admin.expect("admin"),
        "POST",
        path,
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(
        status, 403,
        "mutating endpoints disabled without a configured token"
    );
    assert_eq!(answer(&without_token, UK), [EU_WEST]);
}

#[test]
fn every_prober_fault_marks_the_region_down_with_its_reason_and_dns_keeps_answering() {
    let tls = Endpoint::start(Mode::Ok);
    let faults = [
        ("hang", Endpoint::start(Mode::Hang), "timeout"),
        (
            "closed",
            Endpoint::start(Mode::Closed),
            "Connection refused",
        ),
        ("reset", Endpoint::start(Mode::Reset), "reading the body"),
        ("garbage", Endpoint::start(Mode::Garbage), "invalid HTTP"),
        ("huge", Endpoint::start(Mode::Huge), "body over 64 KiB"),
        (
            "wrong-body",
            Endpoint::start(Mode::WrongBody),
            "body does not contain \\\"ok\\\"",
        ),
    ];
    // Each fault must show as itself, not as a timeout on a busy machine: a roomy timeout.
    let roomy = |endpoint: &Endpoint| {
        check(endpoint).replace(
            &format!("interval: {}ms, timeout: 400ms", INTERVAL.as_millis()),
            "interval: 1500ms, timeout: 1400ms",
        )
    };
    let mut regions = String::new();
    for (name, endpoint, _) in &faults {
        let check = roomy(endpoint).replace(" }", ", body_contains: ok }");
        assert!(check.contains("timeout: 1400ms"), "{check}");
        regions.push_str(&format!(
            "  {name}:\n    location: {{ lat: 53.3, lon: -6.3 }}\n    addresses: [192.0.2.1]\n    check: {check}\n"
        ));
    }
    let tls_check = roomy(&tls).replace("http://", "https://");
    regions.push_str(&format!(
        "  tls:\n    location: {{ lat: 53.3, lon: -6.3 }}\n    addresses: [192.0.2.2]\n    check: {tls_check}\n"
    ));
    let always_up = Endpoint::start(Mode::Ok);
    let zone = zone_with(
        &check(&always_up),
        &regions,
        "regions: [hang, closed, reset, garbage, huge, wrong-body, tls, us-east]",
    );
    let server = Server::start(&zone);
    let expected: Vec<(&str, &str)> = faults
        .iter()
        .map(|(name, _, reason)| (*name, *reason))
        .chain([("tls", "received corrupt message")])
        .collect();
    let start = Instant::now();
    loop {
        let json = regions_json(&server).to_string();
        let all_down = expected
            .iter()
            .all(|(name, _)| region(&server, name)["state"] == "down");
        if all_down {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not all down: {json}"
        );
        assert!(!answer(&server, UK).is_empty(), "answering throughout");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, reason) in &expected {
        let status = region(&server, name);
        let text = status.to_string();
        assert!(
            text.contains(reason),
            "{name}: expected {reason:?} in {text}"
        );
    }
    assert_eq!(answer(&server, UK), [US_EAST], "every faulty region is out");
    // A panic anywhere takes the supervised server down; a clean stop shows there was none.
    let (status, log) = server.stop();
    assert!(status.is_ok(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn post_checks_send_their_body_and_headers_from_the_environment() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let eu_check = check(&eu).replace(
        " }",
        r#", method: POST, body: '{"max_tokens":1}', headers: { api-key: "${TEST_API_KEY}" } }"#,
    );
    let dir = common::zone_dir(&zone(&check(&us), &eu_check, ""));
    let args = common::serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn_with_env(dir, &args, None, &[("TEST_API_KEY", "key-123")]);
    settle(&[&eu], 1);
    let request = eu.last_request();
    assert!(request.starts_with("POST /healthz HTTP/1.1"), "{request}");
    assert!(
        request.to_ascii_lowercase().contains("api-key: key-123"),
        "{request}"
    );
    assert!(request.ends_with(r#"{"max_tokens":1}"#), "{request}");
    assert_eq!(answer(&server, UK), [EU_WEST]);
}

#[test]
fn metrics_show_state_changes_probes_and_answers() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let server = Server::start(&zone(&check(&us), &check(&eu), ""));
    let admin = server.admin.expect("admin");
    assert_eq!(answer(&server, UK), [EU_WEST]);
    eu.set(Mode::Fail);
    until_answered(&server, US_EAST, Duration::from_secs(5)).expect("failover");

    let (status, metrics) = http(admin, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    for line in [
        r#"regiondns_region_state{zone="llm.example.com.",region="eu-west",state="down"} 1"#,
        r#"regiondns_region_state{zone="llm.example.com.",region="eu-west",state="up"} 0"#,
        r#"regiondns_region_transitions_total{zone="llm.example.com.",region="eu-west",state="down"} 1"#,
        r#"regiondns_routing_generation 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains(
        r#"regiondns_probe_duration_seconds_count{zone="llm.example.com.",region="eu-west"}"#
    ));
    let answered = |region: &str| -> u64 {
        let series = format!(
            r#"regiondns_queries_total{{zone="llm.example.com.",service="api.llm.example.com.",region="{region}",rcode="NOERROR"}} "#
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(answered("eu-west") >= 1, "{metrics}");
    assert!(answered("us-east") >= 1, "{metrics}");
    let (status, body) = http(admin, "GET", "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn probes_that_change_no_state_still_reach_the_regions_api() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let server = Server::start(&zone(&check(&us), &check(&eu), ""));
    settle(&[&us], 4);
    // The board is published within 250 ms of a probe that changes no state.
    std::thread::sleep(Duration::from_millis(400));
    let us_east = region(&server, "us-east");
    assert_eq!(us_east["state"], "up", "{us_east}");
    let shown = us_east["probes"].as_u64().expect("probes");
    assert!(
        shown >= 3,
        "{shown} probes shown of {} made: {us_east}",
        us.requests()
    );
    let last = us_east["last_probe"].as_str().expect("last probe");
    assert!(last.starts_with("success in"), "{last}");
}

#[test]
fn tcp_checks_follow_the_port_being_open() {
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Ok));
    let tcp = format!(
        "{{ tcp: \"{}\", interval: {}ms, timeout: 400ms, fall: {FALL}, rise: {RISE} }}",
        eu.addr,
        INTERVAL.as_millis()
    );
    let server = Server::start(&zone(&check(&us), &tcp, ""));
    assert_eq!(answer(&server, UK), [EU_WEST]);
    eu.set(Mode::Closed);
    until_answered(&server, US_EAST, Duration::from_secs(5)).expect("closed port: down");
    let reason = region(&server, "eu-west")["reason"].to_string();
    assert!(reason.contains("Connection refused"), "{reason}");
    eu.set(Mode::Hang);
    until_answered(&server, EU_WEST, Duration::from_secs(5))
        .expect("open port: up, whatever HTTP does");
}

#[test]
fn values_from_the_environment_never_show_in_reasons_the_status_page_or_the_log() {
    const SECRET: &str = "s3cr3t-token-9f2";
    // Refused connections: reqwest's error names the URL, secret included.
    let (us, eu) = (Endpoint::start(Mode::Ok), Endpoint::start(Mode::Closed));
    let url = format!("{}?key=${{REGIONDNS_TEST_SECRET}}", eu.url());
    let eu_check = check(&eu).replace(&eu.url(), &url);
    let dir = common::zone_dir(&zone(&check(&us), &eu_check, ""));
    let args = common::serve_args(dir.path(), &["--admin", "127.0.0.1:0"]);
    let server = Server::spawn_with_env(dir, &args, None, &[("REGIONDNS_TEST_SECRET", SECRET)]);
    assert!(
        until_answered(&server, US_EAST, Duration::from_secs(10)).is_some(),
        "eu-west goes down"
    );
    let reason = region(&server, "eu-west")["reason"].to_string();
    assert!(reason.contains("2 consecutive failures"), "{reason}");
    let (_, page) = http(server.admin.expect("admin"), "GET", "/", &[]);
    let (_, regions) = http(server.admin.expect("admin"), "GET", "/regions", &[]);
    for (what, text) in [("/", page), ("/regions", regions), ("log", server.log())] {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    }
}
