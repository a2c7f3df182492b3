//! The fleet under faults, three instances over real sockets: a partition (peers reach each
//! other through proxies the test cuts), a clock two hours ahead or behind (the real binary,
//! its clock moved by `REGIONDNS_TEST_CLOCK_OFFSET`), a zone reload during a drain, drains
//! taken at two instances at the same moment, and peers' input that must be refused.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    ADMIN_TOKEN, EU_WEST, Endpoint, FLEET_TOKEN, Member, US_EAST, answer, binary, fleet_flags,
    fleet_json, members, secrets, start, start_fleet, until_all_answer, until_peers_reachable,
};
use crate::common::{Server, dublin_checked_zone, http, http_with_body, region_load, until_logged};

/// Probes every 250 ms: three servers in one test process keep to it within 3 intervals.
fn checked_zone(endpoint: &Endpoint) -> String {
    dublin_checked_zone(&endpoint.url(), "").replace(
        "interval: 100ms, timeout: 80ms",
        "interval: 250ms, timeout: 200ms",
    )
}

/// Three instances on the checked zone, every one answering eu-west.
struct Fleet {
    _endpoint: Endpoint,
    _secrets: tempfile::TempDir,
    zone: String,
    members: Vec<Member>,
    servers: Vec<Server>,
}

impl Fleet {
    fn start() -> Fleet {
        let endpoint = Endpoint::start();
        let zone = checked_zone(&endpoint);
        let secrets = secrets();
        let members = members();
        let servers = start_fleet(&members, &zone, secrets.path());
        let all: Vec<&Server> = servers.iter().collect();
        until_all_answer(&all, EU_WEST, Duration::from_secs(5));
        Fleet {
            _endpoint: endpoint,
            _secrets: secrets,
            zone,
            members,
            servers,
        }
    }
}

/// Drains (or undrains) eu-west at `server`: the status and the reply's JSON.
fn try_drain(server: &Server, action: &str) -> (u16, serde_json::Value) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let path = format!("/regions/llm.example.com/eu-west/{action}");
    let admin = server.admin.expect("admin");
    let (status, body) = http(admin, "POST", &path, &[("Authorization", &bearer)]);
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: {body}"));
    (status, json)
}

fn url(member: &Member) -> String {
    format!("http://{}", member.fleet)
}

/// The value of a metric's sample (its name and labels as /metrics writes them), 0 if absent.
fn metric(server: &Server, sample: &str) -> f64 {
    let (status, text) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `server`'s /fleet until `holds`, at most `limit`.
fn until_fleet(server: &Server, limit: Duration, holds: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let fleet = fleet_json(server);
        if holds(&fleet) {
            return;
        }
        assert!(start.elapsed() < limit, "{fleet}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The eu-west drain record in `member`'s view, as its fleet listener serves it.
fn view_record(member: &Member) -> serde_json::Value {
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let (status, view) = http(
        member.fleet,
        "GET",
        "/fleet/view",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{view}");
    let view: serde_json::Value = serde_json::from_str(&view).expect("view json");
    let drains = view["drains"].as_array().cloned().unwrap_or_default();
    drains
        .into_iter()
        .find(|d| d["region"] == "eu-west")
        .unwrap_or_default()
}

/// A record's hybrid-clock time, from its text `<NTP64>/<id>`.
fn stamped(record: &serde_json::Value) -> u64 {
    let at = record["at"].as_str().expect("at");
    at.split('/')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("NTP64")
}

#[test]
fn a_clock_two_hours_ahead_is_refused_and_a_restart_keeps_the_fleet_consistent() {
    let endpoint = Endpoint::start();
    let zone = checked_zone(&endpoint);
    let secrets = secrets();
    let m = members();
    let two_hours_ahead = [("REGIONDNS_TEST_CLOCK_OFFSET", "7200")];
    let ns1 = start(&m[0], &[&m[1], &m[2]], &zone, secrets.path());
    let ns2 = start(&m[1], &[&m[0], &m[2]], &zone, secrets.path());
    let skewed = |secrets: &Path| {
        binary(
            &m[2],
            &[url(&m[0]), url(&m[1])],
            &zone,
            secrets,
            &[],
            &two_hours_ahead,
        )
    };
    let ns3 = skewed(secrets.path());
    for server in [&ns1, &ns2, &ns3] {
        until_peers_reachable(server, 2);
    }
    until_all_answer(&[&ns1, &ns2, &ns3], EU_WEST, Duration::from_secs(5));

    // The skewed instance knows it from its peers' views, and refuses the operator's drain.
    until_fleet(&ns3, Duration::from_secs(5), |f| f["clock_skewed"] == true);
    let offset = fleet_json(&ns3)["clock_offset_s"].as_f64().expect("offset");
    assert!((7190.0..7210.0).contains(&offset), "{offset}");
    let (status, reply) = try_drain(&ns3, "drain");
    assert_eq!(status, 409, "{reply}");
    let why = reply["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("clock is 2h") && why.contains("ahead of"),
        "{why}"
    );
    assert!(
        ns3.log().contains("this instance's clock is 2h"),
        "{}",
        ns3.log()
    );

    // A record stamped by that clock reaches a peer anyway (pushed by hand): refused, counted,
    // never merged nor kept.
    let ahead = uhlc::system_time_clock() + uhlc::NTP64::from(Duration::from_secs(7200));
    let record = regiondns::fleet::DrainRecord {
        zone: "llm.example.com.".into(),
        region: "eu-west".into(),
        drained: true,
        at: uhlc::Timestamp::new(ahead, uhlc::ID::rand()),
        by: "ns3".into(),
    };
    let body = serde_json::to_string(&record).expect("record json");
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, reply) = http_with_body(m[0].fleet, "POST", "/fleet/drain", &headers, &body);
    assert_eq!(status, 200, "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("reply json");
    assert_eq!(
        (reply["outcome"].as_str(), reply["reason"].as_str()),
        (Some("refused"), Some("clock_ahead")),
        "{reply}"
    );
    let refused = r#"regiondns_fleet_refused_records_total{reason="clock_ahead"}"#;
    assert_eq!(metric(&ns1, refused), 1.0);
    assert!(!m[0].state.path().join("drains.json").exists(), "kept");
    assert_eq!(answer(&ns1), [EU_WEST]);

    // A drain at a right clock reaches the skewed instance too (its records are in the past
    // there), and every instance answers alike.
    let (status, reply) = try_drain(&ns1, "drain");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["applied"], "applied on 3 of 3", "{reply}");
    until_all_answer(&[&ns1, &ns2, &ns3], US_EAST, Duration::from_secs(1));

    // Restarted, still skewed, it keeps what the fleet said; and an undrain elsewhere reaches it.
    drop(ns3);
    let ns3 = skewed(secrets.path());
    assert_eq!(answer(&ns3), [US_EAST], "{}", ns3.log());
    until_peers_reachable(&ns3, 2);
    let (status, reply) = try_drain(&ns2, "undrain");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["applied"], "applied on 3 of 3", "{reply}");
    until_all_answer(&[&ns1, &ns2, &ns3], EU_WEST, Duration::from_secs(1));
    let start = Instant::now();
    while !m.iter().map(view_record).all(|r| r == view_record(&m[0])) {
        assert!(start.elapsed() < Duration::from_secs(1), "views differ");
        std::thread::sleep(Duration::from_millis(20));
    }

    // ns2 restarted alone with its clock two hours behind: the undrain it wrote is now ahead of
    // its clock. It stays in force, and a drain there loses to it with a 409 that names it.
    drop(ns2);
    drop((ns1, ns3));
    let behind = [("REGIONDNS_TEST_CLOCK_OFFSET", "-7200")];
    let ns2 = binary(&m[1], &[], &zone, secrets.path(), &[], &behind);
    assert_eq!(answer(&ns2), [EU_WEST]);
    assert!(
        ns2.log().contains("ahead of this instance's clock"),
        "{}",
        ns2.log()
    );
    let (status, reply) = try_drain(&ns2, "drain");
    assert_eq!(status, 409, "{reply}");
    let why = reply["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("a newer record wins (undrained at ns2"),
        "{why}"
    );
    assert_eq!(answer(&ns2), [EU_WEST]);
}

#[test]
fn a_zone_reload_during_a_drain_keeps_the_drain_on_every_instance() {
    let fleet = Fleet::start();
    let (zone, servers) = (&fleet.zone, &fleet.servers);
    let all: Vec<&Server> = servers.iter().collect();
    let (status, reply) = try_drain(&servers[0], "drain");
    assert_eq!(
        (status, reply["applied"].as_str()),
        (200, Some("applied on 3 of 3"))
    );
    until_all_answer(&all, US_EAST, Duration::from_secs(1));

    // eu-west's check changes: its health starts afresh, its drain must not.
    let edited = zone.replace("/health\"", "/health?v=2\"");
    assert_ne!(&edited, zone);
    for server in servers {
        std::fs::write(server.dir.path().join("zones/llm.yaml"), &edited).expect("edit");
    }
    for server in servers {
        until_logged(server, "reloaded (", 1);
    }
    for _ in 0..10 {
        for server in servers {
            assert_eq!(answer(server), [US_EAST], "{}", server.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for server in servers {
        let (status, body) = http(server.admin.expect("admin"), "GET", "/regions", &[]);
        assert_eq!(status, 200);
        let regions: serde_json::Value = serde_json::from_str(&body).expect("regions");
        let eu = regions["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["region"] == "eu-west"))
            .cloned()
            .unwrap_or_else(|| panic!("{regions}"));
        assert_eq!(eu["state"], "drained", "{eu}");
    }
}

/// Two instances drain and undrain at the same moment: the later record wins everywhere.
#[test]
fn drains_taken_at_two_instances_at_once_end_in_the_later_one_everywhere() {
    let fleet = Fleet::start();
    let (m, servers) = (&fleet.members, &fleet.servers);
    let all: Vec<&Server> = servers.iter().collect();
    for round in 0..3 {
        let barrier = Barrier::new(2);
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                barrier.wait();
                try_drain(&servers[0], "drain")
            });
            let b = scope.spawn(|| {
                barrier.wait();
                try_drain(&servers[1], "undrain")
            });
            (a.join().expect("ns1"), b.join().expect("ns2"))
        });
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let later = if stamped(&a.1["record"]) > stamped(&b.1["record"]) {
            &a.1
        } else {
            &b.1
        };
        let expected = if later["record"]["drained"] == true {
            US_EAST
        } else {
            EU_WEST
        };
        until_all_answer(&all, expected, Duration::from_secs(1));
        // Views follow within a board's delay (250 ms) when no state changed.
        let start = Instant::now();
        loop {
            let records: Vec<_> = m.iter().map(view_record).collect();
            if records.iter().all(|r| *r == later["record"]) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "round {round}: {records:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        try_drain(&servers[2], "undrain");
        until_all_answer(&all, EU_WEST, Duration::from_secs(1));
    }
}

/// A TCP proxy on loopback that the test can cut: new connections are closed at once and open
/// ones are shut down, as a partition would.
struct Link {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind link");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_cut, streams) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let pairs = [(&client, &server), (&server, &client)].map(|(from, to)| {
                    (
                        from.try_clone().expect("clone"),
                        to.try_clone().expect("clone"),
                    )
                });
                let mut streams = streams.lock().expect("lock");
                streams.extend([client, server]);
                for (mut from, mut to) in pairs {
                    std::thread::spawn(move || {
                        let mut buffer = [0; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buffer) {
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Link { addr, cut, open }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self.open.lock().expect("lock").drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_partitioned_instance_decides_alone_says_so_and_catches_up_within_a_second() {
    let endpoint = Endpoint::start();
    let zone = checked_zone(&endpoint);
    let secrets = secrets();
    let m = members();
    // links[i][j]: the way from instance i to instance j's fleet listener.
    let links: Vec<Vec<Option<Link>>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| (i != j).then(|| Link::to(m[j].fleet)))
                .collect()
        })
        .collect();
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let urls: Vec<String> = links[i].iter().flatten().map(Link::url).collect();
            let flags = fleet_flags(&m[i], &urls, secrets.path());
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Server::start_with(&zone, &flags)
        })
        .collect();
    for server in &servers {
        until_peers_reachable(server, 2);
    }
    let all: Vec<&Server> = servers.iter().collect();
    until_all_answer(&all, EU_WEST, Duration::from_secs(5));
    until_fleet(&servers[0], Duration::from_secs(3), |f| {
        f["deciding_alone"] == false
    });

    // ns1 is cut off from both peers, both ways.
    let ns1_links = || {
        let from = links[0].iter().flatten();
        let to = [&links[1][0], &links[2][0]].into_iter().flatten();
        from.chain(to)
    };
    ns1_links().for_each(|link| link.set_cut(true));
    until_fleet(&servers[0], Duration::from_secs(3), |f| {
        f["deciding_alone"] == true
    });
    until_logged(&servers[0], "this instance decides health alone", 1);

    // A drain taken meanwhile reaches the two that can hear each other, and says who missed it.
    let (status, reply) = try_drain(&servers[1], "drain");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["applied"], "applied on 2 of 3", "{reply}");
    let said: Vec<&str> = reply["peers"]
        .as_object()
        .map(|peers| peers.values().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(said.len(), 2, "{reply}");
    assert!(said.iter().any(|s| s.starts_with("not asked")), "{reply}");
    // The other peer may have had the record from a view already: in force either way.
    assert!(
        said.iter().any(|s| ["merged", "known"].contains(s)),
        "{reply}"
    );
    until_all_answer(&[&servers[1], &servers[2]], US_EAST, Duration::from_secs(1));
    assert_eq!(answer(&servers[0]), [EU_WEST], "alone, it does not know");

    // Healed: it has the newer drain within a second, and says it decides with the fleet again.
    ns1_links().for_each(|link| link.set_cut(false));
    let took = until_all_answer(&all, US_EAST, Duration::from_secs(1));
    eprintln!("the partitioned instance caught up in {took:?}");
    until_logged(&servers[0], "health is decided by the fleet's majority", 1);
}

/// A fleet listener the test serves itself: every `GET /fleet/view` gets `view`.
fn fake_peer(view: serde_json::Value) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake peer");
    let addr = listener.local_addr().expect("addr");
    let body = view.to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn a_peers_input_is_checked_for_identity_region_load_and_size() {
    let endpoint = Endpoint::start();
    let zone = checked_zone(&endpoint);
    let secrets = secrets();
    let mut m = members();
    // ns3 calls itself ns2; ns1 also lists its own fleet listener as a peer.
    m[2].name = "ns2";
    let rogue = fake_peer(serde_json::json!({
        "instance": "rogue",
        "config_hash": "",
        "geoip_build": "",
        "regions": [{
            "zone": "llm.example.com.", "region": "eu-west", "probed": "up", "reason": "",
            "probe_age_ms": 10, "probes": 1, "load": -5.0
        }],
        "drains": []
    }));
    let urls = [
        url(&m[0]),
        url(&m[1]),
        url(&m[2]),
        format!("http://{rogue}"),
    ];
    let flags = fleet_flags(&m[0], &urls, secrets.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ns1 = Server::start_with(&zone, &flags);
    let ns2 = start(&m[1], &[&m[0]], &zone, secrets.path());
    let twin = start(&m[2], &[&m[0]], &zone, secrets.path());
    let peer_errors = |f: &serde_json::Value| -> Vec<String> {
        let peers = f["peers"].as_array().cloned().unwrap_or_default();
        peers
            .iter()
            .filter_map(|p| p["error"].as_str().map(str::to_owned))
            .collect()
    };
    // The twin may start listening after ns1's first poll: wait for what it says of each peer.
    until_fleet(&ns1, Duration::from_secs(5), |f| {
        let errors = peer_errors(f);
        errors.len() == 2 && !errors.iter().any(|e| e.contains("Connection refused"))
    });
    let fleet = fleet_json(&ns1);
    let errors = peer_errors(&fleet);
    assert_eq!(errors.len(), 2, "{fleet}");
    assert!(
        errors.iter().any(|e| e.contains("names this instance")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("two peers share a name")),
        "{errors:?}"
    );
    // ns1, ns2 counted once, and the rogue: never the twin, never ns1 twice. A peer's vote
    // counts once its first probe is in its view.
    until_fleet(&ns1, Duration::from_secs(3), |f| {
        f["regions"][0]["voters"] == 3
    });
    for _ in 0..10 {
        let voters = fleet_json(&ns1)["regions"][0]["voters"].as_u64();
        assert_eq!(voters, Some(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    for reason in ["own_instance", "duplicate_instance", "load"] {
        let sample = format!("regiondns_fleet_refused_views_total{{reason=\"{reason}\"}}");
        assert!(metric(&ns1, &sample) >= 1.0, "{sample}");
    }
    assert_eq!(region_load(&ns1, "eu-west").0, None, "-5 is no load");

    // A record for a region this instance does not serve is refused, and so is a body over
    // 1 MiB; neither changes anything.
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let record = serde_json::json!({
        "zone": "llm.example.com.", "region": "nowhere", "drained": true,
        "at": format!("{}/1", uhlc::system_time_clock()), "by": "ns2"
    });
    let (status, reply) = http_with_body(
        m[0].fleet,
        "POST",
        "/fleet/drain",
        &headers,
        &record.to_string(),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"reason\":\"unknown_region\""), "{reply}");
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 21));
    let (status, _) = http_with_body(m[0].fleet, "POST", "/fleet/drain", &headers, &huge);
    assert_eq!(status, 413);
    assert!(!m[0].state.path().join("drains.json").exists());
    drop((ns2, twin));
}
