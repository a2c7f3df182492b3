//! The command line as operators script against it: `check`, and `serve` failing cleanly.

use crate::common::{
    self, Server, ZONE, http, path_arg, query, repo_root, run, serve_args, udp, write_mmdb,
    zone_dir,
};
use hickory_proto::rr::RecordType;
use serde_json::json;

#[test]
fn check_summarises_every_valid_zone() {
    let out = run(&["check"], &repo_root());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "zones/llm.yaml: llm.example.com.: 1 services, 3 regions, 9 static records"
    );
}

#[test]
fn the_docker_example_zone_is_valid() {
    let out = run(&["check", "--zones", "docker/zones"], &repo_root());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "docker/zones/llm.yaml: llm.example.com.: 1 services, 2 regions, 1 static records"
    );
}

#[test]
fn check_reports_each_error_with_file_line_and_column_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("mkdir");
    std::fs::write(zones.join("good.yaml"), ZONE).expect("write");
    let broken = ZONE
        .replace("origin: llm.example.com.", "origin: other.example.com.")
        .replace(
            "regions: [us-east, eu-west, ap-northeast]",
            "regions: [us-east, eu-wset]",
        )
        .replace(
            "addresses: [203.0.113.30, 203.0.113.31]",
            "addresses: [203.0.113.300]",
        );
    std::fs::write(zones.join("broken.yaml"), broken).expect("write");
    std::fs::write(zones.join("syntax.yml"), "origin: x.\nsoa: {\n").expect("write");

    let out = run(&["check", "--zones", &path_arg(&zones)], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path_arg(&zones.join("broken.yaml"));
    for expected in [
        format!("{file}:31:17: region 'ap-northeast': invalid IP address '203.0.113.300'"),
        format!(
            "{file}:35:24: service 'api': unknown region 'eu-wset' (known: us-east, eu-west, ap-northeast)"
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!(
            "{}:2:6: unclosed bracket",
            path_arg(&zones.join("syntax.yml"))
        )),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(last, format!("3 error(s) in {}", path_arg(&zones)));
}

#[test]
fn serve_refuses_to_start_on_a_broken_zone_or_a_missing_database() {
    let dir = zone_dir(&ZONE.replace("ttl: 20", "ttl: twenty"));
    let out = run(&serve_args(dir.path(), &["--admin", "off"]), dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("llm.yaml:34:10: invalid u32"),
        "file and line of the bad TTL: {stderr}"
    );

    std::fs::write(dir.path().join("zones/llm.yaml"), ZONE).expect("write");
    std::fs::remove_file(dir.path().join("geo.mmdb")).expect("remove");
    let out = run(&serve_args(dir.path(), &["--admin", "off"]), dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let missing = path_arg(&dir.path().join("geo.mmdb"));
    assert!(
        stderr.contains(&format!("{missing}: cannot read GeoIP database")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once: {stderr}"
    );
}

#[test]
fn several_geoip_files_and_listen_addresses() {
    let dir = zone_dir(ZONE);
    // An IPv4-only file first, then a combined one: IPv6 lookups skip the first.
    let v4 = dir.path().join("v4.mmdb");
    let mut writer = mmdb_writer::Writer::builder("Test")
        .ip_version(mmdb_writer::IpVersion::V4)
        .description(&[("en", "v4")])
        .build_epoch(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
        .build();
    let japan: mmdb_writer::ipnet::IpNet = "133.242.0.0/16".parse().expect("net");
    writer
        .insert(japan, &json!({"country_code": "JP"}))
        .expect("insert");
    std::fs::write(&v4, writer.to_bytes().expect("encode")).expect("write");
    let v6 = dir.path().join("v6.mmdb");
    write_mmdb(&v6, &[("2a02:cf40::/29", json!({"country_code": "NO"}))]);

    let zones = path_arg(&dir.path().join("zones"));
    let (v4, v6) = (path_arg(&v4), path_arg(&v6));
    let mut args: Vec<&str> = vec!["serve", "--zones", &zones, "--geoip", &v4, "--geoip", &v6];
    args.extend(["--listen", "127.0.0.1:0", "--admin", "off"]);
    let ipv6_loopback = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if ipv6_loopback {
        args.extend(["--listen", "[::1]:0"]);
    } else {
        eprintln!("no IPv6 loopback on this machine: testing the IPv4 listener only");
    }
    let args: Vec<String> = args.into_iter().map(String::from).collect();
    let server = Server::spawn(dir, &args, None);
    let answer = |to: std::net::SocketAddr, subnet| {
        common::addresses(&udp(
            to,
            &query("api.llm.example.com.", RecordType::A, Some(subnet)),
        ))
    };
    assert_eq!(
        answer(server.addr, "133.242.1.0/24"),
        ["203.0.113.30", "203.0.113.31"],
        "from the IPv4 file"
    );
    assert_eq!(
        answer(server.addr, "2a02:cf40::/32"),
        ["203.0.113.20"],
        "from the IPv6 file"
    );
    if ipv6_loopback {
        // Each address is logged as it is served: the second may follow the first.
        common::until_logged(&server, "listening on [", 1);
        let log = server.log();
        let v6_addr = log
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .find(|a| a.starts_with('['))
            .expect("an IPv6 listen line");
        let v6_addr: std::net::SocketAddr = v6_addr.parse().expect("address");
        assert_eq!(
            answer(v6_addr, "81.2.69.0/24"),
            ["203.0.113.10"],
            "unknown to these files: first region"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_fields() {
    let dir = zone_dir(ZONE);
    let mut args = vec!["--log-format".to_string(), "json".to_string()];
    args.extend(serve_args(dir.path(), &["--admin", "off"]));
    let zone_file = dir.path().join("zones/llm.yaml");
    let server = Server::spawn(dir, &args, None);
    std::fs::write(zone_file, ZONE.replace("ttl: 20", "ttl: soon")).expect("write");
    let start = std::time::Instant::now();
    while !server.log().contains("invalid u32") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = server.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("the reload error");
    assert_eq!(error["fields"]["line"], 34, "{error}");
    assert_eq!(error["fields"]["column"], 10);
    assert!(
        error["fields"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("llm.yaml"))
    );
}

/// Every property of the schema, with its path, recursively.
fn properties(schema: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, property) in props {
            out.push((format!("{path}.{name}"), property.clone()));
        }
    }
    if let Some(defs) = schema.get("$defs").and_then(|d| d.as_object()) {
        for (name, def) in defs {
            properties(def, name, out);
        }
    }
}

#[test]
fn the_schema_describes_every_key_and_accepts_every_bundled_zone_file() {
    let out = run(&["schema"], &repo_root());
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON schema");
    let mut all = Vec::new();
    properties(&schema, "Zone", &mut all);
    assert!(all.len() > 60, "every key: {}", all.len());
    for (path, property) in &all {
        let described = property
            .get("description")
            .and_then(|d| d.as_str())
            .is_some_and(|d| !d.is_empty());
        assert!(described, "{path} has no description");
    }

    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let zones: Vec<_> = ["zones", "docker/zones"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo_root().join(dir)).expect("zone dir"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(!zones.is_empty());
    for path in zones {
        let text = std::fs::read_to_string(&path).expect("read");
        let document: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    let document: serde_json::Value = serde_saphyr::from_str(ZONE).expect("YAML");
    assert!(validator.is_valid(&document), "the test zone");
    let typo = ZONE.replace("addresses: [203.0.113.30", "adresses: [203.0.113.30");
    let typo: serde_json::Value = serde_saphyr::from_str(&typo).expect("YAML");
    assert!(
        !validator.is_valid(&typo),
        "an unknown key fails the schema too"
    );
}

#[test]
fn the_committed_schema_file_is_the_generated_one() {
    let out = run(&["schema"], &repo_root());
    let committed = std::fs::read_to_string(repo_root().join("regiondns.schema.json"))
        .expect("regiondns.schema.json");
    assert_eq!(
        committed,
        String::from_utf8_lossy(&out.stdout),
        "regenerate it: cargo run -- schema > regiondns.schema.json"
    );
}

#[test]
fn check_geoip_reports_the_database_and_the_well_known_sample() {
    let dir = zone_dir(ZONE);
    let geo = path_arg(&dir.path().join("geo.mmdb"));
    let out = run(&["check", "--geoip", &geo], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("type GeoIP2-City, IPv6"), "{stdout}");
    assert!(stdout.contains("records nested"), "{stdout}");
    assert!(
        stdout.contains("8.8.8.8 (Google Public DNS): US NA 37.75,-97.82 (network /24)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1.1.1.1 (Cloudflare DNS): not in the database"),
        "{stdout}"
    );
    assert!(
        stdout.contains("located 1 of 9 well-known addresses"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("llm.yaml"),
        "only the GeoIP file is checked: {stdout}"
    );

    // The bundled database, as it ships, locates the whole sample.
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/dbip-country.mmdb");
    let out = run(&["check", "--geoip", bundled], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("records flat"), "{stdout}");
    assert!(
        stdout.contains("193.0.6.139 (RIPE NCC, Amsterdam): NL EU"),
        "{stdout}"
    );
    assert!(stdout.contains("located 9 of 9"), "{stdout}");

    let useless = dir.path().join("useless.mmdb");
    common::write_mmdb(
        &useless,
        &[("10.0.0.0/8", serde_json::json!({"country_code": "US"}))],
    );
    let out = run(&["check", "--geoip", &path_arg(&useless)], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("locates none of 9"));

    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, "not a database").expect("write");
    let out = run(
        &["check", "--geoip", &path_arg(&garbage), "--zones", "zones"],
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("garbage.mmdb: not a GeoIP (MaxMind DB) file"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("zones/llm.yaml: "),
        "--zones checks the zones too: {stdout}"
    );
}

#[test]
fn one_broken_zone_file_at_start_leaves_the_others_served_and_healthz_names_it() {
    let dir = zone_dir(ZONE);
    let other = ZONE.replace("origin: llm.example.com.", "origin: other.example.com.");
    let broken = other.replace("ttl: 20", "ttl: twenty");
    std::fs::write(dir.path().join("zones/other.yaml"), &broken).expect("write");
    let strict = run(
        &serve_args(dir.path(), &["--admin", "off", "--strict"]),
        dir.path(),
    );
    assert!(!strict.status.success(), "--strict refuses to start");

    let args = serve_args(dir.path(), &["--admin", "127.0.0.1:0"]);
    let server = Server::spawn(dir, &args, None);
    let a = query("api.llm.example.com.", RecordType::A, None);
    assert!(
        !udp(server.addr, &a).answers.is_empty(),
        "the valid zone is served"
    );
    let other_a = query("api.other.example.com.", RecordType::A, None);
    assert_eq!(
        udp(server.addr, &other_a).metadata.response_code,
        hickory_proto::op::ResponseCode::Refused,
        "the broken one is not"
    );
    let admin = server.admin.expect("admin");
    let (status, body) = http(admin, "GET", "/healthz", &[]);
    assert_eq!(status, 200, "serving: {body}");
    assert!(
        body.contains("other.yaml:") && body.contains("invalid u32"),
        "{body}"
    );
    assert!(server.log().contains("other.yaml"), "and the log says so");

    std::fs::write(server.dir.path().join("zones/other.yaml"), &other).expect("fix");
    server.signal("HUP");
    let start = std::time::Instant::now();
    while udp(server.addr, &other_a).answers.is_empty() {
        assert!(start.elapsed().as_secs() < 5, "the fixed zone is loaded");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(http(admin, "GET", "/healthz", &[]).1, "ok\n");
}
