//! DNSSEC as an operator meets it: `regiondns dnssec keygen` writes a key file only its owner
//! can read and prints the DS for the parent (Knot's `keymgr`, which we did not write, imports
//! the same file and must compute the same key tag, DNSKEY and DS); a zone that names the key
//! is served signed, and BIND's validator (`delv`, trusting only that DS) validates its
//! answers, the per-client geo answers and the negative ones included. A DS of another key
//! fails.

use std::{net::SocketAddr, os::unix::fs::PermissionsExt, path::Path, process::Command};

use crate::common::{self, Server, ZONE, dig, path_arg, run, serve_args, zone_dir};

/// What `keymgr` (Knot DNS) says of a PEM key imported for `zone`: its DNSKEY and SHA-256 DS.
fn knot_records(kasp: &Path, zone: &str, pem: &Path, algorithm: u8) -> (String, String) {
    let keymgr = |args: &[&str]| {
        let out = Command::new("keymgr")
            .arg("-D")
            .arg(kasp)
            .arg(zone)
            .args(args)
            .output()
            .expect("keymgr (from the knot package) runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pem = pem.to_str().expect("utf-8 path");
    let imported = keymgr(&[
        "import-pem",
        pem,
        &format!("algorithm={algorithm}"),
        "ksk=true",
    ]);
    let id = imported
        .lines()
        .next()
        .expect("the key's id")
        .trim()
        .to_owned();
    let ds = keymgr(&["ds", &id]);
    let sha256 = ds.lines().find(|l| l.contains(&format!(" {algorithm} 2 ")));
    let dnskey = keymgr(&["dnskey", &id]);
    (
        dnskey.trim().to_owned(),
        sha256.expect("a SHA-256 DS").to_owned(),
    )
}

/// `name TTL IN TYPE rdata` -> (`TYPE`, rdata in lower case), for comparing presentations.
fn type_and_rdata(line: &str) -> (String, String) {
    let fields: Vec<&str> = line.trim_start_matches("; ").split_whitespace().collect();
    let at = fields
        .iter()
        .position(|f| *f == "DS" || *f == "DNSKEY")
        .expect("a DS or DNSKEY record");
    (
        fields[at].to_owned(),
        fields[at + 1..].join(" ").to_lowercase(),
    )
}

#[test]
fn keygen_writes_a_private_key_whose_ds_knot_agrees_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (algorithm, number) in [("ecdsa-p256", 13), ("ed25519", 15)] {
        let key = dir.path().join(format!("{algorithm}.pem"));
        let args = [
            "dnssec",
            "keygen",
            "--zone",
            "llm.example.com",
            "--algorithm",
            algorithm,
        ];
        let out = run(
            &[&args[..], &["--out", key.to_str().expect("path")]].concat(),
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(&key)
            .expect("the key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");

        let stdout = String::from_utf8_lossy(&out.stdout);
        let ds_line = stdout
            .lines()
            .find(|l| l.contains(" DS "))
            .expect("a DS line");
        assert!(
            ds_line.starts_with("llm.example.com. 3600 IN DS "),
            "{ds_line}"
        );
        let dnskey_line = stdout
            .lines()
            .find(|l| l.contains(" DNSKEY "))
            .expect("DNSKEY");

        let kasp = dir.path().join(format!("kasp-{algorithm}"));
        std::fs::create_dir(&kasp).expect("kasp dir");
        let (knot_dnskey, knot_ds) = knot_records(&kasp, "llm.example.com.", &key, number);
        assert_eq!(type_and_rdata(ds_line), type_and_rdata(&knot_ds));
        assert_eq!(type_and_rdata(dnskey_line), type_and_rdata(&knot_dnskey));

        // Run again, it refuses to overwrite the key.
        let again = run(
            &[&args[..], &["--out", key.to_str().expect("path")]].concat(),
            dir.path(),
        );
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("cannot write key file"));
    }
}

/// An RRSIG time (`YYYYMMDDHHmmSS`, UTC) in seconds since 1970, as `date` reads it.
fn epoch(time: &str) -> i64 {
    let (day, clock) = time.split_at(8);
    let clock = format!("{}:{}:{}", &clock[..2], &clock[2..4], &clock[4..]);
    let out = Command::new("date")
        .args(["-u", "+%s", "-d", &format!("{day} {clock}")])
        .output()
        .expect("date runs");
    let seconds = String::from_utf8_lossy(&out.stdout).trim().parse();
    seconds.unwrap_or_else(|_| panic!("not an RRSIG time: {time}"))
}

/// `regiondns dnssec keygen` into `key`; the DS line it printed.
pub fn keygen(key: &Path) -> String {
    let out = run(
        &[
            "dnssec",
            "keygen",
            "--zone",
            "llm.example.com.",
            "--out",
            &path_arg(key),
        ],
        key.parent().expect("a directory"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.lines().next().expect("the DS line").to_owned()
}

/// A `delv` trust anchor file holding `ds` (`name TTL IN DS tag alg digest-type digest`).
pub fn trust_anchor(dir: &Path, ds: &str) -> String {
    let fields: Vec<&str> = ds.split_whitespace().collect();
    let [name, _, _, _, tag, algorithm, digest_type, digest] = fields[..] else {
        panic!("a DS record: {ds}")
    };
    let path = dir.join(format!("anchor-{tag}.conf"));
    let text = format!(
        "trust-anchors {{\n  \"{name}\" static-ds {tag} {algorithm} {digest_type} \"{digest}\";\n}};\n"
    );
    std::fs::write(&path, text).expect("write the trust anchor");
    path_arg(&path)
}

/// What `delv`, validating from `anchor` down, says of `name`/`qtype` at `server`.
pub fn delv(server: SocketAddr, anchor: &str, name: &str, qtype: &str) -> String {
    let out = Command::new("delv")
        .args(["-a", anchor, "+root=llm.example.com."])
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, qtype])
        .output()
        .expect("delv must be installed (scripts/test installs bind9-dnsutils)");
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn a_signed_zone_validates_from_its_ds_and_an_other_key_does_not() {
    let dir = zone_dir(&format!(
        "{ZONE}dnssec: {{ key: k.pem, validity: 10d, refresh: 5d }}\n"
    ));
    let ds = keygen(&dir.path().join("zones/k.pem"));
    let anchor = trust_anchor(dir.path(), &ds);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = trust_anchor(other_dir.path(), &keygen(&other_dir.path().join("k.pem")));
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn(dir, &args, None);

    for (name, qtype) in [
        ("api.llm.example.com.", "A"),
        ("api.llm.example.com.", "AAAA"),
        ("ns1.llm.example.com.", "A"),
        ("llm.example.com.", "SOA"),
        ("llm.example.com.", "NS"),
        ("llm.example.com.", "MX"),
        ("llm.example.com.", "DNSKEY"),
    ] {
        let said = delv(server.addr, &anchor, name, qtype);
        assert!(
            said.starts_with("; fully validated"),
            "{name} {qtype}: {said}"
        );
        let forged = delv(server.addr, &other, name, qtype);
        assert!(
            !forged.contains("fully validated"),
            "{name} {qtype} with another DS: {forged}"
        );
    }

    // Negative answers are proven with one NSEC made for the name (RFC 9824 compact
    // denial): a name that does not exist, a type a static name or a service lacks.
    for (name, qtype) in [
        ("nope.llm.example.com.", "A"),
        ("a.b.nope.llm.example.com.", "AAAA"),
        ("ns1.llm.example.com.", "TXT"),
        ("api.llm.example.com.", "TXT"),
        // The delegation's child is unsigned: no DS, proven.
        ("sub.llm.example.com.", "DS"),
    ] {
        let said = delv(server.addr, &anchor, name, qtype);
        assert!(
            said.contains("; negative response, fully validated"),
            "{name} {qtype}: {said}"
        );
        let forged = delv(server.addr, &other, name, qtype);
        assert!(
            !forged.contains("fully validated"),
            "{name} {qtype} with another DS: {forged}"
        );
    }
    let nxdomain = dig(server.addr, &["+dnssec", "nope.llm.example.com", "A"]);
    assert!(
        nxdomain.contains("status: NOERROR"),
        "a compact answer: {nxdomain}"
    );
    assert!(
        nxdomain.contains("NSEC\t\\000.nope.llm.example.com. RRSIG NSEC TYPE128"),
        "NXNAME in the NSEC: {nxdomain}"
    );
    // A referral proves there is no DS at the cut, so a validator takes the child as unsigned.
    let referral = dig(
        server.addr,
        &["+dnssec", "+norec", "www.sub.llm.example.com", "A"],
    );
    assert!(
        referral.contains("sub.llm.example.com.\t3600\tIN\tNS\tns.sub.llm.example.com."),
        "{referral}"
    );
    assert!(
        referral.contains("NSEC\t\\000.sub.llm.example.com. NS RRSIG NSEC"),
        "{referral}"
    );
    let unsigned = dig(server.addr, &["nope.llm.example.com", "A"]);
    assert!(
        unsigned.contains("status: NXDOMAIN") && !unsigned.contains("NSEC"),
        "{unsigned}"
    );

    // Clients elsewhere get another region's addresses, signed as well (the region's set is
    // signed when the plan is made, not per query).
    let tokyo = dig(
        server.addr,
        &[
            "+dnssec",
            "+subnet=133.242.0.0/24",
            "api.llm.example.com",
            "A",
        ],
    );
    let answer: Vec<&str> = tokyo
        .lines()
        .filter(|l| l.starts_with("api.llm.example.com."))
        .collect();
    assert!(
        answer.iter().any(|l| l.contains("\tA\t203.0.113.3")),
        "{tokyo}"
    );
    assert!(
        answer.iter().any(|l| l.contains("\tRRSIG\tA 13 4 20 ")),
        "{tokyo}"
    );
    // The signatures' window: from an hour ago (validators whose clock is behind) to the
    // zone's validity (10 days) from now.
    let rrsig = answer
        .iter()
        .find(|l| l.contains("\tRRSIG\t"))
        .expect("an RRSIG");
    let fields: Vec<&str> = rrsig.split_whitespace().collect();
    let (expiration, inception) = (epoch(fields[8]), epoch(fields[9]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now - 3600 - 60..=now - 3600 + 5).contains(&inception),
        "{rrsig}"
    );
    assert!(
        (now + 10 * 86_400 - 60..=now + 10 * 86_400 + 5).contains(&expiration),
        "{rrsig}"
    );
    // Without DO, no signatures.
    let plain = dig(server.addr, &["api.llm.example.com", "A"]);
    assert!(
        plain.contains("203.0.113.") && !plain.contains("RRSIG"),
        "{plain}"
    );
}

/// Unbound (Debian's) as a validating resolver in front of `server`, trusting `ds` for the
/// zone, sending client subnets on to it; everything else it would ask goes to a closed port
/// of this host, never beyond. Killed on drop.
struct Unbound {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    /// Started once it answers the zone's SOA with `ready` (a status line), on a loopback
    /// address of its own, so that no other test's port 0 can take its port before it binds.
    fn start(server: SocketAddr, ds: &str, ready: &str) -> Unbound {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::new(common::own_loopback(), 5353);
        let ds = ds.replace(" 3600 IN ", " ");
        let stub = format!("{}@{}", server.ip(), server.port());
        let config = format!(
            r#"server:
  interface: {ip}@{port}
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "subnetcache validator iterator"
  send-client-subnet: 127.0.0.1
  client-subnet-always-forward: yes
  trust-anchor: "{ds}"
  qname-minimisation: no
  harden-referral-path: no
  val-log-level: 2
stub-zone:
  name: "llm.example.com."
  stub-addr: {stub}
stub-zone:
  name: "."
  stub-addr: 127.0.0.1@9
remote-control:
  control-enable: no
"#,
            ip = addr.ip(),
            port = addr.port(),
            dir = dir.path().display(),
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, config).expect("write unbound.conf");
        // Its log is kept for the message should it not answer.
        let log_path = dir.path().join("unbound.log");
        let log = std::fs::File::create(&log_path).expect("unbound.log");
        let child = Command::new("unbound")
            .args(["-d", "-c", &path_arg(&path)])
            .stderr(log)
            .spawn()
            .expect("unbound must be installed (scripts/test installs it)");
        let mut unbound = Unbound {
            child,
            addr,
            _dir: dir,
        };
        let start = std::time::Instant::now();
        while !dig(addr, &["llm.example.com", "SOA"]).contains(ready) {
            let exited = unbound.child.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed().as_secs() >= 10 {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("unbound did not answer on {addr} ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        unbound
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer addresses and whether the AD flag is set, in what dig printed.
fn validated(dig_output: &str) -> (bool, Vec<String>) {
    let ad = dig_output
        .lines()
        .any(|l| l.starts_with(";; flags:") && l.contains(" ad"));
    let addresses = dig_output
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() == 5 && fields[3] == "A").then(|| fields[4].to_owned())
        })
        .collect();
    (ad, addresses)
}

#[test]
fn unbound_validates_geo_answers_from_two_places_and_after_a_failover() {
    use crate::common::endpoint::{Endpoint, Mode};
    let dublin = Endpoint::start(Mode::Ok);
    let zone = format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com, negative_ttl: 1 }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10] }}
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    addresses: [203.0.113.20]
    check: {{ http: "{}", interval: 200ms, timeout: 150ms, fall: 1, rise: 1 }}
  ap-northeast: {{ location: {{ lat: 35.7, lon: 139.7 }}, addresses: [203.0.113.30] }}
services:
  api: {{ ttl: 1, regions: [us-east, eu-west, ap-northeast] }}
dnssec: {{ key: k.pem }}
"#,
        dublin.url()
    );
    let dir = zone_dir(&zone);
    let ds = keygen(&dir.path().join("zones/k.pem"));
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn(dir, &args, None);
    let unbound = Unbound::start(server.addr, &ds, "status: NOERROR");

    let ask = |subnet: &str, name: &str| {
        let subnet = format!("+subnet={subnet}");
        validated(&dig(unbound.addr, &["+dnssec", &subnet, name, "A"]))
    };
    assert_eq!(
        ask("81.2.69.0/24", "api.llm.example.com"),
        (true, vec!["203.0.113.20".into()])
    );
    assert_eq!(
        ask("133.242.0.0/24", "api.llm.example.com"),
        (true, vec!["203.0.113.30".into()])
    );
    assert_eq!(
        ask("81.2.69.0/24", "ns1.llm.example.com"),
        (true, vec!["198.51.100.53".into()])
    );
    let nxdomain = dig(unbound.addr, &["+dnssec", "nope.llm.example.com", "A"]);
    assert!(
        validated(&nxdomain).0,
        "a validated negative answer: {nxdomain}"
    );
    let nodata = dig(unbound.addr, &["+dnssec", "ns1.llm.example.com", "TXT"]);
    assert!(validated(&nodata).0, "a validated NODATA: {nodata}");

    // Dublin fails: London is sent on, and the new answer validates too.
    dublin.set(Mode::Fail);
    let start = std::time::Instant::now();
    loop {
        let (ad, addresses) = ask("81.2.69.0/24", "api.llm.example.com");
        if addresses != ["203.0.113.20"] {
            assert!(ad, "the answer after the failover validates");
            assert!(!addresses.is_empty());
            break;
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "London never moved off Dublin"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Another key's DS: Unbound refuses the zone's answers (SERVFAIL).
    let forged_dir = tempfile::tempdir().expect("tempdir");
    let other_ds = keygen(&forged_dir.path().join("k.pem"));
    let forged = Unbound::start(server.addr, &other_ds, "status: SERVFAIL");
    let said = dig(forged.addr, &["+dnssec", "api.llm.example.com", "A"]);
    assert!(said.contains("status: SERVFAIL"), "{said}");
}

#[test]
fn a_key_roll_publishes_both_keys_and_swaps_the_signer_at_a_reload() {
    let zone = |dnssec: &str| format!("{ZONE}dnssec: {dnssec}\n");
    let dir = zone_dir(&zone("{ key: old.pem, publish: [new.pem] }"));
    let zones = dir.path().join("zones");
    let (old_ds, new_ds) = (
        keygen(&zones.join("old.pem")),
        keygen(&zones.join("new.pem")),
    );
    let (old, new) = (
        trust_anchor(dir.path(), &old_ds),
        trust_anchor(dir.path(), &new_ds),
    );
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn(dir, &args, None);
    let dnskeys = || {
        dig(server.addr, &["+short", "llm.example.com", "DNSKEY"])
            .lines()
            .count()
    };
    let validates = |anchor: &str| {
        delv(server.addr, anchor, "api.llm.example.com.", "A").starts_with("; fully validated")
    };

    // Before the DS swap: both keys published, the old one signs.
    assert_eq!(dnskeys(), 2);
    assert!(validates(&old) && !validates(&new));

    // After it: the new key signs, the old one stays published for caches that hold it.
    let file = server.dir.path().join("zones/llm.yaml");
    std::fs::write(&file, zone("{ key: new.pem, publish: [old.pem] }")).expect("write");
    server.signal("HUP");
    let start = std::time::Instant::now();
    while !validates(&new) {
        assert!(start.elapsed().as_secs() < 10, "the new key never signed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(dnskeys(), 2);

    // The old key retired.
    std::fs::write(&file, zone("{ key: new.pem }")).expect("write");
    server.signal("HUP");
    let start = std::time::Instant::now();
    while dnskeys() != 1 {
        assert!(
            start.elapsed().as_secs() < 10,
            "the old key was never retired"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(validates(&new) && !validates(&old));
}

#[test]
fn several_regions_in_one_answer_are_one_signed_rrset() {
    let zone = ZONE.replace("    ttl: 20\n", "    ttl: 20\n    answers: 2\n");
    assert_ne!(zone, ZONE);
    let dir = zone_dir(&format!("{zone}dnssec: {{ key: k.pem }}\n"));
    let anchor = trust_anchor(dir.path(), &keygen(&dir.path().join("zones/k.pem")));
    let args = serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn(dir, &args, None);

    for qtype in ["A", "AAAA"] {
        let said = delv(server.addr, &anchor, "api.llm.example.com.", qtype);
        assert!(said.starts_with("; fully validated"), "{qtype}: {said}");
    }
    let london = dig(
        server.addr,
        &[
            "+dnssec",
            "+subnet=81.2.69.0/24",
            "api.llm.example.com",
            "A",
        ],
    );
    let answer: Vec<&str> = london
        .lines()
        .filter(|l| l.starts_with("api.llm.example.com."))
        .collect();
    let addresses = answer.iter().filter(|l| l.contains("\tA\t")).count();
    let signatures = answer.iter().filter(|l| l.contains("\tRRSIG\t")).count();
    assert_eq!((addresses, signatures), (2, 1), "{london}");
}
