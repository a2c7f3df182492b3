//! Three instances on loopback as a fleet: they agree on health by majority, share drains
//! (which survive a restart through the state directory), and refuse requests without the
//! fleet token. Each instance's fleet listener has a loopback address of its own, so that its
//! peers know it before it starts. Faults (a partition, a clock set wrong, a reload during a
//! drain, drains at the same moment) are in [`faults`].

mod faults;

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;

use crate::common::{
    Server, addresses, dublin_checked_zone, http, load_endpoint, own_loopback, path_arg, query,
    region_load, serve_args, udp, zone_dir,
};

const UK: &str = "81.2.69.0/24";
const EU_WEST: &str = "203.0.113.20";
const US_EAST: &str = "203.0.113.10";
const FLEET_PORT: u16 = 5380;
const ADMIN_TOKEN: &str = "admin-secret-0123456789";
const FLEET_TOKEN: &str = "fleet-secret-0123456789";

/// A health endpoint that fails for the instances named in `failing` (by the `User-Agent`
/// their probes send), and for everyone when it holds "*".
struct Endpoint {
    addr: SocketAddr,
    failing: Arc<Mutex<HashSet<String>>>,
}

impl Endpoint {
    fn start() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
        let addr = listener.local_addr().expect("addr");
        let failing: Arc<Mutex<HashSet<String>>> = Arc::default();
        let shared = Arc::clone(&failing);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let failing = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut request = [0; 4096];
                    let n = stream.read(&mut request).unwrap_or(0);
                    let request = String::from_utf8_lossy(&request[..n]).to_lowercase();
                    let failing = failing.lock().expect("lock");
                    let fails = failing.contains("*")
                        || failing
                            .iter()
                            .any(|name| request.contains(&format!("({name})")));
                    let status = if fails { "503 Unavailable" } else { "200 OK" };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Endpoint { addr, failing }
    }

    fn fail_for(&self, names: &[&str]) {
        let mut failing = self.failing.lock().expect("lock");
        failing.clear();
        failing.extend(names.iter().map(|n| n.to_string()));
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
}

/// One instance's fixed places: its fleet address and state directory.
struct Member {
    name: &'static str,
    fleet: SocketAddr,
    state: tempfile::TempDir,
}

fn members() -> Vec<Member> {
    ["ns1", "ns2", "ns3"]
        .into_iter()
        .map(|name| Member {
            name,
            fleet: SocketAddr::new(own_loopback(), FLEET_PORT),
            state: tempfile::tempdir().expect("state dir"),
        })
        .collect()
}

/// Starts `member` with `peers` as its peers.
fn start(member: &Member, peers: &[&Member], zone: &str, secrets: &Path) -> Server {
    start_with(member, peers, "http", zone, secrets, &[])
}

/// As [`start`], reaching the peers with `scheme`, with `extra` flags.
fn start_with(
    member: &Member,
    peers: &[&Member],
    scheme: &str,
    zone: &str,
    secrets: &Path,
    extra: &[&str],
) -> Server {
    let urls: Vec<String> = peers
        .iter()
        .map(|p| format!("{scheme}://{}", p.fleet))
        .collect();
    let mut flags = fleet_flags(member, &urls, secrets);
    flags.extend(extra.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_with(zone, &flags)
}

/// The `serve` flags that make `member` an instance of the fleet, with its peers at `urls`.
fn fleet_flags(member: &Member, urls: &[String], secrets: &Path) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--nsid",
        member.name,
        "--fleet-listen",
        &member.fleet.to_string(),
        "--state-dir",
        &path_arg(member.state.path()),
        "--admin-token-file",
        &path_arg(&secrets.join("admin")),
        "--fleet-token-file",
        &path_arg(&secrets.join("fleet")),
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    for url in urls {
        flags.extend(["--peer".to_string(), url.clone()]);
    }
    flags
}

/// The real binary as `member`, its peers at `urls`, with `extra` flags and `env`.
fn binary(
    member: &Member,
    urls: &[String],
    zone: &str,
    secrets: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let dir = zone_dir(zone);
    let mut args = serve_args(dir.path(), &["--admin", "127.0.0.1:0"]);
    args.extend(fleet_flags(member, urls, secrets));
    args.extend(extra.iter().map(|f| f.to_string()));
    Server::spawn_with_env(dir, &args, None, env)
}

/// The admin and fleet tokens' files, in a directory of their own.
fn secrets() -> tempfile::TempDir {
    let secrets = tempfile::tempdir().expect("secrets");
    std::fs::write(secrets.path().join("admin"), ADMIN_TOKEN).expect("admin token");
    std::fs::write(secrets.path().join("fleet"), FLEET_TOKEN).expect("fleet token");
    secrets
}

/// Every member started on `zone` with the others as its peers; returned once each reaches
/// them all.
fn start_fleet(m: &[Member], zone: &str, secrets: &Path) -> Vec<Server> {
    let peers_of = |i: usize| -> Vec<&Member> {
        m.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p)
            .collect()
    };
    let servers: Vec<Server> = (0..m.len())
        .map(|i| start(&m[i], &peers_of(i), zone, secrets))
        .collect();
    for server in &servers {
        until_peers_reachable(server, m.len() - 1);
    }
    servers
}

fn answer(server: &Server) -> Vec<String> {
    addresses(&udp(
        server.addr,
        &query("api.llm.example.com.", RecordType::A, Some(UK)),
    ))
}

/// Polls every 20 ms until every server answers the UK client `expected`; how long it took.
fn until_all_answer(servers: &[&Server], expected: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if servers.iter().all(|s| answer(s) == [expected]) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen: Vec<Vec<String>> = servers.iter().map(|s| answer(s)).collect();
    panic!("not all answered {expected} within {limit:?}: {seen:?}");
}

fn fleet_json(server: &Server) -> serde_json::Value {
    let (status, body) = http(server.admin.expect("admin"), "GET", "/fleet", &[]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("fleet json")
}

fn until_peers_reachable(server: &Server, count: usize) {
    let start = Instant::now();
    loop {
        let fleet = fleet_json(server);
        let reachable = fleet["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["reachable"] == true).count());
        if reachable == count {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "peers: {fleet}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn drain(server: &Server, action: &str) -> serde_json::Value {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let path = format!("/regions/llm.example.com/eu-west/{action}");
    let (status, body) = http(
        server.admin.expect("admin"),
        "POST",
        &path,
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("drain json")
}

#[test]
fn a_fleet_agrees_on_health_shares_drains_and_keeps_them_across_restarts() {
    let endpoint = Endpoint::start();
    // Probes every 250 ms: three servers in one test process keep to it within 3 intervals.
    let zone = dublin_checked_zone(&endpoint.url(), "").replace(
        "interval: 100ms, timeout: 80ms",
        "interval: 250ms, timeout: 200ms",
    );
    assert!(zone.contains("interval: 250ms"), "{zone}");
    let secrets = secrets();
    let m = members();
    let servers = start_fleet(&m, &zone, secrets.path());
    let all: Vec<&Server> = servers.iter().collect();
    until_all_answer(&all, EU_WEST, Duration::from_secs(5));

    // One instance's own trouble on the way to the region moves no answer.
    endpoint.fail_for(&["ns1"]);
    std::thread::sleep(Duration::from_millis(2000));
    for server in &servers {
        assert_eq!(answer(server), [EU_WEST], "{}", server.log());
    }
    let ns1 = fleet_json(&servers[0]);
    let region = &ns1["regions"][0];
    assert_eq!(
        (region["probed"].as_str(), region["agreed"].as_str()),
        (Some("down"), Some("up")),
        "{ns1}"
    );
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let views: Vec<String> = m
        .iter()
        .map(|m| http(m.fleet, "GET", "/fleet/view", &[("Authorization", &bearer)]).1)
        .collect();
    assert_eq!(region["voters"], 3, "{ns1}\n{views:#?}");

    // A failure every instance sees moves all of them, within interval x fall + 1 s.
    endpoint.fail_for(&["*"]);
    let moved = until_all_answer(&all, US_EAST, Duration::from_millis(2 * 250 + 1000));
    endpoint.fail_for(&[]);
    until_all_answer(&all, EU_WEST, Duration::from_secs(3));
    eprintln!("the fleet moved in {moved:?}");

    // Without the fleet token, or with another, a peer's request is refused and changes nothing.
    for headers in [vec![], vec![("Authorization", "Bearer wrong")]] {
        let (status, _) = http(m[1].fleet, "GET", "/fleet/view", &headers);
        assert_eq!(status, 401);
        let (status, _) = http(m[1].fleet, "POST", "/fleet/drain", &headers);
        assert_eq!(status, 401);
    }
    let (status, view) = http(
        m[1].fleet,
        "GET",
        "/fleet/view",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{view}");
    assert!(view.contains("\"instance\":\"ns2\""), "{view}");
    assert_eq!(answer(&servers[1]), [EU_WEST]);

    // A drain at one instance reaches the other two within a second.
    let reply = drain(&servers[0], "drain");
    assert_eq!(reply["applied"], "applied on 3 of 3", "{reply}");
    let took = until_all_answer(&all, US_EAST, Duration::from_secs(1));
    eprintln!("the drain reached every instance in {took:?}");

    // A peer that dies: the others go on, and say so.
    let mut servers = servers;
    let ns3 = servers.pop().expect("ns3");
    drop(ns3);
    until_peers_reachable(&servers[0], 1);
    assert_eq!(answer(&servers[0]), [US_EAST]);
    let (status, page) = http(servers[0].admin.expect("admin"), "GET", "/", &[]);
    assert_eq!(status, 200);
    let peers = page
        .split("<table id=\"peers\">")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .expect("the status page's fleet panel");
    assert_eq!(peers.matches("unreachable: ").count(), 1, "{peers}");
    assert!(
        peers.contains(">ns2<") && peers.contains(">ns3<"),
        "{peers}"
    );

    // Stop all, start one alone: the drain is still there.
    drop(servers);
    let alone = start(&m[0], &[], &zone, secrets.path());
    assert_eq!(answer(&alone), [US_EAST], "{}", alone.log());
    assert!(
        alone.log().contains("read back from the state directory"),
        "{}",
        alone.log()
    );

    // An undrain at another instance reaches the restarted one.
    let ns2 = start(&m[1], &[&m[0]], &zone, secrets.path());
    until_peers_reachable(&ns2, 1);
    assert_eq!(answer(&ns2), [US_EAST], "ns2 kept the drain too");
    let reply = drain(&ns2, "undrain");
    assert_eq!(reply["applied"], "applied on 2 of 2", "{reply}");
    until_all_answer(&[&alone, &ns2], EU_WEST, Duration::from_secs(1));
}

/// A CA of the test's own: its certificate (PEM), and a certificate with key for `ip`.
struct Ca {
    pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        Ca {
            pem: issuer.pem(),
            issuer,
        }
    }

    fn certify(&self, ip: std::net::IpAddr) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec![ip.to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

#[test]
fn over_tls_a_peer_is_trusted_only_under_the_ca_it_was_given() {
    let endpoint = Endpoint::start();
    let zone = dublin_checked_zone(&endpoint.url(), "");
    let secrets = secrets();
    let m = members();
    let (ours, other) = (Ca::new("the fleet's CA"), Ca::new("another CA"));
    let (cert, key) = ours.certify(m[0].fleet.ip());
    let file = |name: &str, text: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, text).expect("write pem");
        path_arg(&path)
    };
    let (cert, key) = (file("cert.pem", &cert), file("key.pem", &key));
    let (ours_pem, other_pem) = (file("ours.pem", &ours.pem), file("other.pem", &other.pem));
    let tls = ["--fleet-tls-cert", &cert, "--fleet-tls-key", &key];
    let served = start_with(&m[0], &[], "https", &zone, secrets.path(), &tls);
    assert!(
        served.log().contains("fleet listener on https://"),
        "{}",
        served.log()
    );
    let trusting = start_with(
        &m[1],
        &[&m[0]],
        "https",
        &zone,
        secrets.path(),
        &["--peer-ca", &ours_pem],
    );
    until_peers_reachable(&trusting, 1);
    // The system's roots trust the CA that signed the peer's certificate (SSL_CERT_FILE, read
    // by rustls' platform verifier), but --peer-ca names another: only that one counts.
    let refusing = binary(
        &m[2],
        &[format!("https://{}", m[0].fleet)],
        &zone,
        secrets.path(),
        &["--peer-ca", &other_pem],
        &[("SSL_CERT_FILE", &ours_pem)],
    );
    std::thread::sleep(Duration::from_millis(800));
    let fleet = fleet_json(&refusing);
    let peer = &fleet["peers"][0];
    assert_eq!(peer["reachable"], false, "{fleet}");
    let error = peer["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("certificate"), "{error}");
    // Plain HTTP to the TLS listener, with the right token, gets no HTTP answer at all.
    let mut plain = std::net::TcpStream::connect(m[0].fleet).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = write!(
        plain,
        "GET /fleet/view HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {FLEET_TOKEN}\r\n\r\n"
    );
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains("HTTP/"), "{reply}");
    // The same request over TLS is answered: the token is right.
    let (_, view) = http(trusting.admin.expect("admin"), "GET", "/fleet", &[]);
    assert!(view.contains("\"instance\":\"ns1\""), "{view}");
}

#[test]
fn a_fleet_moves_clients_for_the_load_its_instances_agree_on() {
    // Each instance's probes read another figure for eu-west (a load balancer in front of the
    // region answers each from another backend): 140%, 100% and 120%.
    let west = load_endpoint(&[("ns1", "1.4"), ("ns2", "1.0"), ("ns3", "1.2")], "0.2");
    let east = load_endpoint(&[], "0.2");
    let check = |url: &str| {
        format!(
            "check: {{ http: \"{url}\", interval: 250ms, timeout: 200ms, window: 1, load: {{ header: X-Load }} }}"
        )
    };
    let zone = format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10], {} }}
  eu-west: {{ location: {{ lat: 53.3, lon: -6.3 }}, addresses: [203.0.113.20], {} }}
services:
  api: {{ regions: [us-east, eu-west], load_target: 80%, load_step: 5% }}
"#,
        check(&east),
        check(&west)
    );
    let secrets = secrets();
    let m = members();
    let servers = start_fleet(&m, &zone, secrets.path());
    // Every instance uses the median, 120%, whatever its own probes read.
    let start = Instant::now();
    loop {
        let loads: Vec<Option<f64>> = servers
            .iter()
            .map(|s| region_load(s, "eu-west").0)
            .collect();
        if loads
            .iter()
            .all(|l| l.is_some_and(|l| (l - 1.2).abs() < 1e-9))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "loads: {loads:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Their kept shares fall alike, each at its own probes: at any moment at most two steps
    // (10 points) apart, one for probes out of step and one for a probe late on a busy host.
    let mut seen_moving = false;
    for _ in 0..20 {
        let kept: Vec<f64> = servers
            .iter()
            .map(|s| region_load(s, "eu-west").1)
            .collect();
        let spread = kept.iter().fold(0.0_f64, |m, k| m.max(*k))
            - kept.iter().fold(1.0_f64, |m, k| m.min(*k));
        assert!(spread <= 0.1 + 1e-9, "kept shares apart: {kept:?}");
        seen_moving |= kept.iter().all(|&k| k < 1.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_moving, "over the target: clients move");
}

#[test]
fn a_peer_with_another_latency_table_is_shown_as_a_mismatch() {
    let secrets = secrets();
    let m = members();
    let table = |name: &str, rtt: u32| {
        let path = secrets.path().join(name);
        let text = format!("network,region,rtt_ms,samples\n81.2.69.0/24,eu-west,{rtt},30\n");
        std::fs::write(&path, text).expect("table");
        path_arg(&path)
    };
    let (mine, theirs) = (table("mine.csv", 12), table("theirs.csv", 13));
    let zone = crate::common::ZONE;
    let ns1 = start_with(
        &m[0],
        &[&m[1]],
        "http",
        zone,
        secrets.path(),
        &["--latency", &mine],
    );
    let ns2 = start_with(
        &m[1],
        &[&m[0]],
        "http",
        zone,
        secrets.path(),
        &["--latency", &theirs],
    );
    until_peers_reachable(&ns1, 1);
    let sha = |server: &Server| {
        fleet_json(server)["latency_table"]
            .as_str()
            .map(str::to_owned)
    };
    let (own, other) = (sha(&ns1).expect("a table"), sha(&ns2).expect("a table"));
    assert_eq!(own.len(), 64);
    assert_ne!(own, other);
    let fleet = fleet_json(&ns1);
    let peer = &fleet["peers"][0];
    assert_eq!(
        peer["latency_table"].as_str(),
        Some(other.as_str()),
        "{fleet}"
    );
    assert_eq!(peer["latency_matches"], false, "{fleet}");
    let started = Instant::now();
    loop {
        let (_, metrics) = http(ns1.admin.expect("admin"), "GET", "/metrics", &[]);
        if metrics.contains("regiondns_fleet_mismatches{what=\"latency\"} 1") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
