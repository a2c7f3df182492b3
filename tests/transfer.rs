//! Zone transfers to secondaries we did not write: Knot (`knotd`), BIND (`named`) and NSD, each
//! started here on its own loopback address, take the zone by AXFR signed with TSIG and answer
//! as we do for static names and with the declared fallback for geo names. Requests without
//! the key, with another key, signed at a stale time or from outside `transfer.to` are refused
//! with nothing transferred. A signed zone reaches Knot signed, with its NSEC chain, and BIND's
//! `delv` validates Knot's answers; Knot and BIND follow the catalog zone as zones come and go.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType, TSigner, rdata::tsig::TsigAlgorithm},
};

use crate::common::{self, Server, query, udp};

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMhISE=";
const OTHER_SECRET: &str = "b3RoZXItb3RoZXItb3RoZXItMzItYnl0ZXMhISEhISE=";
const KEY: &str = "xfr.llm.example.com.";

/// The zone: static names of several types, a service every secondary may carry, one pinned
/// to a region, and a sovereign one left out.
fn zone(extra_transfer: &str) -> String {
    format!(
        "origin: llm.example.com.\nsoa:\n  primary: ns1.llm.example.com.\n  contact: hostmaster.example.com.\n  serial: 2026120701\n\
         ns: [ns1.llm.example.com.]\n\
         records:\n  ns1: {{ A: [198.51.100.53] }}\n  www: {{ CNAME: [api.llm.example.com.] }}\n  \
         '@': {{ MX: [\"10 mail.example.net.\"], TXT: [\"v=spf1 -all\"] }}\n  docs: {{ AAAA: [\"2001:db8::80\"] }}\n\
         regions:\n  us-east:\n    location: {{ lat: 38.9, lon: -77.4 }}\n    addresses: [203.0.113.10, \"2001:db8:10::1\"]\n  \
         eu-west:\n    location: {{ lat: 53.3, lon: -6.3 }}\n    addresses: [203.0.113.20]\n    jurisdiction: eu\n  \
         ap-northeast:\n    location: {{ lat: 35.7, lon: 139.7 }}\n    addresses: [203.0.113.30]\n\
         services:\n  api:\n    regions: [us-east, eu-west, ap-northeast]\n  \
         pinned:\n    regions: [us-east, eu-west]\n    secondary: eu-west\n  \
         eu:\n    regions: [eu-west, us-east]\n    secondary: omit\n    rules:\n      - match: {{ continent: [EU] }}\n        allow: {{ jurisdiction: [eu] }}\n\
         transfer:\n  to: [127.0.0.0/8]\n  tsig: {KEY}\n{extra_transfer}"
    )
}

fn keys_file(dir: &Path) -> String {
    let path = dir.join("tsig.yaml");
    std::fs::write(
        &path,
        format!("- name: {KEY}\n  algorithm: hmac-sha256\n  secret: {SECRET}\n"),
    )
    .expect("keys");
    common::path_arg(&path)
}

fn start() -> Server {
    start_zone(common::zone_dir(&zone("")))
}

/// The server on the zone in `dir`, with the TSIG key, an admin token and a state directory.
fn start_zone(dir: tempfile::TempDir) -> Server {
    start_zone_with(dir, &[])
}

/// As [`start_zone`], with more arguments.
fn start_zone_with(dir: tempfile::TempDir, more: &[&str]) -> Server {
    let keys = keys_file(dir.path());
    std::fs::write(dir.path().join("admin-token"), "s3cret").expect("token");
    let token = common::path_arg(&dir.path().join("admin-token"));
    let state = common::path_arg(dir.path());
    let mut flags = vec![
        "--tsig-keys",
        &keys,
        "--admin-token-file",
        &token,
        "--state-dir",
        &state,
        "--transfer-min-interval",
        "1s",
    ];
    flags.extend(more);
    Server::start_in(dir, &flags)
}

/// Rewrites the zone file (beside, then renamed over) and waits for its reload.
fn rewrite(server: &Server, text: &str, reloads: usize) {
    let zones = server.dir.path().join("zones");
    std::fs::write(zones.join("llm.yaml.new"), text).expect("write");
    std::fs::rename(zones.join("llm.yaml.new"), zones.join("llm.yaml")).expect("rename");
    common::until_logged(server, "reloaded (zone files changed)", reloads);
}

/// Waits until `secondary` answers `name` `qtype` as `wanted`; how long it took.
fn until_serves(
    secondary: &Secondary,
    what: &str,
    asked: (&str, RecordType),
    wanted: &[&str],
    limit: Duration,
) -> Duration {
    let (name, qtype) = asked;
    let started = Instant::now();
    loop {
        if said(secondary.addr, name, qtype) == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} does not serve {wanted:?} for {name} {qtype} after {limit:?}: {:?}\n{}",
            said(secondary.addr, name, qtype),
            secondary.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port free on `ip` for both UDP and TCP, as far as one can tell before using it.
fn free_port(ip: &str) -> u16 {
    loop {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// A secondary's process, killed when dropped.
struct Secondary {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secondary {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it answers the zone's SOA with authority, i.e. holds the zone.
    fn until_loaded(&self, what: &str) {
        let started = Instant::now();
        loop {
            let asked = query("llm.example.com.", RecordType::SOA, None);
            if let Some(response) = try_udp(self.addr, &asked)
                && response.metadata.authoritative
                && !response.answers.is_empty()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what} did not load the zone:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn try_udp(addr: SocketAddr, message: &Message) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.connect(addr).ok()?;
    socket.send(&message.to_vec().ok()?).ok()?;
    let mut buf = [0; 65535];
    let n = socket.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn knot(primary: SocketAddr) -> Secondary {
    knot_with(
        primary,
        "zone:\n  - domain: llm.example.com\n    master: primary\n    acl: notify_from_primary\n",
    )
}

/// Knot, taking from `primary` the zones of `zones` (a `zone:` section, and templates of its
/// own after the default one).
fn knot_with(primary: SocketAddr, zones: &str) -> Secondary {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.0.71";
    let port = free_port(ip);
    let bare = KEY.trim_end_matches('.');
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n\
         database:\n    storage: \"{d}\"\n\
         key:\n  - id: {bare}\n    algorithm: hmac-sha256\n    secret: {SECRET}\n\
         remote:\n  - id: primary\n    address: {pip}@{pport}\n    key: {bare}\n\
         acl:\n  - id: notify_from_primary\n    address: 127.0.0.0/8\n    action: notify\n    key: {bare}\n\
         log:\n  - target: stderr\n    any: info\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: none\n    journal-content: none\n\
         {zones}",
        d = dir.path().display(),
        pip = primary.ip(),
        pport = primary.port(),
    );
    let addr = SocketAddr::new(ip.parse().expect("ip"), port);
    spawn_secondary(dir, addr, "knot.conf", &conf, &["knotd", "-c"])
}

/// Writes `conf` as `name` in `dir` and runs `command` on it, its log kept in `dir`.
fn spawn_secondary(
    dir: tempfile::TempDir,
    addr: SocketAddr,
    name: &str,
    conf: &str,
    command: &[&str],
) -> Secondary {
    let conf_path = dir.path().join(name);
    std::fs::write(&conf_path, conf).expect("configuration");
    let log = dir.path().join(format!("{name}.log"));
    let child = Command::new(command[0])
        .args(&command[1..])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{} (Debian's knot and bind9 packages): {e}", command[0]));
    Secondary {
        child,
        addr,
        log,
        _dir: dir,
    }
}

fn bind(primary: SocketAddr) -> Secondary {
    let zone = "zone \"llm.example.com\" {\n  type secondary;\n  primaries port PORT { IP key \"KEY\"; };\n  \
                file \"llm.example.com.db\";\n  allow-notify { 127.0.0.0/8; };\n};\n";
    bind_with(primary, "", zone)
}

/// BIND, with `options` among its options and the zones of `zones` (in both, PORT, IP and KEY
/// stand for the primary's port and address and the key's name).
fn bind_with(primary: SocketAddr, options: &str, zones: &str) -> Secondary {
    let dir = tempfile::tempdir().expect("tempdir");
    // BIND listens only on the addresses interfaces have: 127.0.0.1, on a port of its own.
    let ip = "127.0.0.1";
    let port = free_port(ip);
    let bare = KEY.trim_end_matches('.');
    let d = dir.path().display();
    let conf = format!(
        "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n  listen-on port {port} {{ {ip}; }};\n  \
         listen-on-v6 {{ none; }};\n  recursion no;\n  dnssec-validation no;\n  notify no;\n{options}}};\n\
         controls {{ }};\n\
         key \"{bare}\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
         server {pip} {{ keys {{ \"{bare}\"; }}; }};\n{zones}",
        pip = primary.ip(),
    );
    let conf = conf
        .replace("PORT", &primary.port().to_string())
        .replace("IP", &primary.ip().to_string())
        .replace("KEY", bare);
    let addr = SocketAddr::new(ip.parse().expect("ip"), port);
    spawn_secondary(dir, addr, "named.conf", &conf, &["named", "-g", "-c"])
}

fn nsd(primary: SocketAddr) -> Secondary {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.0.72";
    let port = free_port(ip);
    let bare = KEY.trim_end_matches('.');
    let conf = format!(
        "server:\n  ip-address: {ip}@{port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  \
         database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         xfrdir: \"{d}\"\n  verbosity: 2\n\
         remote-control:\n  control-enable: no\n\
         key:\n  name: \"{bare}\"\n  algorithm: hmac-sha256\n  secret: \"{SECRET}\"\n\
         zone:\n  name: \"llm.example.com\"\n  zonefile: \"llm.example.com.zone\"\n  \
         request-xfr: {pip}@{pport} {bare}\n  allow-notify: 127.0.0.0/8 {bare}\n",
        d = dir.path().display(),
        pip = primary.ip(),
        pport = primary.port(),
    );
    let addr = SocketAddr::new(ip.parse().expect("ip"), port);
    spawn_secondary(dir, addr, "nsd.conf", &conf, &["nsd", "-d", "-c"])
}

/// The `transfer` block's line that sends NOTIFY to every one of `secondaries`.
fn notify_line(secondaries: &[(&str, Secondary)]) -> String {
    let addresses: Vec<String> = secondaries
        .iter()
        .map(|(_, s)| format!("\"{}\"", s.addr))
        .collect();
    format!("  notify: [{}]\n", addresses.join(", "))
}

/// The answer's records as text, sorted: what two servers must agree on.
fn said(addr: SocketAddr, name: &str, qtype: RecordType) -> Vec<String> {
    let response = udp(addr, &query(name, qtype, None));
    let mut records: Vec<String> = response
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data))
        .collect();
    records.sort();
    records.insert(0, response.metadata.response_code.to_string());
    records
}

#[test]
fn knot_bind_and_nsd_take_the_zone_by_signed_axfr_and_answer_the_declared_fallback() {
    let server = start();
    let secondaries = [
        ("knot", knot(server.addr)),
        ("bind", bind(server.addr)),
        ("nsd", nsd(server.addr)),
    ];
    for (what, secondary) in &secondaries {
        secondary.until_loaded(what);
    }
    let statics = [
        ("llm.example.com.", RecordType::SOA),
        ("llm.example.com.", RecordType::NS),
        ("llm.example.com.", RecordType::MX),
        ("llm.example.com.", RecordType::TXT),
        ("ns1.llm.example.com.", RecordType::A),
        ("www.llm.example.com.", RecordType::CNAME),
        ("docs.llm.example.com.", RecordType::AAAA),
        ("nothing.llm.example.com.", RecordType::A),
    ];
    for (what, secondary) in &secondaries {
        for (name, qtype) in statics {
            assert_eq!(
                said(secondary.addr, name, qtype),
                said(server.addr, name, qtype),
                "{what}: {name} {qtype}"
            );
        }
        let fallback = |name: &str, qtype| said(secondary.addr, name, qtype);
        assert_eq!(
            fallback("api.llm.example.com.", RecordType::A),
            [
                "No Error",
                "api.llm.example.com. A 203.0.113.10",
                "api.llm.example.com. A 203.0.113.20",
                "api.llm.example.com. A 203.0.113.30"
            ],
            "{what}: every region that is up"
        );
        assert_eq!(
            fallback("api.llm.example.com.", RecordType::AAAA),
            ["No Error", "api.llm.example.com. AAAA 2001:db8:10::1"],
            "{what}"
        );
        assert_eq!(
            fallback("pinned.llm.example.com.", RecordType::A),
            ["No Error", "pinned.llm.example.com. A 203.0.113.20"],
            "{what}: the declared region"
        );
        assert_eq!(
            fallback("eu.llm.example.com.", RecordType::A),
            ["Non-Existent Domain"],
            "{what}: a sovereign service is left out"
        );
        assert_eq!(
            fallback("_explain.api.llm.example.com.", RecordType::TXT),
            ["Non-Existent Domain"],
            "{what}"
        );
    }
    let log = server.log();
    assert!(
        log.matches("AXFR of llm.example.com. (serial 2026120701")
            .count()
            >= 2,
        "{log}"
    );

    // Both hear of every change by NOTIFY: first tell the server where they are (no change to
    // what they receive: no new serial), then edit the zone.
    let targets = notify_line(&secondaries);
    let reloads = server
        .log()
        .matches("reloaded (zone files changed)")
        .count();
    rewrite(&server, &zone(&targets), reloads + 1);
    let edited =
        zone(&targets).replace("  docs: {", "  status: { TXT: [\"all good\"] }\n  docs: {");
    rewrite(&server, &edited, reloads + 2);
    for (what, secondary) in &secondaries {
        let took = until_serves(
            secondary,
            what,
            ("status.llm.example.com.", RecordType::TXT),
            &["No Error", "status.llm.example.com. TXT all good"],
            Duration::from_secs(2),
        );
        eprintln!("{what} serves the edit {took:?} after the reload");
    }
    common::until_logged(&server, "acknowledged by", 3);
    // By IXFR, from the journal: ours say so, and theirs.
    common::until_logged(&server, "IXFR of llm.example.com. (serial", 2);
    // NSD says only how much each update held: the whole zone first, then far less.
    let nsd_log = secondaries[2].1.log();
    let sizes: Vec<u64> = nsd_log
        .lines()
        .filter_map(|l| l.split(" of ").nth(1)?.split(" bytes").next()?.parse().ok())
        .collect();
    assert!(sizes.len() >= 2 && sizes[1] < sizes[0], "{nsd_log}");
    let knot_log = secondaries[0].1.log();
    assert!(knot_log.contains("IXFR, incoming"), "{knot_log}");
    assert!(!knot_log.contains("fallback to AXFR"), "{knot_log}");
    // BIND names the kind only in debug logs; its counts tell: 14 records whole, 5 since.
    let bind_log = secondaries[1].1.log();
    let counts: Vec<&str> = bind_log
        .lines()
        .filter_map(|l| l.split("Transfer completed: 1 messages, ").nth(1))
        .collect();
    assert!(
        counts.len() >= 2 && counts[1].starts_with("5 records"),
        "{bind_log}"
    );

    // A drained region leaves what secondaries give for `api` within the interval + 2 s.
    let admin = server.admin.expect("admin");
    let path = "/regions/llm.example.com/ap-northeast/drain";
    let token = [("Authorization", "Bearer s3cret")];
    let (status, body) = common::http(admin, "POST", path, &token);
    assert_eq!(status, 200, "{body}");
    let without = [
        "No Error",
        "api.llm.example.com. A 203.0.113.10",
        "api.llm.example.com. A 203.0.113.20",
    ];
    for (what, secondary) in &secondaries {
        let took = until_serves(
            secondary,
            what,
            ("api.llm.example.com.", RecordType::A),
            &without,
            Duration::from_secs(3),
        );
        eprintln!("{what} leaves the drained region out {took:?} after the drain");
    }
    // Ours answer with the new serial too.
    let soa = said(server.addr, "llm.example.com.", RecordType::SOA);
    for (what, secondary) in &secondaries {
        let theirs = said(secondary.addr, "llm.example.com.", RecordType::SOA);
        assert_eq!(theirs, soa, "{what}");
    }
    assert!(!soa[1].contains(" 2026120701 "), "the serial grew: {soa:?}");
    let (_, metrics) = common::http(admin, "GET", "/metrics", &[]);
    let acknowledged =
        "regiondns_notifies_total{zone=\"llm.example.com.\",result=\"acknowledged\"}";
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(acknowledged)?.trim().parse::<u64>().ok());
    assert!(
        count.is_some_and(|n| n >= 6),
        "two bumps, three secondaries:\n{metrics}"
    );
    // The admin API and the status page show each secondary's last transfer, none behind.
    let (status, body) = common::http(admin, "GET", "/transfers", &[]);
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let zone = &value["zones"][0];
    let current = zone["serial"].as_u64().expect("serial");
    let seen = zone["secondaries"].as_array().expect("secondaries");
    assert!(!seen.is_empty(), "{body}");
    for secondary in seen {
        assert_eq!(secondary["serial"].as_u64(), Some(current), "{body}");
        assert_eq!(secondary["behind"], false, "{body}");
    }
    assert_eq!(zone["notify"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, page) = common::http(admin, "GET", "/", &[]);
    assert!(
        page.contains(&format!(
            "serial {current} for secondaries; <span class=\"current\">127.0.0.1: {current} by IXFR</span>"
        )),
        "{page}"
    );
    assert!(!page.contains(", behind</span>"), "{page}");
}

/// An AXFR request for the zone, signed with `secret` at `time` when given.
fn axfr_request(secret: Option<&str>, time: u64) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.add_query(Query::query(
        Name::from_ascii("llm.example.com.").expect("name"),
        RecordType::AXFR,
    ));
    if let Some(secret) = secret {
        message.finalize(&signer(secret), time).expect("signed");
    }
    message.to_vec().expect("encode")
}

/// A signer (and checker) with the key named [`KEY`] of `secret`.
fn signer(secret: &str) -> TSigner {
    let key = data_encoding::BASE64
        .decode(secret.as_bytes())
        .expect("base64");
    let name = Name::from_ascii(KEY).expect("key name");
    TSigner::new(key, TsigAlgorithm::HmacSha256, name, 300).expect("signer")
}

/// Every message the server sends back to `request` over one TCP connection, until it closes
/// or stops sending.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<Vec<u8>> {
    exchange_on(TcpStream::connect(addr).expect("connect"), request)
}

/// As [`exchange`], on a connection already made; nothing when the server closed it.
fn exchange_on(mut stream: TcpStream, request: &[u8]) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    if stream.write_all(&framed).is_err() {
        return Vec::new();
    }
    let mut messages = Vec::new();
    loop {
        let mut length = [0; 2];
        if stream.read_exact(&mut length).is_err() {
            return messages;
        }
        let mut message = vec![0; usize::from(u16::from_be_bytes(length))];
        if stream.read_exact(&mut message).is_err() {
            return messages;
        }
        let done = Message::from_vec(&message)
            .map(|m| {
                m.answers.len() > 1
                    && m.answers.last().map(|r| r.record_type()) == Some(RecordType::SOA)
            })
            .unwrap_or(true);
        messages.push(message);
        if done || messages.len() > 1000 {
            return messages;
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The Extended DNS Error text of `message`, if it has one.
fn extended_error(message: &Message) -> String {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let Some(edns) = &message.edns else {
        return String::new();
    };
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(_, option)| match option {
            EdnsOption::Unknown(15, data) => {
                Some(String::from_utf8_lossy(data.get(2..).unwrap_or_default()).into_owned())
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn transfers_without_the_key_with_another_key_stale_or_from_elsewhere_are_refused() {
    let server = start();
    // Signed with the right key: every message verifies in turn (RFC 8945 5.3.1), the zone
    // goes out SOA to SOA.
    let signer = signer(SECRET);
    let request = axfr_request(Some(SECRET), now());
    let request_mac = Message::from_vec(&request)
        .expect("request")
        .signature()
        .map(|s| s.data.mac.clone())
        .expect("signed");
    let messages = exchange(server.addr, &request);
    assert!(!messages.is_empty());
    let mut previous = request_mac;
    for (n, message) in messages.iter().enumerate() {
        let (mac, _, _) = signer
            .verify_message_byte(message, Some(&previous), n == 0)
            .unwrap_or_else(|e| panic!("message {n}: {e}"));
        previous = mac;
    }
    let records: usize = messages
        .iter()
        .map(|m| Message::from_vec(m).expect("message").answers.len())
        .sum();
    assert!(records >= 12, "{records} records");

    for (request, reason) in [
        (
            axfr_request(None, 0),
            "the transfer must be signed with TSIG",
        ),
        (
            axfr_request(Some(OTHER_SECRET), now()),
            "bad TSIG signature with key xfr.llm.example.com.",
        ),
        (
            axfr_request(Some(SECRET), now() - 3600),
            "over the fudge of 300 s",
        ),
    ] {
        let mut asked = Message::from_vec(&request).expect("request");
        // With EDNS, the refusal says why.
        if asked.signature().is_none() {
            asked.set_edns(hickory_proto::op::Edns::new());
        }
        let request = match asked.signature() {
            Some(_) => request,
            None => asked.to_vec().expect("encode"),
        };
        let messages = exchange(server.addr, &request);
        assert_eq!(messages.len(), 1, "{reason}");
        let refusal = Message::from_vec(&messages[0]).expect("refusal");
        assert_eq!(
            refusal.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused,
            "{reason}"
        );
        assert!(refusal.answers.is_empty(), "{reason}: nothing transferred");
        if refusal.edns.is_some() {
            assert!(
                extended_error(&refusal).contains(reason),
                "{reason}: {refusal:?}"
            );
        }
        common::until_logged(&server, reason, 1);
    }
    let log = server.log();
    assert!(
        !log.contains(SECRET) && !log.contains(OTHER_SECRET),
        "{log}"
    );
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    for line in [
        "regiondns_transfers_total{zone=\"llm.example.com.\",kind=\"AXFR\",result=\"ok\"} 1",
        "regiondns_transfers_total{zone=\"llm.example.com.\",kind=\"AXFR\",result=\"refused\"} 3",
        "regiondns_zone_serial{zone=\"llm.example.com.\"} 2026120701",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
}

#[test]
fn a_client_outside_transfer_to_is_refused_and_dig_says_so() {
    let text = zone("").replace("to: [127.0.0.0/8]", "to: [192.0.2.0/24]");
    let dir = common::zone_dir(&text);
    let keys = keys_file(dir.path());
    let server = Server::start_in(dir, &["--tsig-keys", &keys]);
    let out = common::dig(
        server.addr,
        &[
            "-y",
            &format!("hmac-sha256:{KEY}:{SECRET}"),
            "llm.example.com.",
            "AXFR",
        ],
    );
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    assert!(!out.contains("203.0.113.10"), "nothing transferred: {out}");
    common::until_logged(
        &server,
        "127.0.0.1 is not in llm.example.com.'s transfer.to",
        1,
    );
}

/// The serial our SOA answers carry.
fn serial(server: &Server) -> u32 {
    let response = udp(
        server.addr,
        &query("llm.example.com.", RecordType::SOA, None),
    );
    match response.answers.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA: {other:?}"),
    }
}

fn start_with_state(text: &str, state: &Path) -> Server {
    let dir = common::zone_dir(text);
    let keys = keys_file(dir.path());
    let state = common::path_arg(state);
    let flags = [
        "--tsig-keys",
        &keys,
        "--state-dir",
        &state,
        "--transfer-min-interval",
        "1s",
    ];
    Server::start_in(dir, &flags)
}

#[test]
fn serials_grow_with_every_change_never_below_the_file_and_survive_a_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let first = start_with_state(&zone(""), state.path());
    assert_eq!(
        serial(&first),
        2026120701,
        "the zone file's serial is the floor"
    );
    let edited = zone("").replace("  docs: {", "  status: { TXT: [\"edited\"] }\n  docs: {");
    rewrite(&first, &edited, 1);
    let started = Instant::now();
    while serial(&first) != 2026120702 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ended, _) = first.stop();
    ended.expect("stopped");
    // The same content after a restart: the serial it went out under, not the file's.
    let again = start_with_state(&edited, state.path());
    assert_eq!(serial(&again), 2026120702);
    let kept = std::fs::read_to_string(state.path().join("serials.json")).expect("kept");
    assert!(kept.contains("\"llm.example.com.\""), "{kept}");
    // The journal came back with it: a secondary at the file's serial gets the change alone.
    let ixfr = ixfr_from(&again, 2026120701);
    assert_eq!(soa_serials(&ixfr), [2, 1, 2, 2], "{ixfr}");
    assert!(
        ixfr.contains("status.llm.example.com. 3600 IN TXT \"edited\""),
        "{ixfr}"
    );
    assert!(
        !ixfr.contains("docs.llm.example.com."),
        "not the whole zone: {ixfr}"
    );
    let (ended, _) = again.stop();
    ended.expect("stopped");
    // A change made while the server was down goes out as one more difference.
    let changed = edited.replace("\"edited\"", "\"changed while down\"");
    let third = start_with_state(&changed, state.path());
    assert_eq!(serial(&third), 2026120703);
    let ixfr = ixfr_from(&third, 2026120701);
    assert_eq!(soa_serials(&ixfr), [3, 1, 2, 2, 3, 3], "{ixfr}");
    assert!(ixfr.contains("TXT \"changed while down\""), "{ixfr}");
    assert!(
        !ixfr.contains("docs.llm.example.com."),
        "not the whole zone: {ixfr}"
    );
    // A journal that is not ours is not used: the whole zone goes out instead.
    let (ended, _) = third.stop();
    ended.expect("stopped");
    let journal = state.path().join("journal-llm.example.com.json");
    std::fs::write(&journal, "{\"origin\": \"example.org.\"}").expect("spoil");
    let fourth = start_with_state(&changed, state.path());
    let ixfr = ixfr_from(&fourth, 2026120702);
    assert!(
        ixfr.contains("docs.llm.example.com."),
        "the whole zone: {ixfr}"
    );
    assert!(
        fourth.log().contains("journal-llm.example.com.json: "),
        "{}",
        fourth.log()
    );
}

/// What `dig` receives for an IXFR from `serial`, signed with the zone's key, one record a line.
fn ixfr_from(server: &Server, serial: u32) -> String {
    let key = format!("hmac-sha256:{}:{SECRET}", KEY.trim_end_matches('.'));
    let asked = format!("IXFR={serial}");
    let out = common::dig(
        server.addr,
        &["-y", &key, "+nocmd", "+nostats", "llm.example.com.", &asked],
    );
    out.lines()
        .filter(|l| !l.starts_with(';') && !l.contains("TSIG"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last digit of each SOA serial in a transfer, in order.
fn soa_serials(transfer: &str) -> Vec<u32> {
    transfer
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(3) == Some(&"SOA")).then(|| fields.get(6)?.parse::<u32>().ok())?
        })
        .map(|serial| serial % 10)
        .collect()
}

#[test]
fn a_flood_of_transfers_is_bounded_by_the_tcp_limits_and_udp_keeps_answering() {
    // A zone big enough that each transfer takes a while: 3,000 static names.
    let mut text = zone("");
    let hosts: String = (0..3000)
        .map(|i| format!("  host{i}: {{ A: [10.0.{}.{}] }}\n", i / 250, i % 250))
        .collect();
    text = text.replace("  ns1: {", &format!("{hosts}  ns1: {{"));
    let dir = common::zone_dir(&text);
    let keys = keys_file(dir.path());
    let server = Server::start_in(
        dir,
        &["--tsig-keys", &keys, "--tcp-connections-per-network", "8"],
    );
    let addr = server.addr;
    // 24 connections at once from one /24, 8 allowed: the rest are closed on arrival.
    let connected = std::sync::Arc::new(std::sync::Barrier::new(24));
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let connected = std::sync::Arc::clone(&connected);
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).expect("connect");
                connected.wait();
                let request = axfr_request(Some(SECRET), now());
                let messages = exchange_on(stream, &request);
                messages
                    .iter()
                    .map(|m| Message::from_vec(m).map_or(0, |m| m.answers.len()))
                    .sum::<usize>()
            })
        })
        .collect();
    // Meanwhile UDP answers every query.
    for _ in 0..200 {
        let response = udp(addr, &query("ns1.llm.example.com.", RecordType::A, None));
        assert_eq!(common::addresses(&response), ["198.51.100.53"]);
    }
    let got: Vec<usize> = flood
        .into_iter()
        .map(|t| t.join().expect("flood"))
        .collect();
    let whole = got.iter().filter(|&&n| n >= 3000).count();
    let cut = got.iter().filter(|&&n| n == 0).count();
    assert!(
        whole >= 1 && cut >= 1,
        "transfers went out, the limit held: {got:?}"
    );
    assert_eq!(
        whole + cut,
        got.len(),
        "each transfer whole, or refused by the limit: {got:?}"
    );
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    let refused = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("regiondns_tcp_refused_total{limit=\"per_network\"} ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert_eq!(refused as usize, cut, "{metrics}");
}

/// The zone signed, with an unsigned child delegated (its glue in the zone).
fn signed_zone(notify: &str) -> String {
    let delegation = "records:\n  sub: { NS: [ns.sub] }\n  ns.sub: { A: [192.0.2.53] }\n";
    let text = zone(notify).replacen("records:\n", delegation, 1);
    format!("{text}dnssec: {{ key: k.pem, validity: 10d }}\n")
}

/// What `dnssec-verify` (BIND) says of the zone as our AXFR gives it (`-z`: one combined
/// key signs everything).
fn verify_axfr(server: &Server) -> (bool, String) {
    let key = format!("hmac-sha256:{}:{SECRET}", KEY.trim_end_matches('.'));
    let out = common::dig(
        server.addr,
        &["-y", &key, "+onesoa", "llm.example.com.", "AXFR"],
    );
    let file = server.dir.path().join("axfr.zone");
    let zone: Vec<&str> = out.lines().filter(|l| !l.contains("\tTSIG\t")).collect();
    std::fs::write(&file, zone.join("\n")).expect("write the transfer");
    let verified = Command::new("dnssec-verify")
        .args(["-z", "-o", "llm.example.com."])
        .arg(&file)
        .output()
        .expect("dnssec-verify (Debian's bind9-utils)");
    let said = [verified.stdout, verified.stderr].concat();
    (
        verified.status.success(),
        format!("{}\n{out}", String::from_utf8_lossy(&said)),
    )
}

#[test]
fn a_signed_zone_goes_out_signed_with_its_nsec_chain_and_validates_at_knot() {
    let dir = common::zone_dir(&signed_zone(""));
    let ds = crate::dnssec::keygen(&dir.path().join("zones/k.pem"));
    let anchor = crate::dnssec::trust_anchor(dir.path(), &ds);
    let server = start_zone(dir);
    let (verified, said) = verify_axfr(&server);
    assert!(verified && said.contains("fully signed"), "{said}");
    assert_eq!(said.matches("\tNSEC\t").count(), 7, "one per name: {said}");

    let knot = knot(server.addr);
    knot.until_loaded("knot");
    let validates = |name: &str, qtype: &str, wanted: &str| {
        let said = crate::dnssec::delv(knot.addr, &anchor, name, qtype);
        assert!(said.starts_with(wanted), "knot: {name} {qtype}: {said}");
        said
    };
    for (name, qtype) in [
        ("llm.example.com.", "SOA"),
        ("llm.example.com.", "DNSKEY"),
        ("llm.example.com.", "MX"),
        ("ns1.llm.example.com.", "A"),
        ("pinned.llm.example.com.", "A"),
    ] {
        validates(name, qtype, "; fully validated");
    }
    let fallback = validates("api.llm.example.com.", "A", "; fully validated");
    assert_eq!(
        fallback.matches("\tIN\tA\t203.0.113.").count(),
        3,
        "{fallback}"
    );
    // Denials come from the chain a secondary holds: a name, a type, the unsigned child.
    for (name, qtype) in [
        ("nope.llm.example.com.", "A"),
        ("eu.llm.example.com.", "A"),
        ("ns1.llm.example.com.", "TXT"),
        ("sub.llm.example.com.", "DS"),
    ] {
        validates(name, qtype, "; negative response, fully validated");
    }

    // An edit reaches Knot by IXFR, signed, the chain remade around the new name.
    let targets = format!("  notify: [\"{}\"]\n", knot.addr);
    let reloads = server
        .log()
        .matches("reloaded (zone files changed)")
        .count();
    let edited =
        signed_zone(&targets).replace("  docs: {", "  status: { TXT: [\"ok\"] }\n  docs: {");
    rewrite(&server, &edited, reloads + 1);
    until_serves(
        &knot,
        "knot",
        ("status.llm.example.com.", RecordType::TXT),
        &["No Error", "status.llm.example.com. TXT ok"],
        Duration::from_secs(3),
    );
    validates("status.llm.example.com.", "TXT", "; fully validated");
    validates(
        "stat.llm.example.com.",
        "A",
        "; negative response, fully validated",
    );
    assert!(knot.log().contains("IXFR, incoming"), "{}", knot.log());
    // Only what the edit touched is signed anew: the SOA, the new name and its neighbour's NSEC.
    let ixfr = ixfr_from(&server, 2026120701);
    let resigned: Vec<&str> = ixfr
        .lines()
        .filter(|l| l.split(' ').nth(3) == Some("RRSIG"))
        .collect();
    assert_eq!(resigned.len(), 6, "{ixfr}");
    let (verified, said) = verify_axfr(&server);
    assert!(verified, "{said}");
    // Our own answers carry the new serial, signed.
    for (name, qtype, wanted) in [
        ("llm.example.com.", "SOA", "; fully validated"),
        (
            "nope.llm.example.com.",
            "A",
            "; negative response, fully validated",
        ),
    ] {
        let said = crate::dnssec::delv(server.addr, &anchor, name, qtype);
        assert!(said.starts_with(wanted), "ours: {name} {qtype}: {said}");
    }
}

/// Whether `secondary` serves `zone`: it answers the zone's SOA with authority.
fn serves_zone(secondary: &Secondary, zone: &str) -> bool {
    try_udp(secondary.addr, &query(zone, RecordType::SOA, None))
        .is_some_and(|r| r.metadata.authoritative && !r.answers.is_empty())
}

/// Waits up to 5 s until `secondary` serves `zone` (or, with `serves` false, no longer does).
fn until_serves_zone(secondary: &Secondary, what: &str, zone: &str, serves: bool) -> Duration {
    let started = Instant::now();
    while serves_zone(secondary, zone) != serves {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: {zone} served: {}, after 5 s:\n{}",
            !serves,
            secondary.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn a_catalog_zone_lets_knot_and_bind_add_and_remove_member_zones_by_themselves() {
    let dir = common::zone_dir(&zone(""));
    let zones = dir.path().join("zones");
    let server = start_zone_with(dir, &["--catalog", "catalog.invalid"]);
    let members = "  - id: member\n    master: primary\n    acl: notify_from_primary\n\
        zone:\n  - domain: catalog.invalid\n    master: primary\n    acl: notify_from_primary\n    \
        catalog-role: interpret\n    catalog-template: member\n";
    let consumer = "  catalog-zones {\n    zone \"catalog.invalid\" default-primaries port PORT { IP key \"KEY\"; } \
        in-memory yes min-update-interval 1;\n  };\n  allow-new-zones yes;\n";
    let catalog = "zone \"catalog.invalid\" {\n  type secondary;\n  primaries port PORT { IP key \"KEY\"; };\n  \
        file \"catalog.db\";\n  allow-notify { 127.0.0.0/8; };\n};\n";
    let secondaries = [
        ("knot", knot_with(server.addr, members)),
        ("bind", bind_with(server.addr, consumer, catalog)),
    ];
    for (what, secondary) in &secondaries {
        secondary.until_loaded(&format!("{what}, by the catalog"));
    }
    let knot_log = secondaries[0].1.log();
    assert!(
        knot_log.contains("[catalog.invalid.] AXFR, incoming"),
        "{knot_log}"
    );
    let bind_log = secondaries[1].1.log();
    assert!(
        bind_log.contains("catz: adding zone 'llm.example.com'"),
        "{bind_log}"
    );

    // Tell the server where they are: the catalog's NOTIFY targets are its members'.
    let notify = notify_line(&secondaries);
    let reloads = server
        .log()
        .matches("reloaded (zone files changed)")
        .count();
    rewrite(&server, &zone(&notify), reloads + 1);
    let second = zone(&notify)
        .replace("origin: llm.example.com.", "origin: second.example.net.")
        .replace("ns1.llm.example.com.", "ns1.second.example.net.");
    std::fs::write(zones.join("second.yaml"), &second).expect("a second zone");
    common::until_logged(&server, "reloaded (zone files changed)", reloads + 2);
    for (what, secondary) in &secondaries {
        let took = until_serves_zone(secondary, what, "second.example.net.", true);
        eprintln!("{what} serves the new member {took:?} after the reload");
        assert_eq!(
            said(secondary.addr, "ns1.second.example.net.", RecordType::A),
            said(server.addr, "ns1.second.example.net.", RecordType::A),
            "{what}"
        );
    }

    // A zone file removed leaves the catalog, and they drop the zone.
    std::fs::remove_file(zones.join("second.yaml")).expect("remove");
    common::until_logged(&server, "reloaded (zone files changed)", reloads + 3);
    for (what, secondary) in &secondaries {
        until_serves_zone(secondary, what, "second.example.net.", false);
        assert!(serves_zone(secondary, "llm.example.com."), "{what}");
    }
    // The catalog as it goes out: its version and one member, under a stable label.
    let key = format!("hmac-sha256:{}:{SECRET}", KEY.trim_end_matches('.'));
    let axfr = common::dig(server.addr, &["-y", &key, "catalog.invalid.", "AXFR"]);
    assert!(
        axfr.contains("version.catalog.invalid. 0\tIN\tTXT\t\"2\""),
        "{axfr}"
    );
    let members: Vec<&str> = axfr.lines().filter(|l| l.contains("PTR")).collect();
    assert_eq!(members.len(), 1, "{axfr}");
    assert!(members[0].ends_with("PTR llm.example.com."), "{axfr}");
    assert!(!axfr.contains("second.example.net."), "{axfr}");
}
