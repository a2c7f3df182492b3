//! The decision, exhaustively, without sockets: zones parsed from YAML, region states set by
//! hand.

use std::{net::IpAddr, path::Path};

use super::*;
use crate::{
    config::{self, FailClosed},
    geo::{Continent, CountryCode, Located, Location},
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

/// A table for `service` (YAML of one service named api) with the given region states.
fn service_table(service: &str, states: &[(&str, State)]) -> RoutingTable {
    let text = format!("{ZONE}  api:\n{service}");
    let zone = config::parse(Path::new("t.yaml"), &text, 1).expect("valid zone");
    let plan = Plan::new(std::slice::from_ref(&zone), &Metrics::new());
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
    RoutingTable::build(&plan, &states)
}

fn api(table: &RoutingTable) -> &ServiceRoutes {
    let name = b"\x03api\x03llm\x07example\x03com\x00";
    table
        .zone_for(name)
        .and_then(|z| z.service_named(name))
        .expect("service")
}

fn client(ip: &str, country: &str, continent: Continent, lat: f64, lon: f64) -> Client {
    Client {
        ip: ip.parse().expect("ip"),
        location: Located::Known(Location::new(
            Some(Coordinates { lat, lon }),
            CountryCode::parse(country),
            Some(continent),
            16,
        )),
    }
}

/// A client in London: nearer Dublin (eu-west) than Stockholm (eu-north).
fn european(ip: &str) -> Client {
    client(ip, "GB", Continent::Europe, 51.5, -0.1)
}

fn american(ip: &str) -> Client {
    client(ip, "US", Continent::NorthAmerica, 40.7, -74.0)
}

/// Region names answered, best first, as the query path asks: every test of shares, hashes
/// and network rules below also shows that such decisions are not remembered per place.
fn names(table: &RoutingTable, who: &Client) -> Vec<String> {
    let service = api(table);
    match service.decision_for(who) {
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
    let unknown = Client {
        ip: "10.0.0.1".parse().expect("ip"),
        location: Located::Unknown { prefix_len: 8 },
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
    match api(&table).decide(&european("192.0.2.1"), &mut ()) {
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
        api(&table).decide(&european("192.0.2.1"), &mut ()),
        Decision::FailClosed { .. }
    ));
    match api(&table).decide(&american("198.51.100.1"), &mut ()) {
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
        let decision = api(&table).decide(&european("192.0.2.1"), &mut ());
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

#[test]
fn the_scope_covers_what_decided() {
    let scope = |service: &str, who: &Client| match api(&service_table(service, &[]))
        .decide(who, &mut ())
    {
        Decision::Regions { scope, .. }
        | Decision::FailClosed { scope, .. }
        | Decision::ServFail { scope } => scope,
    };
    let us = american("198.51.100.1");
    assert_eq!(
        scope("    regions: [us-east, eu-west]\n", &us),
        16,
        "the GeoIP network"
    );
    assert_eq!(
        scope("    regions: [us-east]\n", &us),
        0,
        "nothing depended on the client"
    );
    assert_eq!(
        scope(
            "    regions: [us-east, eu-west]\n    policy: priority\n",
            &us
        ),
        0
    );
    assert_eq!(
        scope(
            "    regions: [us-east, eu-west]\n    policy: weighted\n",
            &us
        ),
        24,
        "the hash's /24"
    );
    let v6 = Client {
        ip: "2001:db8::1".parse::<IpAddr>().expect("ip"),
        location: Located::Unknown { prefix_len: 32 },
    };
    assert_eq!(
        scope(
            "    regions: [us-east, eu-west]\n    policy: weighted\n",
            &v6
        ),
        56,
        "the hash's /56"
    );
    let network_rule = "    regions: [us-east, eu-west]\n    policy: priority\n    rules:\n      - match: { network: [10.0.0.0/8] }\n        prefer: [eu-west]\n";
    assert_eq!(scope(network_rule, &american("10.1.2.3")), 8);
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
    api(&table).decide(&european("192.0.2.1"), &mut lines);
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
    let plan = Plan::new(std::slice::from_ref(&zone), &Metrics::new());
    RoutingTable::build(&plan, &states)
}

#[test]
fn large_services_decide_from_the_remembered_nearest_exactly_as_from_a_full_sort() {
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
            // Twice: the second answer comes from what the first remembered.
            for _ in 0..2 {
                assert_eq!(
                    service.decide(&who, &mut ()),
                    service.decide(&who, &mut Listening),
                    "seed {seed}, client {i} at {lat},{lon}"
                );
            }
        }
    }
}

#[test]
fn remembered_decisions_are_those_of_the_current_snapshot() {
    let service = "    regions: [us-east, eu-west, eu-north, ap-northeast]\n";
    let up = service_table(service, &[]);
    let london = european("192.0.2.1");
    assert!(api(&up).remembered_as.is_some(), "the place alone decides");
    assert_eq!(names(&up, &london), ["eu-west"]);
    assert_eq!(names(&up, &london), ["eu-west"], "from memory");
    // Another client of the same place is answered from memory, and the same.
    assert_eq!(names(&up, &european("198.51.100.7")), ["eu-west"]);
    let down = service_table(service, &[("eu-west", State::Down)]);
    assert_eq!(
        names(&down, &london),
        ["eu-north"],
        "the new snapshot decides"
    );
    assert_eq!(
        names(&up, &london),
        ["eu-west"],
        "the old one still has its own"
    );
    for i in 0..500u32 {
        let lat = f64::from(i % 170) - 85.0;
        let lon = f64::from((i * 37) % 360) - 180.0;
        let who = client(&subnet(i), "GB", Continent::Europe, lat, lon);
        for table in [&up, &down] {
            let service = api(table);
            assert_eq!(service.decision_for(&who), service.decide(&who, &mut ()));
        }
    }
}

#[test]
fn decisions_that_hash_the_subnet_or_test_the_network_are_not_remembered() {
    let hashed = [
        (
            "    regions: [eu-west, us-east]\n    policy: weighted\n",
            &[][..],
        ),
        (
            "    regions: [us-east, eu-north]\n    canary: { region: eu-north, share: 5% }\n",
            &[],
        ),
        (
            "    regions: [us-east, eu-west]\n    shed: 50%\n",
            &[("eu-west", State::Degraded)],
        ),
        (
            "    regions: [us-east, eu-west]\n    rules:\n      - match: { network: [192.0.2.0/24] }\n        prefer: [eu-west]\n",
            &[],
        ),
    ];
    for (service, states) in hashed {
        let table = service_table(service, states);
        assert!(api(&table).remembered_as.is_none(), "{service}");
    }
    let shed_but_healthy = service_table("    regions: [us-east, eu-west]\n    shed: 50%\n", &[]);
    assert!(api(&shed_but_healthy).remembered_as.is_some());
}

#[test]
fn a_rebuilt_plan_keeps_the_zones_of_the_same_file_reading_and_compiles_the_rest() {
    let com = format!("{ZONE}  api:\n    regions: [us-east, eu-west]\n");
    let org = com.replace("llm.example.com.", "llm.example.org.");
    let read = |text: &str| config::parse(Path::new("t.yaml"), text, 1).expect("valid zone");
    let metrics = Metrics::new();
    let (com_zone, org_zone) = (read(&com), read(&org));
    let before = Plan::new(&[com_zone.clone(), org_zone.clone()], &metrics);
    // llm.example.com. as it was read (its data shared); llm.example.org. read again.
    let org_again = read(&org);
    let after = before.rebuilt(&[com_zone, org_again.clone()], &metrics);
    let service = |plan: &Plan, i: usize| Arc::clone(&plan.zones[i].services[0]);
    assert!(Arc::ptr_eq(&service(&before, 0), &service(&after, 0)));
    assert!(!Arc::ptr_eq(&service(&before, 1), &service(&after, 1)));
    assert!(after.has_data(&org_again.data));
    assert!(!after.has_data(&org_zone.data));
}
