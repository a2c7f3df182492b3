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

/// eu-west a little further north (a new geography: its places are compiled) and answering
/// another address, so that a client can see the reload applied.
fn moved_eu_west() -> String {
    ZONE.replace("lat: 53.3, lon: -6.3", "lat: 53.4, lon: -6.3")
        .replace("203.0.113.20", "203.0.113.21")
}

#[test]
fn a_zone_reload_compiles_only_from_the_geoip_the_reloader_accepted() {
    // Renamed onto the path, a file the GeoIP reloader refuses: the reload that brings a new
    // geography compiles from the database accepted before.
    let server = Server::start(ZONE);
    let geo = server.dir.path().join("geo.mmdb");
    let garbage = server.dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"not a MaxMind DB at all").expect("garbage");
    std::fs::rename(&garbage, &geo).expect("rename");
    until_logged(&server, "GeoIP reload (", 1);
    assert!(server.log().contains("refused"), "{}", server.log());
    std::fs::write(zone_file(&server), moved_eu_west()).expect("edit");
    until_answered(&server, UK, &["203.0.113.21"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the reload applied: {}", server.log()));

    // Written in place over the accepted file: what is read no longer matches what was
    // accepted, so the reload waits, says why, and the last good configuration serves.
    let server = Server::start(ZONE);
    let geo = server.dir.path().join("geo.mmdb");
    std::fs::write(&geo, b"written over in place").expect("overwrite");
    until_logged(&server, "GeoIP reload (", 1);
    std::fs::write(zone_file(&server), moved_eu_west()).expect("edit");
    until_logged(&server, "was written in place since it was accepted", 1);
    for _ in 0..10 {
        let response = udp(server.addr, &query(API, RecordType::A, Some(UK)));
        assert_eq!(
            addresses(&response),
            ["203.0.113.20"],
            "the last good version"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !server.log().contains("reloaded (zone files changed)"),
        "{}",
        server.log()
    );
    // A good database written in place is accepted, and the reload that waited applies.
    common::write_mmdb(&geo, &common::fixture_networks());
    until_answered(&server, UK, &["203.0.113.21"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the waiting reload applied: {}", server.log()));
    assert!(
        server
            .log()
            .contains("applying the zone reload that waited")
    );
}

/// 1,000 regions spread over the map, each checked over TCP at `check` every second, all
/// answering one service: a geography whose places take a while to compile.
fn thousand_regions(check: std::net::SocketAddr, north: f64) -> String {
    let mut zone = String::from(
        "origin: llm.example.com.\nsoa: { primary: ns1, contact: hostmaster@example.com }\n\
         ns: [ns1]\nrecords:\n  ns1: { A: [198.51.100.53] }\nregions:\n",
    );
    for i in 0..1_000 {
        let lat = -60.0 + f64::from(i % 120) + north;
        let lon = -180.0 + f64::from((i * 37) % 360);
        zone.push_str(&format!(
            "  r{i}: {{ location: {{ lat: {lat}, lon: {lon} }}, addresses: [198.18.{}.{}], \
             check: {{ tcp: \"{check}\", interval: 1s, timeout: 500ms }} }}\n",
            i / 256,
            i % 256
        ));
    }
    let all: Vec<String> = (0..1_000).map(|i| format!("r{i}")).collect();
    zone.push_str(&format!(
        "services:\n  api: {{ regions: [{}] }}\n",
        all.join(", ")
    ));
    zone
}

/// The youngest probe in the publisher's own view, served as of the request: how long ago the
/// publisher last took a probe report.
fn youngest_probe_ms(fleet: std::net::SocketAddr) -> u64 {
    let bearer = "Bearer fleet-secret-0123456789";
    let (status, view) = common::http(fleet, "GET", "/fleet/view", &[("Authorization", bearer)]);
    assert_eq!(status, 200, "{view}");
    let view: serde_json::Value = serde_json::from_str(&view).expect("view");
    let ages = view["regions"].as_array().expect("regions").iter();
    let ages = ages.filter_map(|r| r["probe_age_ms"].as_u64());
    ages.min().unwrap_or(u64::MAX)
}

#[test]
fn probes_and_views_keep_flowing_during_a_reload_with_1000_regions() {
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let check = target.local_addr().expect("addr");
    std::thread::spawn(move || for _ in target.incoming() {});
    let dir = common::zone_dir(&thousand_regions(check, 0.0));
    let bundled = common::repo_root().join("geoip/dbip-country.mmdb");
    std::fs::copy(bundled, dir.path().join("geo.mmdb")).expect("the bundled GeoIP file");
    let token = dir.path().join("fleet-token");
    std::fs::write(&token, "fleet-secret-0123456789").expect("token");
    let token = common::path_arg(&token);
    let fleet = format!("{}:0", common::own_loopback());
    let server = Server::start_in(
        dir,
        &["--fleet-listen", &fleet, "--fleet-token-file", &token],
    );
    // Logged by the fleet listener's task, which may start after DNS says it listens.
    common::until_logged(&server, "fleet listener on http://", 1);
    let fleet: std::net::SocketAddr = server
        .log()
        .split("fleet listener on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("the fleet listener's address");
    let start = Instant::now();
    while youngest_probe_ms(fleet) > 300 {
        assert!(start.elapsed() < Duration::from_secs(10), "no probes");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every region moves a little north: the one geography is compiled again.
    std::fs::write(zone_file(&server), thousand_regions(check, 0.5)).expect("edit");
    let (mut worst, start) = (0, Instant::now());
    while !server.log().contains("reloaded (zone files changed)") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            server.log()
        );
        worst = worst.max(youngest_probe_ms(fleet));
        std::thread::sleep(Duration::from_millis(20));
    }
    let compiled = server
        .log()
        .lines()
        .find(|l| l.contains("GeoIP networks compiled (reload)"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("{compiled}; the youngest probe was at most {worst} ms old meanwhile");
    assert!(!compiled.is_empty(), "{}", server.log());
    assert!(
        worst < 750,
        "the publisher stalled: {worst} ms without a probe report"
    );
}
