//! The server as an operator sees it: `dig` against the real binary, including every dig line of
//! the README, run against the bundled zone and GeoIP database.

use crate::common::{Server, ZONE, dig, repo_root};

#[test]
fn dig_gets_the_nearest_region_with_aa_ttl_and_ecs_scope() {
    let server = Server::start(ZONE);
    let out = dig(
        server.addr,
        &["api.llm.example.com", "A", "+subnet=133.242.0.0/24"],
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(" aa"), "authoritative flag: {out}");
    assert!(out.contains("CLIENT-SUBNET: 133.242.0.0/24/16"), "{out}");
    assert!(
        out.contains("api.llm.example.com.\t20\tIN\tA\t203.0.113.30"),
        "{out}"
    );

    let out = dig(
        server.addr,
        &[
            "api.llm.example.com",
            "A",
            "+subnet=81.2.69.0/24",
            "+tcp",
            "+short",
        ],
    );
    assert_eq!(out.trim(), "203.0.113.20", "over TCP");
    let out = dig(
        server.addr,
        &[
            "api.llm.example.com",
            "AAAA",
            "+subnet=8.8.8.0/24",
            "+short",
        ],
    );
    assert_eq!(out.trim(), "2001:db8:10::1");
    let out = dig(server.addr, &["api.llm.example.com", "A", "+noedns"]);
    assert!(
        !out.contains("OPT PSEUDOSECTION"),
        "no OPT without EDNS: {out}"
    );
    assert!(out.contains("203.0.113.10"), "{out}");
}

#[test]
fn dig_sees_negative_answers_refusals_and_badvers() {
    let server = Server::start(ZONE);
    let out = dig(server.addr, &["nope.llm.example.com", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        out.contains(
            "llm.example.com.\t30\tIN\tSOA\tns1.llm.example.com. hostmaster.example.com. 2026112401"
        ),
        "{out}"
    );
    let out = dig(server.addr, &["www.example.org", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = dig(
        server.addr,
        &["api.llm.example.com", "A", "+edns=1", "+noednsnegotiation"],
    );
    assert!(out.contains("status: BADVERS"), "{out}");
}

#[test]
fn dig_retries_truncated_answers_over_tcp() {
    let big: Vec<String> = (0..12)
        .map(|i| format!("\"{i:02}{}\"", "x".repeat(180)))
        .collect();
    let zone = ZONE.replace(
        "  docs: { CNAME: docs.example.net. }",
        &format!("  big: {{ TXT: [{}] }}", big.join(", ")),
    );
    let server = Server::start(&zone);
    let out = dig(server.addr, &["big.llm.example.com", "TXT", "+ignore"]);
    assert!(out.contains(" tc"), "truncated over UDP: {out}");
    let out = dig(server.addr, &["big.llm.example.com", "TXT"]);
    assert!(out.contains("ANSWER: 12"), "dig retried over TCP: {out}");
}

/// Every `dig ... # -> EXPECTED` line of the README's dig block, against the bundled data.
#[test]
fn readme_dig_examples_hold_on_the_bundled_zone_and_geoip_data() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let examples: Vec<(Vec<String>, String)> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("dig @127.0.0.1 -p 5353 "))
        .filter_map(|line| line.split_once("# ->"))
        .map(|(args, expected)| {
            let args = args.split_whitespace().map(String::from).collect();
            let expected = expected
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            (args, expected)
        })
        .collect();
    assert!(examples.len() >= 3, "the README has dig examples");

    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--admin", "off"]
        .map(String::from)
        .to_vec();
    let server = Server::spawn(dir, &args, Some(&repo_root()));
    for (args, expected) in examples {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("+short");
        let out = dig(server.addr, &args);
        assert_eq!(out.trim(), expected, "dig {}", args.join(" "));
    }
}
