//! Load shifting in closed loops, over real sockets: thousands of client subnets query the server
//! continuously (each with its own ECS /24), the test counts the answers each region gets, and
//! each region's health endpoint (served by the test on 127.0.0.1) reports as its load the
//! answers it got since the last probe over a capacity the test sets. What the server answers
//! changes the load it is told, as in production.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};
use serde_json::{Value, json};

use crate::common::{Server, addresses, http, query, region_load, write_mmdb, zone_dir};

/// The probe interval, and the time in which every active client subnet queries once.
const INTERVAL: Duration = Duration::from_secs(1);
const REGIONS: [(&str, &str); 3] = [
    ("eu-west", "203.0.113.20"),
    ("eu-north", "203.0.113.40"),
    ("us-east", "203.0.113.10"),
];
const EU_WEST: usize = 0;
const EU_NORTH: usize = 1;
const US_EAST: usize = 2;
const NO_ANSWER: u8 = u8::MAX;

/// Client networks by city, each a /10 of /24s: London (nearest eu-west, then eu-north), Stockholm
/// (eu-north) and New York (us-east).
fn geoip() -> Vec<(&'static str, Value)> {
    let city = |country: &str, continent: &str, lat: f64, lon: f64| {
        json!({"country": {"iso_code": country}, "continent": {"code": continent},
               "location": {"latitude": lat, "longitude": lon, "accuracy_radius": 50}})
    };
    vec![
        ("81.0.0.0/10", city("GB", "EU", 51.51, -0.09)),
        ("89.0.0.0/10", city("SE", "EU", 59.33, 18.07)),
        ("24.0.0.0/10", city("US", "NA", 40.71, -74.0)),
    ]
}

/// The `n`-th /24 of a city's /10.
fn subnet(first_octet: u8, n: usize) -> String {
    format!("{first_octet}.{}.{}.0/24", n / 256, n % 256)
}

fn zone(urls: &[String], extra_rules: &str) -> String {
    let check = |url: &str| {
        format!(
            "check: {{ http: \"{url}\", interval: 1s, timeout: 500ms, window: 2, load: {{ header: X-Load }} }}"
        )
    };
    format!(
        r#"
origin: llm.example.com.
explain: true
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  eu-west: {{ location: {{ lat: 53.3, lon: -6.3 }}, addresses: [203.0.113.20], jurisdiction: eu, {} }}
  eu-north: {{ location: {{ lat: 59.3, lon: 18.1 }}, addresses: [203.0.113.40], jurisdiction: eu, {} }}
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10], jurisdiction: us, {} }}
services:
  api:
    ttl: 1
    regions: [eu-west, eu-north, us-east]
    load_target: 80%
    load_step: 10%
{extra_rules}"#,
        check(&urls[0]),
        check(&urls[1]),
        check(&urls[2]),
    )
}

/// What the clients saw: answers per region, and each client's last region.
struct Tally {
    answers: [AtomicU64; 3],
    last: Vec<AtomicU8>,
}

impl Tally {
    fn new(clients: usize) -> Tally {
        Tally {
            answers: Default::default(),
            last: (0..clients).map(|_| AtomicU8::new(NO_ANSWER)).collect(),
        }
    }

    fn last(&self, client: usize) -> u8 {
        self.last[client].load(Ordering::Relaxed)
    }
}

/// A region's health endpoint: 200 with `X-Load` = its answers per second since the last probe
/// over its capacity (answers per second).
struct LoadEndpoint {
    addr: SocketAddr,
    capacity: Arc<AtomicU64>,
    reported: Arc<Mutex<Vec<f64>>>,
}

impl LoadEndpoint {
    fn start(region: usize, tally: Arc<Tally>, capacity: f64) -> LoadEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
        let addr = listener.local_addr().expect("addr");
        let capacity = Arc::new(AtomicU64::new(capacity.to_bits()));
        let reported: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (cap, log) = (Arc::clone(&capacity), Arc::clone(&reported));
        std::thread::spawn(move || {
            // The first probe finds no interval to measure: it gets no figure (unknown load).
            let mut before = None;
            for stream in listener.incoming().map_while(Result::ok) {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut request = [0; 4096];
                let _ = stream.read(&mut request);
                let now = (
                    Instant::now(),
                    tally.answers[region].load(Ordering::Relaxed),
                );
                let header = before.map_or(String::new(), |(at, count): (Instant, u64)| {
                    let seconds = now.0.duration_since(at).as_secs_f64().max(0.001);
                    let rate = (now.1 - count) as f64 / seconds;
                    let load = rate / f64::from_bits(cap.load(Ordering::Relaxed));
                    log.lock().expect("lock").push(load);
                    format!("X-Load: {load:.4}\r\n")
                });
                before = Some(now);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\n{header}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        LoadEndpoint {
            addr,
            capacity,
            reported,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn set_capacity(&self, answers_per_second: f64) {
        self.capacity
            .store(answers_per_second.to_bits(), Ordering::Relaxed);
    }

    fn last_reported(&self) -> f64 {
        let reported = self.reported.lock().expect("lock");
        reported.last().copied().unwrap_or(f64::NAN)
    }
}

/// Client subnets querying the server continuously: each active one once per [`INTERVAL`],
/// spread evenly over it.
struct Clients {
    subnets: Vec<String>,
    /// Which of them query now (by index).
    active: Mutex<Vec<usize>>,
    stop: AtomicBool,
    sent: AtomicUsize,
}

impl Clients {
    fn start(
        server: SocketAddr,
        subnets: Vec<String>,
        active: Vec<usize>,
        tally: &Arc<Tally>,
    ) -> Arc<Clients> {
        let clients = Arc::new(Clients {
            subnets,
            active: Mutex::new(active),
            stop: AtomicBool::new(false),
            sent: AtomicUsize::new(0),
        });
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind clients");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let receiving = socket.try_clone().expect("clone socket");
        let queries: Vec<Vec<u8>> = clients
            .subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| {
                let mut message = query("api.llm.example.com.", RecordType::A, Some(subnet));
                message.metadata.id = i as u16;
                message.to_vec().expect("encode")
            })
            .collect();
        let sending = Arc::clone(&clients);
        std::thread::spawn(move || {
            const SLOTS: u32 = 50;
            let mut next = Instant::now();
            while !sending.stop.load(Ordering::Relaxed) {
                let active = sending.active.lock().expect("lock").clone();
                for slot in 0..SLOTS as usize {
                    let share = active.len().div_ceil(SLOTS as usize);
                    for &client in active.iter().skip(slot * share).take(share) {
                        let _ = socket.send_to(&queries[client], server);
                        sending.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    next += INTERVAL / SLOTS;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        });
        let (counting, stopping) = (Arc::clone(tally), Arc::clone(&clients));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while !stopping.stop.load(Ordering::Relaxed) {
                let Ok(n) = receiving.recv(&mut buffer) else {
                    continue;
                };
                let Ok(response) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let client = usize::from(response.metadata.id);
                let answered = addresses(&response);
                let Some(region) = REGIONS
                    .iter()
                    .position(|(_, address)| answered.first().map(String::as_str) == Some(address))
                else {
                    continue;
                };
                counting.answers[region].fetch_add(1, Ordering::Relaxed);
                if let Some(last) = counting.last.get(client) {
                    last.store(region as u8, Ordering::Relaxed);
                }
            }
        });
        clients
    }

    fn activate(&self, active: Vec<usize>) {
        *self.active.lock().expect("lock") = active;
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Each region's answers in the last interval, as shares of all.
fn shares_since(tally: &Tally, before: &mut [u64; 3]) -> [f64; 3] {
    let now: [u64; 3] = std::array::from_fn(|r| tally.answers[r].load(Ordering::Relaxed));
    let delta: [u64; 3] = std::array::from_fn(|r| now[r] - before[r]);
    *before = now;
    let total = delta.iter().sum::<u64>().max(1) as f64;
    std::array::from_fn(|r| delta[r] as f64 / total)
}

/// The clients (of `range`) that the last answer sent elsewhere than `region`.
fn moved(tally: &Tally, range: std::ops::Range<usize>, region: usize) -> BTreeSet<usize> {
    range
        .filter(|&c| {
            let last = tally.last(c);
            last != NO_ANSWER && usize::from(last) != region
        })
        .collect()
}

struct Loop {
    server: Server,
    endpoints: Vec<LoadEndpoint>,
    tally: Arc<Tally>,
}

fn start_loop(clients: usize, capacities: [f64; 3], rules: &str) -> Loop {
    let tally = Arc::new(Tally::new(clients));
    let endpoints: Vec<LoadEndpoint> = (0..3)
        .map(|r| LoadEndpoint::start(r, Arc::clone(&tally), capacities[r]))
        .collect();
    let urls: Vec<String> = endpoints.iter().map(LoadEndpoint::url).collect();
    let dir = zone_dir(&zone(&urls, rules));
    write_mmdb(&dir.path().join("geo.mmdb"), &geoip());
    let server = Server::start_in(dir, &["--rrl-rate", "0"]);
    Loop {
        server,
        endpoints,
        tally,
    }
}

/// The value of the series `name` (with its labels) in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(name));
    let value = line.and_then(|l| l.rsplit(' ').next());
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Waits for the next interval's end.
fn tick(next: &mut Instant) {
    *next += INTERVAL;
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
}

#[test]
fn a_region_over_its_target_settles_there_and_moves_the_same_subnets() {
    const CLIENTS: usize = 10_000;
    let demand = CLIENTS as f64 / INTERVAL.as_secs_f64();
    // eu-west first has room for twice the demand; the others for all of it.
    let run = start_loop(CLIENTS, [2.0 * demand, demand, demand], "");
    let london: Vec<String> = (0..CLIENTS).map(|n| subnet(81, n)).collect();
    let clients = Clients::start(run.server.addr, london, (0..CLIENTS).collect(), &run.tally);
    let mut next = Instant::now();
    let mut before = [0u64; 3];

    // Below the target: every client stays in eu-west, whatever the noise.
    for _ in 0..5 {
        tick(&mut next);
        let shares = shares_since(&run.tally, &mut before);
        let (load, kept) = region_load(&run.server, "eu-west");
        println!(
            "below: reported {:.3} smoothed {load:?} kept {kept:.3} shares {shares:.3?}",
            run.endpoints[EU_WEST].last_reported()
        );
        assert_eq!(kept, 1.0, "no client moves below the target");
        assert!(moved(&run.tally, 0..CLIENTS, EU_WEST).is_empty());
    }
    let sent = clients.sent.load(Ordering::Relaxed);
    assert!(sent > 4 * CLIENTS, "the clients kept up: {sent} queries");

    // The capacity falls to 60% of the demand: eu-west's load would be 167%.
    run.endpoints[EU_WEST].set_capacity(0.6 * demand);
    let mut trace = Vec::new();
    for interval in 1..=22 {
        tick(&mut next);
        let shares = shares_since(&run.tally, &mut before);
        let (load, kept) = region_load(&run.server, "eu-west");
        let reported = run.endpoints[EU_WEST].last_reported();
        println!(
            "interval {interval:2}: reported {reported:.3} smoothed {:.3} kept {kept:.3} answers eu-west {:.3} eu-north {:.3} us-east {:.3}",
            load.unwrap_or(f64::NAN),
            shares[0],
            shares[1],
            shares[2]
        );
        trace.push((
            interval,
            reported,
            kept,
            moved(&run.tally, 0..CLIENTS, EU_WEST),
        ));
    }
    // Settled within 10 probe intervals, and held there.
    for (interval, reported, _, _) in &trace[10..] {
        assert!(
            (reported - 0.8).abs() <= 0.05,
            "interval {interval}: load {reported:.3}, not at the target 0.8 +- 0.05"
        );
    }
    let settled_kept = trace[10].2;
    assert!(
        (settled_kept - 0.48).abs() <= 0.06,
        "keeps about 0.8 / 1.67: {settled_kept}"
    );
    for (interval, _, kept, _) in &trace[10..] {
        assert!(
            (kept - settled_kept).abs() <= 0.05,
            "interval {interval}: kept {kept:.3} moved more than 5 points from {settled_kept:.3}"
        );
    }
    // The same subnets stay moved while the load holds.
    let (settled_moved, last_moved) = (&trace[11].3, &trace[21].3);
    let came_back = settled_moved.difference(last_moved).count();
    assert!(
        came_back <= CLIENTS / 100,
        "{came_back} of {} moved subnets came back",
        settled_moved.len()
    );
    // Explained over DNS, for a moved subnet and a kept one.
    let explained = |client: usize| {
        let subnet = subnet(81, client);
        let ask = query(
            "_explain.api.llm.example.com.",
            RecordType::TXT,
            Some(&subnet),
        );
        let response = crate::common::udp(run.server.addr, &ask);
        let lines: Vec<String> = response
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        lines.join("\n")
    };
    let moved_client = *last_moved.iter().next().expect("a moved client");
    let kept_client = (0..CLIENTS)
        .find(|c| !last_moved.contains(c))
        .expect("a kept client");
    let text = explained(moved_client);
    // The load it explains by is the settled one: 0.8 +- 0.05, as the trace held it.
    let explained_load: Option<u32> = text
        .split("eu-west load ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|percent| percent.parse().ok());
    assert!(
        explained_load.is_some_and(|percent| percent.abs_diff(80) <= 5),
        "{text}"
    );
    assert!(
        text.contains("this client's subnet is moved to eu-"),
        "{text}"
    );
    let text = explained(kept_client);
    assert!(text.contains("this client's subnet is kept"), "{text}");
    // Seen on /metrics and in the timeline.
    let admin = run.server.admin.expect("admin");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]);
    assert!(
        metrics.contains("regiondns_region_load{zone=\"llm.example.com.\",region=\"eu-west\"}"),
        "{metrics}"
    );
    let moved_share = metric(
        &metrics,
        "regiondns_load_moved_share{zone=\"llm.example.com.\",service=\"api.llm.example.com.\",region=\"eu-west\"}",
    );
    assert!(
        (moved_share - (1.0 - settled_kept)).abs() <= 0.05,
        "{moved_share}"
    );
    let moved_answers = metric(
        &metrics,
        "regiondns_load_weighed_answers_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\",region=\"eu-west\",outcome=\"moved\"}",
    );
    assert!(moved_answers > 50_000.0, "{moved_answers}");
    let (_, events) = http(admin, "GET", "/events", &[]);
    assert!(events.contains("load_shift_start"), "{events}");
    let (_, page) = http(admin, "GET", "/", &[]);
    assert!(page.contains("spark load"), "a load sparkline");
    drop(clients);
}

/// London's clients: 0..3,000; Stockholm's: 3,000..4,000; New York's: 4,000..5,000.
fn cities(london: usize) -> (Vec<String>, Vec<usize>) {
    let mut subnets: Vec<String> = (0..3_000).map(|n| subnet(81, n)).collect();
    subnets.extend((0..1_000).map(|n| subnet(89, n)));
    subnets.extend((0..1_000).map(|n| subnet(24, n)));
    let active = (0..london).chain(3_000..5_000).collect();
    (subnets, active)
}

/// Runs a promotion (London's clients x3) on regions of `capacities` for 14 intervals after 4
/// without it: the loads each interval reported, and how many of London's clients ended at
/// eu-north and at us-east.
fn promotion(capacities: [f64; 3]) -> (Vec<Vec<f64>>, [usize; 2]) {
    let run = start_loop(5_000, capacities, "");
    let (subnets, active) = cities(1_000);
    let clients = Clients::start(run.server.addr, subnets, active, &run.tally);
    let mut next = Instant::now();
    let mut before = [0u64; 3];
    for _ in 0..4 {
        tick(&mut next);
        shares_since(&run.tally, &mut before);
    }
    assert!(
        moved(&run.tally, 0..1_000, EU_WEST).is_empty(),
        "below target: all kept"
    );
    clients.activate(cities(3_000).1);
    let mut loads = Vec::new();
    for interval in 1..=14 {
        tick(&mut next);
        let shares = shares_since(&run.tally, &mut before);
        let reported: Vec<f64> = run
            .endpoints
            .iter()
            .map(LoadEndpoint::last_reported)
            .collect();
        println!("interval {interval:2}: loads {reported:.3?} answers {shares:.3?}");
        loads.push(reported);
    }
    for (interval, reported) in loads.iter().enumerate().skip(10) {
        assert!(
            reported[EU_WEST] <= 0.85,
            "interval {}: eu-west at {:.3}, over target + 5 points",
            interval + 1,
            reported[EU_WEST]
        );
    }
    // Nobody else moved: Stockholm and New York keep their regions.
    assert!(moved(&run.tally, 3_000..4_000, EU_NORTH).is_empty());
    assert!(moved(&run.tally, 4_000..5_000, US_EAST).is_empty());
    let to = |region: usize| {
        (0..3_000)
            .filter(|&c| usize::from(run.tally.last(c)) == region)
            .count()
    };
    let moved_to = [to(EU_NORTH), to(US_EAST)];
    println!(
        "London moved: eu-north {}, us-east {}",
        moved_to[0], moved_to[1]
    );
    drop(clients);
    (loads, moved_to)
}

#[test]
fn a_promotion_fills_the_nearest_neighbour_with_room_before_any_go_farther() {
    // 1,000 clients per city; eu-west at 40% of its capacity, eu-north at 20%, us-east at 50%.
    // London's excess (about 1,000 clients) fits in eu-north, nearer than us-east.
    let (loads, [north, east]) = promotion([2_500.0, 5_000.0, 2_000.0]);
    assert!(north > 800, "the excess moved to eu-north: {north}");
    assert!(east <= 30, "none went farther than it had to: {east}");
    assert!(loads.iter().all(|l| l[EU_NORTH] <= 0.8), "{loads:?}");
}

#[test]
fn a_promotion_fills_the_nearest_neighbour_up_to_its_target_and_the_rest_goes_on() {
    // eu-north has room for about 200 of London's 1,000 excess clients (1,000 of its own on a
    // capacity of 1,500); us-east takes the rest.
    let (loads, [north, east]) = promotion([2_500.0, 1_500.0, 10_000.0]);
    // Each figure is the answers of one probe window: a client thread that stalls and catches
    // up moves some from one window to the next (CI saw 0.889 then 0.744 with the answers'
    // shares unchanged). The settled mean says where the region was filled to; no window may
    // be far over the target.
    let settled: Vec<f64> = loads.iter().skip(10).map(|l| l[EU_NORTH]).collect();
    let mean = settled.iter().sum::<f64>() / settled.len() as f64;
    assert!(
        (0.72..=0.86).contains(&mean),
        "eu-north at {mean:.3} over intervals 11-14 ({settled:.3?}): filled to its target"
    );
    assert!(
        settled.iter().all(|&load| (0.65..=0.92).contains(&load)),
        "eu-north's windows {settled:.3?}: none far from its target"
    );
    assert!(north >= 100, "eu-north took its room: {north}");
    assert!(east >= 500, "the rest went on to us-east: {east}");
}

#[test]
fn load_never_sends_eu_clients_outside_the_eu() {
    let rule =
        "    rules:\n      - match: { continent: [EU] }\n        allow: { jurisdiction: [eu] }\n";
    // London's 3,000 clients: eu-west at 120%; Stockholm's 1,000: eu-north at 95%; us-east idle.
    let run = start_loop(5_000, [2_500.0, 1_050.0, 10_000.0], rule);
    let (subnets, _) = cities(3_000);
    let active = (0..4_000).collect();
    let clients = Clients::start(run.server.addr, subnets, active, &run.tally);
    let mut next = Instant::now();
    for interval in 1..=10 {
        tick(&mut next);
        let (load, kept) = region_load(&run.server, "eu-west");
        let (north, _) = region_load(&run.server, "eu-north");
        println!(
            "interval {interval:2}: eu-west smoothed {load:?} kept {kept:.3}, eu-north {north:?}"
        );
        assert_eq!(
            run.tally.answers[US_EAST].load(Ordering::Relaxed),
            0,
            "an EU client was sent to us-east"
        );
        assert!(
            kept >= 0.9 - 1e-9,
            "nothing can move: at most one step outside ({kept})"
        );
    }
    assert!(
        moved(&run.tally, 0..3_000, EU_WEST).is_empty(),
        "both EU regions are full"
    );
    let admin = run.server.admin.expect("admin");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]);
    let stuck = metric(
        &metrics,
        "regiondns_load_weighed_answers_total{zone=\"llm.example.com.\",service=\"api.llm.example.com.\",region=\"eu-west\",outcome=\"stuck\"}",
    );
    assert!(stuck > 0.0, "the clients that could not move are counted");
    drop(clients);
}
