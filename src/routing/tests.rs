//! The decision, exhaustively, without sockets: zones parsed from YAML, region states set by
//! hand.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use mmdb_writer::{IpVersion, Writer};
use serde_json::{Value, json};

use super::*;
use crate::{
    config::{self, FailClosed},
    geo::{Continent, Coordinates, CountryCode, Located, Location},
    metrics::Metrics,
    region::RegionKey,
};

const ZONE: &str = r#"
origin: llm.example.com.
soa: { primary: ns.example.net., contact: h.example.net. }
ns: [ns.example.net.]
regions:
  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10], jurisdiction: us, weight: 200 }
  eu-west: { location: { lat: 53.3, lon: -6.3 }, addresses: [203.0.113.20], jurisdiction: eu, weight: 100 }
  eu-north: { location: { lat: 59.3, lon: 18.1 }, addresses: [203.0.113.40], jurisdiction: eu, weight: 100 }
  ap-northeast: { location: { lat: 35.7, lon: 139.7 }, addresses: [203.0.113.30], jurisdiction: jp }
services:
"#;

/// A GeoIP database of these networks, as MaxMind's City files nest their records.
fn geoip(networks: &[(&str, Value)]) -> GeoIp {
    let mut writer = Writer::builder("Test")
        .ip_version(IpVersion::V6)
        .description(&[("en", "regiondns routing test")])
        .build_epoch(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
        .build();
    for (network, record) in networks {
        let network: mmdb_writer::ipnet::IpNet = network.parse().expect("network");
        writer.insert(network, record).expect("insert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.mmdb");
    std::fs::write(&path, writer.to_bytes().expect("encode")).expect("write");
    GeoIp::open(&[path]).expect("open")
}

fn city(country: &str, continent: &str, lat: f64, lon: f64) -> Value {
    json!({"country": {"iso_code": country}, "continent": {"code": continent},
        "location": {"latitude": lat, "longitude": lon}})
}

/// The networks the tests' clients come from.
fn cities() -> GeoIp {
    geoip(&[
        ("198.51.100.0/25", city("US", "NA", 40.7, -74.0)),
        ("198.51.100.128/25", city("US", "NA", 41.9, -87.6)),
        ("192.0.2.0/25", city("FR", "EU", 48.9, 2.4)),
        ("192.0.2.128/25", city("MA", "AF", 33.6, -7.6)),
        ("203.0.113.0/24", city("JP", "AS", 35.0, 135.5)),
        ("2001:db8::/32", city("JP", "AS", 35.7, 139.7)),
    ])
}

/// The plan of `zone` on [`cities`], without a latency table.
fn city_plan(zone: &config::ZoneConfig) -> Plan {
    Plan::new(std::slice::from_ref(zone), &Metrics::new(), &cities(), None).expect("plan")
}

/// A table for `service` (YAML of one service named api) with the given region states.
fn service_table(service: &str, states: &[(&str, State)]) -> RoutingTable {
    let text = format!("{ZONE}  api:\n{service}");
    let zone = config::parse(Path::new("t.yaml"), &text, 1).expect("valid zone");
    let plan = city_plan(&zone);
    let states: States = states
        .iter()
        .map(|(region, state)| {
            let key = RegionKey {
                zone: "llm.example.com.".into(),
                region: (*region).into(),
            };
            (key, *state)
        })
        .collect();
    RoutingTable::build(&plan, &states, &Loads::default())
}

fn api(table: &RoutingTable) -> &ServiceRoutes {
    let name = b"\x03api\x03llm\x07example\x03com\x00";
    table
        .zone_for(name)
        .and_then(|z| z.service_named(name))
        .expect("service")
}

/// A client located one address at a time, as `explain` locates it.
#[derive(Debug, Clone, Copy)]
struct Who {
    ip: IpAddr,
    located: Located,
}

impl Who {
    fn at(&self, service: &ServiceRoutes) -> Client {
        service.client_located(self.ip, &self.located, LookupResult::Located)
    }
}

fn decide<'t>(table: &'t RoutingTable, who: &Who) -> Decision<'t> {
    let service = api(table);
    service.decide(&who.at(service), &mut ())
}

fn client(ip: &str, country: &str, continent: Continent, lat: f64, lon: f64) -> Who {
    Who {
        ip: ip.parse().expect("ip"),
        located: Located::Known(Location::new(
            Some(Coordinates { lat, lon }),
            CountryCode::parse(country),
            Some(continent),
            16,
        )),
    }
}

/// A client in London: nearer Dublin (eu-west) than Stockholm (eu-north).
fn european(ip: &str) -> Who {
    client(ip, "GB", Continent::Europe, 51.5, -0.1)
}

fn american(ip: &str) -> Who {
    client(ip, "US", Continent::NorthAmerica, 40.7, -74.0)
}

/// Region names answered, best first.
fn names(table: &RoutingTable, who: &Who) -> Vec<String> {
    let service = api(table);
    match service.decide(&who.at(service), &mut ()) {
        Decision::Regions { picks, .. } => picks
            .iter()
            .map(|i| service.plan.regions[i].key.region.clone())
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

#[test]
fn clients_go_to_the_nearest_region() {
    let table = service_table("    regions: [us-east, eu-west, ap-northeast]\n", &[]);
    let at = |lat, lon| client("198.51.100.1", "ZZ", Continent::Asia, lat, lon);
    assert_eq!(names(&table, &at(35.0, 135.5)), ["ap-northeast"], "Osaka");
    assert_eq!(names(&table, &at(51.5, -0.1)), ["eu-west"], "London");
    assert_eq!(names(&table, &at(40.7, -74.0)), ["us-east"], "New York");
    assert_eq!(
        names(&table, &at(37.8, -122.4)),
        ["us-east"],
        "San Francisco"
    );
    assert_eq!(
        names(&table, &at(1.35, 103.8)),
        ["ap-northeast"],
        "Singapore"
    );
    assert_eq!(names(&table, &at(52.5, 13.4)), ["eu-west"], "Berlin");
}

#[test]
fn unknown_clients_get_the_first_region_in_list_order() {
    let table = service_table("    regions: [ap-northeast, us-east]\n", &[]);
    let unknown = Who {
        ip: "10.0.0.1".parse().expect("ip"),
        located: Located::Unknown { prefix_len: 8 },
    };
    assert_eq!(names(&table, &unknown), ["ap-northeast"]);
}

fn subnet(i: u32) -> String {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
    ip.to_string()
}

const SOVEREIGN: &str = "    regions: [us-east, eu-west, eu-north, ap-northeast]
    rules:
      - match: { continent: [EU] }
        allow: { jurisdiction: [eu] }
        when_none: refuse
";

#[test]
fn eu_clients_only_ever_get_eu_regions_and_fail_closed_with_a_reason() {
    let healthy = service_table(SOVEREIGN, &[]);
    assert_eq!(names(&healthy, &european("192.0.2.1")), ["eu-west"]);
    let one_down = service_table(SOVEREIGN, &[("eu-west", State::Down)]);
    assert_eq!(names(&one_down, &european("192.0.2.1")), ["eu-north"]);

    let both = [("eu-west", State::Down), ("eu-north", State::Drained)];
    let table = service_table(SOVEREIGN, &both);
    match decide(&table, &european("192.0.2.1")) {
        Decision::FailClosed { how, reason, .. } => {
            assert_eq!(how, FailClosed::Refuse);
            assert_eq!(reason, "no healthy region allowed for jurisdiction eu");
        }
        other => panic!("expected fail closed, got {other:?}"),
    }
    assert_eq!(
        names(&table, &american("198.51.100.1")),
        ["us-east"],
        "US clients unaffected"
    );
}

#[test]
fn fail_open_never_crosses_an_allow_but_applies_to_everyone_else() {
    let all_down = [
        ("us-east", State::Down),
        ("eu-west", State::Down),
        ("eu-north", State::Down),
        ("ap-northeast", State::Down),
    ];
    let table = service_table(SOVEREIGN, &all_down);
    assert!(matches!(
        decide(&table, &european("192.0.2.1")),
        Decision::FailClosed { .. }
    ));
    match decide(&table, &american("198.51.100.1")) {
        Decision::Regions {
            picks, fail_open, ..
        } => {
            assert!(fail_open);
            assert_eq!(
                picks.iter().collect::<Vec<_>>(),
                [0],
                "nearest as if all were up"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A client no GeoIP record places (none, or one that cannot be read).
fn unlocated(ip: &str) -> Who {
    Who {
        ip: ip.parse().expect("ip"),
        located: Located::Unknown { prefix_len: 16 },
    }
}

#[test]
fn a_client_with_no_usable_location_gets_only_what_every_rule_allows() {
    let healthy = service_table(SOVEREIGN, &[]);
    assert_eq!(
        names(&healthy, &unlocated("192.0.2.1")),
        ["eu-west"],
        "the EU regions in list order, never us-east"
    );
    let eu_down = [("eu-west", State::Down), ("eu-north", State::Down)];
    match decide(&service_table(SOVEREIGN, &eu_down), &unlocated("192.0.2.1")) {
        Decision::FailClosed { how, reason, .. } => {
            assert_eq!(how, FailClosed::Refuse);
            assert!(
                reason.contains("what every rule allows (jurisdiction eu)"),
                "{reason}"
            );
        }
        other => panic!("expected fail closed, got {other:?}"),
    }
    // Two rules: only what both allow; they fail closed differently, so it refuses.
    let two = format!(
        "{SOVEREIGN}      - match: {{ country: [US] }}\n        allow: {{ regions: [us-east, eu-north] }}\n        when_none: nodata\n"
    );
    assert_eq!(
        names(&service_table(&two, &[]), &unlocated("192.0.2.1")),
        ["eu-north"]
    );
    let north_down = [("eu-north", State::Down)];
    let table = service_table(&two, &north_down);
    let decision = decide(&table, &unlocated("192.0.2.1"));
    assert!(
        matches!(
            decision,
            Decision::FailClosed {
                how: FailClosed::Refuse,
                ..
            }
        ),
        "{decision:?}"
    );
    // A network rule matches by address, located or not.
    let network = "    regions: [us-east, eu-west]
    rules:
      - match: { network: [192.0.2.0/24] }
        allow: { regions: [us-east] }
";
    let table = service_table(network, &[]);
    assert_eq!(names(&table, &unlocated("192.0.2.1")), ["us-east"]);
    assert_eq!(names(&table, &unlocated("198.51.100.1")), ["us-east"]);
}

#[test]
fn unlocated_says_what_clients_without_a_location_get() {
    let with = |setting: &str| format!("{SOVEREIGN}    unlocated: {setting}\n");
    let any = service_table(&with("any"), &[]);
    assert_eq!(
        names(&any, &unlocated("192.0.2.1")),
        ["us-east"],
        "the first listed"
    );
    assert_eq!(
        names(&any, &european("192.0.2.1")),
        ["eu-west"],
        "rules still apply"
    );
    for (setting, expected) in [
        ("refuse", FailClosed::Refuse),
        ("servfail", FailClosed::ServFail),
        ("nodata", FailClosed::NoData),
    ] {
        let table = service_table(&with(setting), &[]);
        let decision = decide(&table, &unlocated("192.0.2.1"));
        assert!(
            matches!(decision, Decision::FailClosed { how, .. } if how == expected),
            "{setting}: {decision:?}"
        );
        assert_eq!(names(&table, &american("198.51.100.1")), ["us-east"]);
    }
    // Without rules that restrict, nothing changes for them.
    let open = service_table("    regions: [ap-northeast, us-east]\n", &[]);
    assert_eq!(names(&open, &unlocated("10.0.0.1")), ["ap-northeast"]);
    let text = format!("{ZONE}  api:\n{}", with("everywhere"));
    let errors = config::parse(Path::new("t.yaml"), &text, 1).expect_err("refused");
    let wanted = "unlocated must be restricted, any, refuse, servfail or nodata, got 'everywhere'";
    assert!(
        errors.iter().any(|e| e.to_string().contains(wanted)),
        "{errors:?}"
    );
}

#[test]
fn when_none_chooses_the_fail_closed_answer() {
    for (setting, expected) in [
        ("servfail", FailClosed::ServFail),
        ("nodata", FailClosed::NoData),
    ] {
        let service = SOVEREIGN.replace("when_none: refuse", &format!("when_none: {setting}"));
        let table = service_table(
            &service,
            &[("eu-west", State::Down), ("eu-north", State::Down)],
        );
        let decision = decide(&table, &european("192.0.2.1"));
        assert!(
            matches!(decision, Decision::FailClosed { how, .. } if how == expected),
            "{decision:?}"
        );
    }
}

#[test]
fn prefer_goes_first_and_network_rules_match_addresses() {
    let service = "    regions: [us-east, eu-west, ap-northeast]
    rules:
      - match: { network: [10.0.0.0/8] }
        prefer: [ap-northeast]
      - match: { country: [CN, HK] }
        prefer: [eu-west, ap-northeast]
";
    let table = service_table(service, &[]);
    assert_eq!(names(&table, &american("10.1.2.3")), ["ap-northeast"]);
    let china = client("203.0.113.7", "CN", Continent::Asia, 35.9, 104.2);
    assert_eq!(names(&table, &china), ["eu-west"]);
    let down = service_table(service, &[("eu-west", State::Down)]);
    assert_eq!(names(&down, &china), ["ap-northeast"], "the next preferred");
    assert_eq!(
        names(&table, &american("198.51.100.1")),
        ["us-east"],
        "no rule: nearest"
    );
}

#[test]
fn priority_takes_the_first_healthy_region_in_list_order() {
    let service = "    regions: [eu-north, us-east, ap-northeast]\n    policy: priority\n";
    let table = service_table(service, &[]);
    assert_eq!(names(&table, &american("198.51.100.1")), ["eu-north"]);
    let down = service_table(service, &[("eu-north", State::Down)]);
    assert_eq!(names(&down, &european("192.0.2.1")), ["us-east"]);
}

#[test]
fn weighted_shares_follow_the_weights_and_each_subnet_is_stable() {
    let table = service_table(
        "    regions: [eu-west, us-east]\n    policy: weighted\n",
        &[],
    );
    let mut us = 0;
    for i in 0..10_000 {
        let who = american(&subnet(i));
        let first = names(&table, &who);
        assert_eq!(first, names(&table, &who), "stable");
        us += usize::from(first == ["us-east"]);
    }
    let share = us as f64 / 10_000.0;
    assert!(
        (share - 2.0 / 3.0).abs() < 0.02,
        "weight 200 of 300: {share}"
    );
}

#[test]
fn a_weighted_region_going_down_moves_only_its_own_subnets() {
    let service = "    regions: [eu-west, us-east, eu-north]\n    policy: weighted\n";
    let (all, down) = (
        service_table(service, &[]),
        service_table(service, &[("eu-north", State::Down)]),
    );
    for i in 0..2_000 {
        let who = american(&subnet(i));
        let before = names(&all, &who);
        if before != ["eu-north"] {
            assert_eq!(before, names(&down, &who), "subnet {i} moved needlessly");
        }
    }
}

#[test]
fn the_canary_takes_its_share_while_up() {
    let service = "    regions: [us-east, eu-north]\n    canary: { region: eu-north, share: 5% }\n";
    let table = service_table(service, &[]);
    let canaried = (0..10_000)
        .filter(|&i| names(&table, &american(&subnet(i))) == ["eu-north"])
        .count();
    let share = canaried as f64 / 10_000.0;
    assert!((share - 0.05).abs() < 0.01, "{share}");
    let down = service_table(service, &[("eu-north", State::Down)]);
    assert!(
        (0..1_000).all(|i| names(&down, &american(&subnet(i))) == ["us-east"]),
        "where they would have gone"
    );
}

#[test]
fn a_degraded_region_sheds_its_share_of_clients_to_the_next() {
    let service = "    regions: [us-east, eu-west, ap-northeast]\n    shed: 50%\n";
    let table = service_table(service, &[("eu-west", State::Degraded)]);
    let kept = (0..10_000)
        .filter(|&i| names(&table, &european(&subnet(i))) == ["eu-west"])
        .count();
    let share = kept as f64 / 10_000.0;
    assert!((share - 0.5).abs() < 0.03, "{share}");
    for i in 0..500 {
        let who = european(&subnet(i));
        let answer = names(&table, &who);
        assert!(
            answer == ["eu-west"] || answer == ["us-east"],
            "the next nearest: {answer:?}"
        );
        assert_eq!(answer, names(&table, &who), "stable per subnet");
    }
    let default_shed = service_table(
        "    regions: [us-east, eu-west]\n",
        &[("eu-west", State::Degraded)],
    );
    assert_eq!(
        names(&default_shed, &european("192.0.2.1")),
        ["us-east"],
        "without shed: all of them"
    );
}

#[test]
fn answers_n_returns_the_n_best_regions_in_order() {
    let table = service_table(
        "    regions: [us-east, eu-west, ap-northeast]\n    answers: 2\n",
        &[],
    );
    assert_eq!(
        names(&table, &european("192.0.2.1")),
        ["eu-west", "us-east"]
    );
    let down = service_table(
        "    regions: [us-east, eu-west, ap-northeast]\n    answers: 2\n",
        &[("us-east", State::Down)],
    );
    assert_eq!(
        names(&down, &european("192.0.2.1")),
        ["eu-west", "ap-northeast"]
    );
}

/// The scope of the query path's decision for `ip`: the network its place holds for, or the
/// client's subnet when a hash decided.
fn scope(service: &str, ip: &str) -> u8 {
    let table = service_table(service, &[]);
    let service = api(&table);
    let (client, _) = service.client(ip.parse().expect("ip"));
    match service.decide(&client, &mut ()) {
        Decision::Regions { scope, .. }
        | Decision::FailClosed { scope, .. }
        | Decision::ServFail { scope } => scope,
    }
}

#[test]
fn the_scope_is_the_widest_network_of_the_same_decision() {
    // Clients no database knows get the first region listed: Tokyo here, so the networks
    // around the fixture's cities decide otherwise.
    let nearest = "    regions: [ap-northeast, us-east, eu-west]\n";
    assert_eq!(
        scope(nearest, "198.51.100.1"),
        24,
        "New York's /25 and Chicago's both go to us-east"
    );
    assert_eq!(
        scope(nearest, "192.0.2.1"),
        24,
        "Paris (EU) and Casablanca (AF) both go to eu-west: the continent is only counted"
    );
    assert!(
        scope("    regions: [us-east, eu-west]\n", "198.51.100.1") < 24,
        "where unknown neighbours are sent to us-east as well, the scope spans them"
    );
    assert_eq!(scope("    regions: [us-east]\n", "198.51.100.1"), 0);
    assert_eq!(
        scope(
            "    regions: [us-east, eu-west]\n    policy: priority\n",
            "198.51.100.1"
        ),
        0,
        "nothing depended on the client"
    );
    let weighted = "    regions: [us-east, eu-west]\n    policy: weighted\n";
    assert_eq!(scope(weighted, "198.51.100.1"), 24, "the hash's /24");
    assert_eq!(scope(weighted, "2001:db8::1"), 56, "the hash's /56");
    let network_rule = "    regions: [us-east, eu-west]\n    policy: priority\n    rules:\n      - match: { network: [10.0.0.0/8] }\n        prefer: [eu-west]\n";
    assert_eq!(scope(network_rule, "10.1.2.3"), 8, "the rule's network");
}

#[test]
fn the_compiled_place_is_the_place_of_the_address() {
    let service = "    regions: [us-east, eu-west, eu-north, ap-northeast]\n    rules:\n      - match: { continent: [AF] }\n        allow: { jurisdiction: [eu] }\n";
    let table = service_table(service, &[]);
    let service = api(&table);
    let geo = cities();
    for ip in [
        "198.51.100.1",
        "198.51.100.200",
        "192.0.2.7",
        "192.0.2.200",
        "203.0.113.9",
        "2001:db8::1",
        "10.0.0.1",
        "::ffff:192.0.2.7",
    ] {
        let ip: IpAddr = ip.parse().expect("ip");
        let (located, lookup) = geo.locate_counted(ip);
        let (compiled, _) = service.client(ip);
        assert_eq!(
            compiled.place,
            service.client_located(ip, &located, lookup).place,
            "{ip}"
        );
    }
    let (morocco, _) = service.client("192.0.2.200".parse().expect("ip"));
    assert_eq!(
        morocco.place.continent,
        Some(Continent::Africa),
        "counted as Africa"
    );
    assert_eq!(morocco.place.decisive.rule, Some(0));
}

struct Lines(Vec<String>);

impl Explain for Lines {
    fn rule(&mut self, matched: Option<(usize, &RulePlan)>) {
        self.0.push(format!("rule {:?}", matched.map(|(i, _)| i)));
    }
    fn candidate(&mut self, region: &RegionRoute, state: State, _: Option<f64>, verdict: &str) {
        self.0.push(format!(
            "{} {} {verdict}",
            region.key.region,
            state.as_str()
        ));
    }
    fn step(&mut self, text: &dyn Fn() -> String) {
        self.0.push(text());
    }
}

#[test]
fn the_observer_sees_the_rule_and_every_candidate_with_its_verdict() {
    let table = service_table(SOVEREIGN, &[("eu-west", State::Down)]);
    let mut lines = Lines(Vec::new());
    let service = api(&table);
    service.decide(&european("192.0.2.1").at(service), &mut lines);
    assert_eq!(lines.0[0], "rule Some(0)");
    assert!(
        lines
            .0
            .contains(&"eu-west down not eligible: down".to_string()),
        "{:?}",
        lines.0
    );
    assert!(
        lines
            .0
            .contains(&"us-east up not allowed by the rule".to_string()),
        "{:?}",
        lines.0
    );
    assert!(
        lines.0.contains(&"eu-north up eligible".to_string()),
        "{:?}",
        lines.0
    );
}

/// An observer that listens, so `decide` takes its full path: every candidate sorted.
struct Listening;

impl Explain for Listening {}

/// A service of `count` regions spread over the globe, with states drawn from `seed`.
fn large_service(count: usize, seed: u64) -> RoutingTable {
    let mut random = seed;
    let mut next = move || {
        random = random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (random >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut text = String::from(
        "origin: big.example.com.\nsoa: { primary: ns.example.net., contact: h.example.net. }\n\
         ns: [ns.example.net.]\nregions:\n",
    );
    let mut states = States::default();
    let mut names = Vec::new();
    for i in 0..count {
        let (lat, lon) = (next() * 160.0 - 80.0, next() * 360.0 - 180.0);
        text += &format!(
            "  r{i}: {{ location: {{ lat: {lat:.3}, lon: {lon:.3} }}, addresses: [192.0.2.1], jurisdiction: j{} }}\n",
            i % 3
        );
        let state = match (next() * 10.0) as u32 {
            0..=3 => State::Down,
            4 => State::Degraded,
            5 => State::Drained,
            _ => State::Up,
        };
        let key = RegionKey {
            zone: "big.example.com.".into(),
            region: format!("r{i}"),
        };
        states.insert(key, state);
        names.push(format!("r{i}"));
    }
    text += &format!(
        "services:\n  api:\n    answers: 3\n    shed: 0.5\n    regions: [{}]\n    rules:\n      - match: {{ continent: [EU] }}\n        allow: {{ jurisdiction: [j1] }}\n        prefer: [r7]\n",
        names.join(", ")
    );
    let zone = config::parse(Path::new("big.yaml"), &text, 1).expect("valid zone");
    let plan = city_plan(&zone);
    RoutingTable::build(&plan, &states, &Loads::default())
}

#[test]
fn large_services_decide_from_the_nearest_of_a_place_exactly_as_from_a_full_order() {
    for seed in 1..=2 {
        let table = large_service(1000, seed);
        let name = b"\x03api\x03big\x07example\x03com\x00";
        let service = table
            .zone_for(name)
            .and_then(|z| z.service_named(name))
            .expect("service");
        for i in 0..2000u32 {
            let lat = f64::from(i % 170) - 85.0;
            let lon = f64::from((i * 37) % 360) - 180.0;
            let continent = [Continent::Europe, Continent::Asia][(i % 2) as usize];
            let who = client(&subnet(i), "ZZ", continent, lat, lon);
            let who = who.at(service);
            assert_eq!(
                service.decide(&who, &mut ()),
                service.decide(&who, &mut Listening),
                "seed {seed}, client {i} at {lat},{lon}"
            );
        }
    }
}

#[test]
fn a_rebuilt_plan_keeps_the_zones_of_the_same_file_reading_and_compiles_the_rest() {
    let com = format!("{ZONE}  api:\n    regions: [us-east, eu-west]\n");
    let org = com.replace("llm.example.com.", "llm.example.org.");
    let read = |text: &str| config::parse(Path::new("t.yaml"), text, 1).expect("valid zone");
    let metrics = Metrics::new();
    let (com_zone, org_zone) = (read(&com), read(&org));
    let geo = cities();
    let before =
        Plan::new(&[com_zone.clone(), org_zone.clone()], &metrics, &geo, None).expect("plan");
    // llm.example.com. as it was read (its data shared); llm.example.org. read again.
    let org_again = read(&org);
    let after = before
        .rebuilt(
            &[com_zone, org_again.clone()],
            &metrics,
            GeoSource::Opened(&geo),
        )
        .expect("plan");
    let service = |plan: &Plan, i: usize| Arc::clone(&plan.zones[i].services[0]);
    assert!(Arc::ptr_eq(&service(&before, 0), &service(&after, 0)));
    assert!(!Arc::ptr_eq(&service(&before, 1), &service(&after, 1)));
    assert!(after.has_data(&org_again.data));
    assert!(!after.has_data(&org_zone.data));
}

/// The test zone with every region's check reading `X-Load`, and `service` as api; per region
/// its load, the share it keeps and the share of moved clients it admits.
fn load_table(service: &str, loads: &[(&str, f64, f64, f64)]) -> RoutingTable {
    let check = ", check: { http: \"http://127.0.0.1:9/\", load: { header: X-Load } } }";
    let zone = ZONE.replace("weight: 200 }", &format!("weight: 200{check}"));
    let zone = zone.replace("weight: 100 }", &format!("weight: 100{check}"));
    let zone = zone.replace("jurisdiction: jp }", &format!("jurisdiction: jp{check}"));
    let text = format!("{zone}  api:\n{service}");
    let zone = config::parse(Path::new("t.yaml"), &text, 1).expect("valid zone");
    let plan = city_plan(&zone);
    let key = |region: &str| RegionKey {
        zone: "llm.example.com.".into(),
        region: region.into(),
    };
    let mut figures = Loads::default();
    for &(region, load, kept, admits) in loads {
        figures.load.insert(key(region), load);
        let shift = load_control::ShiftKey {
            region: key(region),
            service: "api.llm.example.com.".into(),
        };
        let shares = load_control::Controller::with_shares(kept, admits);
        figures.shares.insert(shift, shares);
    }
    RoutingTable::build(&plan, &States::new(), &figures)
}

const LOAD_TARGET: &str = "    regions: [us-east, eu-west, eu-north]\n    load_target: 80%\n";

/// How many of 10,000 London subnets each answer gets.
fn spread(table: &RoutingTable) -> BTreeMap<Vec<String>, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..10_000 {
        *counts
            .entry(names(table, &european(&subnet(i))))
            .or_default() += 1;
    }
    counts
}

fn share(counts: &BTreeMap<Vec<String>, usize>, region: &str) -> f64 {
    counts.get(&vec![region.to_owned()]).copied().unwrap_or(0) as f64 / 10_000.0
}

fn near(counts: &BTreeMap<Vec<String>, usize>, region: &str, expected: f64) {
    let got = share(counts, region);
    assert!(
        (got - expected).abs() < 0.02,
        "{region} {got}, not {expected}: {counts:?}"
    );
}

#[test]
fn moved_clients_fill_the_nearest_region_up_to_what_it_admits_before_going_farther() {
    // eu-west keeps 60%. From London, eu-north is next, then us-east.
    let loads = [
        ("eu-west", 1.0, 0.6, 0.0),
        ("eu-north", 0.2, 1.0, 1.0),
        ("us-east", 0.7, 1.0, 1.0),
    ];
    let table = load_table(LOAD_TARGET, &loads);
    let counts = spread(&table);
    near(&counts, "eu-west", 0.6);
    near(&counts, "eu-north", 0.4);
    assert_eq!(
        share(&counts, "us-east"),
        0.0,
        "nothing goes farther: {counts:?}"
    );

    // eu-north admits three quarters of them: the rest go on to us-east.
    let filling = [loads[0], ("eu-north", 0.8, 1.0, 0.75), loads[2]];
    let counts = spread(&load_table(LOAD_TARGET, &filling));
    near(&counts, "eu-north", 0.3);
    near(&counts, "us-east", 0.1);
    // us-east admits half of what reaches it: the last 5% stay.
    let full = [loads[0], filling[1], ("us-east", 0.8, 1.0, 0.5)];
    let counts = spread(&load_table(LOAD_TARGET, &full));
    near(&counts, "eu-north", 0.3);
    near(&counts, "us-east", 0.05);
    near(&counts, "eu-west", 0.65);

    // The subnets that move are those with the highest hash: keeping less moves more of them,
    // and every subnet moved before is still moved.
    let less = load_table(
        LOAD_TARGET,
        &[("eu-west", 1.0, 0.5, 0.0), loads[1], loads[2]],
    );
    for i in 0..2_000 {
        let who = european(&subnet(i));
        if names(&table, &who) != ["eu-west"] {
            assert_ne!(names(&less, &who), ["eu-west"], "subnet {i} came back");
        }
        assert_eq!(names(&table, &who), names(&table, &who), "stable");
    }
}

#[test]
fn a_region_that_reports_no_load_takes_moved_clients_after_those_that_do() {
    // From London eu-north is nearer than us-east, but it reports no load: us-east, which
    // does, takes what it admits first, and eu-north the rest.
    let silent_north = [("eu-west", 1.0, 0.6, 0.0), ("us-east", 0.5, 1.0, 0.5)];
    let counts = spread(&load_table(LOAD_TARGET, &silent_north));
    near(&counts, "us-east", 0.2);
    near(&counts, "eu-north", 0.2);
    // Reporting room, eu-north is asked in its own place: first.
    let reporting = [
        silent_north[0],
        silent_north[1],
        ("eu-north", 0.5, 1.0, 1.0),
    ];
    let counts = spread(&load_table(LOAD_TARGET, &reporting));
    near(&counts, "eu-north", 0.4);
    assert_eq!(share(&counts, "us-east"), 0.0, "{counts:?}");
}

#[test]
fn below_the_target_no_client_moves_and_nothing_is_hashed() {
    let loads = [
        ("eu-west", 0.79, 1.0, 1.0),
        ("eu-north", 0.4, 1.0, 1.0),
        ("us-east", 0.7, 1.0, 1.0),
    ];
    let counts = spread(&load_table(LOAD_TARGET, &loads));
    assert_eq!(share(&counts, "eu-west"), 1.0, "{counts:?}");
    let table = load_table(LOAD_TARGET, &loads);
    let service = api(&table);
    let (client, _) = service.client("2001:db8::1".parse().expect("ip"));
    let Decision::Regions { scope, .. } = service.decision_for(&client) else {
        panic!("regions");
    };
    assert_eq!(scope, 32, "the place's network, not a /56");
}

#[test]
fn with_no_room_anywhere_each_region_keeps_its_clients() {
    let loads = [
        ("eu-west", 1.0, 0.6, 0.0),
        ("eu-north", 0.9, 1.0, 0.0),
        ("us-east", 0.85, 0.9, 1.0),
    ];
    let counts = spread(&load_table(LOAD_TARGET, &loads));
    assert_eq!(share(&counts, "eu-west"), 1.0, "{counts:?}");
}

#[test]
fn load_never_sends_a_client_outside_its_rule() {
    // EU clients may only go to EU regions: both are over target, us-east is idle.
    let service = format!(
        "{LOAD_TARGET}{}",
        &SOVEREIGN[SOVEREIGN.find("    rules").expect("rules")..]
    );
    let loads = [
        ("eu-west", 1.2, 0.5, 0.0),
        ("eu-north", 0.95, 0.8, 0.0),
        ("us-east", 0.1, 1.0, 1.0),
    ];
    let table = load_table(&service, &loads);
    let counts = spread(&table);
    assert_eq!(share(&counts, "us-east"), 0.0, "{counts:?}");
    // With room in eu-north, eu-west's moved clients go there, and only there.
    let table = load_table(&service, &[loads[0], ("eu-north", 0.5, 1.0, 1.0), loads[2]]);
    let counts = spread(&table);
    assert_eq!(share(&counts, "us-east"), 0.0, "{counts:?}");
    near(&counts, "eu-north", 0.5);
}

#[test]
fn a_moved_or_kept_answer_holds_for_the_subnet_and_explain_says_why() {
    let loads = [
        ("eu-west", 0.92, 0.87, 0.0),
        ("eu-north", 0.85, 1.0, 0.8),
        ("us-east", 0.9, 1.0, 0.0),
    ];
    let table = load_table(LOAD_TARGET, &loads);
    let service = api(&table);
    let mut said = BTreeMap::new();
    for i in 0..400 {
        let client = european(&subnet(i)).at(service);
        let Decision::Regions { scope, .. } = service.decision_for(&client) else {
            panic!("regions");
        };
        assert_eq!(scope, 24);
        let mut lines = Lines(Vec::new());
        service.decide(&client, &mut lines);
        let line = lines.0.iter().find(|l| l.starts_with("eu-west load"));
        *said.entry(line.cloned().unwrap_or_default()).or_insert(0) += 1;
    }
    let figures = "eu-west load 92% (target 80%): keeps 87% of its clients";
    let moved = format!(
        "{figures}; this client's subnet is moved to eu-north (it admits 80% of the clients moved to it)"
    );
    let stuck = format!(
        "{figures}; this client's subnet would move, but the regions it may go to admit no more: it stays"
    );
    let kept = format!("{figures}; this client's subnet is kept");
    assert!(said.get(&moved).is_some_and(|&n| n > 5), "{said:?}");
    assert!(said.get(&stuck).is_some_and(|&n| n > 0), "{said:?}");
    assert!(said.get(&kept).is_some_and(|&n| n > 200), "{said:?}");
    assert_eq!(said.len(), 3, "{said:?}");
}

#[test]
fn a_load_decision_made_in_advance_equals_the_one_made_per_query() {
    // Tokyo's nearest of these is eu-north, which keeps half (or none); the others take what
    // they admit. How many different first answers Tokyo's subnets get: kept and two
    // destinations; all stuck; two destinations and stuck.
    let cases = [
        (
            [
                ("eu-north", 1.0, 0.5, 0.0),
                ("eu-west", 0.4, 1.0, 0.6),
                ("us-east", 0.7, 1.0, 1.0),
            ],
            3,
        ),
        (
            [
                ("eu-north", 1.0, 0.5, 0.0),
                ("eu-west", 0.9, 1.0, 0.0),
                ("us-east", 0.9, 1.0, 0.0),
            ],
            1,
        ),
        (
            [
                ("eu-north", 1.0, 0.0, 0.0),
                ("eu-west", 0.2, 1.0, 0.5),
                ("us-east", 0.6, 1.0, 0.5),
            ],
            3,
        ),
    ];
    for (loads, answered) in cases {
        for answers in ["", "    answers: 2\n"] {
            let table = load_table(&format!("{LOAD_TARGET}{answers}"), &loads);
            let service = api(&table);
            let mut seen = BTreeMap::new();
            for i in 0..4_000u128 {
                let ip = IpAddr::V6((0x2001_0db8_u128 << 96 | i << 72).into());
                let (client, _) = service.client(ip);
                assert!(client.leaf.is_some(), "from the compiled map");
                let in_advance = service.decision_for(&client);
                assert_eq!(in_advance, service.decide(&client, &mut ()), "{ip}");
                if let Decision::Regions { picks, scope, .. } = in_advance {
                    assert_eq!(scope, 56);
                    *seen.entry(picks.positions().to_vec()).or_insert(0) += 1;
                }
            }
            let firsts: std::collections::BTreeSet<u16> = seen.keys().map(|p| p[0]).collect();
            assert_eq!(firsts.len(), answered, "{seen:?} ({loads:?})");
        }
    }
}

/// A client in Hamburg: nearer Stockholm (eu-north) than Dublin (eu-west), both within twice
/// the other's round trip by distance.
fn hamburg() -> Who {
    client("192.0.2.7", "DE", Continent::Europe, 53.55, 10.0)
}

#[test]
fn exploration_stays_within_the_rule_and_health() {
    let service = |explore: &str| {
        format!(
            "    regions: [us-east, eu-west, eu-north, ap-northeast]\n    policy: latency\n    \
             latency: {{ explore: {explore} }}\n    rules:\n      - match: {{ continent: [EU] }}\n        \
             allow: {{ jurisdiction: [eu] }}\n"
        )
    };
    let explored = |table: &RoutingTable, who: &Who| match decide(table, who) {
        Decision::Regions { explored, .. } => explored,
        _ => false,
    };
    // Every subnet explores: the Hamburg client measures eu-west, the other allowed region.
    let all_up = service_table(&service("100%"), &[]);
    assert_eq!(names(&all_up, &hamburg()), ["eu-west"]);
    assert!(explored(&all_up, &hamburg()));
    // Never a region the rule forbids, nor one down or drained.
    for state in [State::Down, State::Drained] {
        let table = service_table(&service("100%"), &[("eu-west", state)]);
        assert_eq!(names(&table, &hamburg()), ["eu-north"], "eu-west {state:?}");
        assert!(!explored(&table, &hamburg()));
    }
    let none = service_table(
        &service("100%"),
        &[("eu-west", State::Down), ("eu-north", State::Down)],
    );
    assert!(
        matches!(decide(&none, &hamburg()), Decision::FailClosed { .. }),
        "fails closed, explores nothing outside the EU"
    );
    // Without exploration: the nearest, as `nearest` answers when nothing is measured.
    let quiet = service_table(&service("0%"), &[]);
    assert_eq!(names(&quiet, &hamburg()), ["eu-north"]);
    assert!(!explored(&quiet, &hamburg()));
}
