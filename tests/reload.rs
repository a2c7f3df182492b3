//! Hot reload: zone files edited, broken, removed and added under a running server.

use std::time::{Duration, Instant};

use crate::common::{
    self, Server, ZONE, addresses,
    endpoint::{Endpoint, Mode},
    query, udp, until_answered, until_logged,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};

const API: &str = "api.llm.example.com.";
const UK: &str = "81.2.69.0/24";

fn zone_file(server: &Server) -> std::path::PathBuf {
    server.dir.path().join("zones/llm.yaml")
}

#[test]
fn a_valid_edit_is_answered_and_a_broken_one_keeps_the_last_good() {
    let server = Server::start(ZONE);
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        ["203.0.113.20"]
    );

    std::fs::write(
        zone_file(&server),
        ZONE.replace("203.0.113.20", "203.0.113.21"),
    )
    .expect("write");
    // How soon is bench/reload.py's figure (about 120 ms); a test on a busy machine only
    // needs the new version to be answered.
    until_answered(&server, UK, &["203.0.113.21"], Duration::from_secs(5))
        .expect("the new version");

    let broken = ZONE.replace("203.0.113.20", "203.0.113.22").replace(
        "    addresses: [203.0.113.30",
        "    adresses: [203.0.113.30",
    );
    std::fs::write(zone_file(&server), broken).expect("write");
    until_logged(&server, "zones/llm.yaml:31:5: unknown key `adresses`", 1);
    for _ in 0..20 {
        let response = udp(server.addr, &query(API, RecordType::A, Some(UK)));
        assert_eq!(
            addresses(&response),
            ["203.0.113.21"],
            "the last good version serves"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(
        metrics.contains("regiondns_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
}

#[test]
fn removing_a_zone_file_stops_the_zone_and_adding_one_starts_it() {
    let server = Server::start(ZONE);
    std::fs::write(
        server.dir.path().join("zones/org.yml"),
        org_zone("203.0.113.20"),
    )
    .expect("write");
    until_org_answers(&server, "203.0.113.20");
    std::fs::remove_file(zone_file(&server)).expect("remove");
    let start = Instant::now();
    loop {
        let response = udp(server.addr, &query(API, RecordType::A, Some(UK)));
        if response.metadata.response_code == ResponseCode::Refused {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the removed zone stops"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let org = udp(
        server.addr,
        &query("api.llm.example.org.", RecordType::A, Some(UK)),
    );
    assert_eq!(
        addresses(&org),
        ["203.0.113.20"],
        "the other zone is untouched"
    );
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(
        !metrics.contains(r#"regiondns_region_state{zone="llm.example.com.""#),
        "the removed zone's series: {metrics}"
    );
    assert!(
        metrics.contains(
            r#"regiondns_region_state{zone="llm.example.org.",region="eu-west",state="up"} 1"#
        ),
        "{metrics}"
    );
}

/// The zone of `ZONE` under another origin, its service answering `address` in eu-west.
fn org_zone(address: &str) -> String {
    ZONE.replace("origin: llm.example.com.", "origin: llm.example.org.")
        .replace(
            "ns1.llm.example.com., ns2.llm.example.com.",
            "ns1.llm.example.org., ns2.llm.example.org.",
        )
        .replace("203.0.113.20", address)
}

/// Waits up to 5 s until llm.example.org's service answers `address`.
fn until_org_answers(server: &Server, address: &str) {
    let org = "api.llm.example.org.";
    common::until_name_answered(server, org, UK, &[address], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{org} never answered {address}"));
}

#[test]
fn an_edit_reads_only_the_files_that_changed() {
    let server = Server::start(ZONE);
    let org = server.dir.path().join("zones/org.yml");
    std::fs::write(&org, org_zone("203.0.113.40")).expect("write");
    // Start-up's reading is not stamped: the first reload reads every file.
    until_logged(&server, "zone files: 2 read, 0 unchanged", 1);

    std::fs::write(&org, org_zone("203.0.113.41")).expect("write");
    until_logged(&server, "zone files: 1 read, 1 unchanged", 1);
    until_org_answers(&server, "203.0.113.41");
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        ["203.0.113.20"],
        "the file not read again still serves"
    );

    // A file that does not validate is read again at every change, and reported each time.
    let broken = ZONE.replace(
        "    addresses: [203.0.113.30",
        "    adresses: [203.0.113.30",
    );
    std::fs::write(zone_file(&server), broken).expect("write");
    until_logged(&server, "unknown key `adresses`", 1);
    std::fs::write(&org, org_zone("203.0.113.42")).expect("write");
    until_logged(
        &server,
        "zone files: 2 read, 0 unchanged, 1 file(s) kept",
        1,
    );
    assert_eq!(server.log().matches("unknown key `adresses`").count(), 2);
    until_org_answers(&server, "203.0.113.42");
}

#[test]
fn sighup_reloads() {
    let server = Server::binary(ZONE);
    server.signal("HUP");
    until_logged(&server, "reload (SIGHUP): configuration unchanged", 1);
}

#[test]
fn health_survives_a_reload_unless_the_check_changed() {
    let (eu, us) = (Endpoint::start(Mode::Fail), Endpoint::start(Mode::Ok));
    let check = |e: &Endpoint| {
        format!(
            "{{ http: \"{}\", interval: 200ms, timeout: 150ms, fall: 2, rise: 2 }}",
            e.url()
        )
    };
    let zone = ZONE
        .replace(
            "    addresses: [203.0.113.20, \"2001:db8:20::1\"]",
            &format!("    addresses: [203.0.113.20]\n    check: {}", check(&eu)),
        )
        .replace(
            "    addresses: [203.0.113.10, \"2001:db8:10::1\"]",
            &format!("    addresses: [203.0.113.10]\n    check: {}", check(&us)),
        );
    let server = Server::start(&zone);
    until_answered(&server, UK, &["203.0.113.10"], Duration::from_secs(3)).expect("eu-west down");
    let probes_before = eu.requests();

    // An unrelated edit: eu-west stays down at once, its prober keeps running.
    std::fs::write(zone_file(&server), zone.replace("ttl: 20", "ttl: 25")).expect("write");
    let start = Instant::now();
    loop {
        let response = udp(server.addr, &query(API, RecordType::A, Some(UK)));
        assert_eq!(
            addresses(&response),
            ["203.0.113.10"],
            "still down across the reload"
        );
        if response.answers[0].ttl == 25 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the new configuration is answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(eu.requests() > probes_before, "the same prober goes on");

    // A changed check starts afresh: up until probed.
    let moved = Endpoint::start(Mode::Fail);
    std::fs::write(zone_file(&server), zone.replace(&eu.url(), &moved.url())).expect("write");
    until_answered(&server, UK, &["203.0.113.20"], Duration::from_secs(2))
        .expect("a new check starts up");
}
