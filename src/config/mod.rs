//! Zone configuration: reads the YAML zone files of a directory and validates each into an
//! immutable [`ZoneConfig`].
//!
//! This module owns the zone file format and every rule about it. Each error names the file,
//! line and column and says what is wrong; validation reports all it finds in a file, not just
//! the first. It never touches sockets, health or routing: what it returns is only ever
//! replaced whole, never patched.

mod raw;
mod validate;

pub use raw::schema;

/// Most regions' addresses one answer may carry (`answers: N`).
pub const MAX_ANSWERS: usize = 8;
/// Most regions one service may list.
pub const MAX_SERVICE_REGIONS: usize = 32;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use hickory_proto::rr::{Name, RData, RecordType};

use crate::geo::Coordinates;

/// One validated zone file.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    pub source: PathBuf,
    pub origin: Name,
    /// TTL of the SOA, the apex NS and static records without their own `ttl`.
    pub ttl: u32,
    pub soa: Soa,
    pub nameservers: Vec<Name>,
    pub records: Vec<RecordSet>,
    pub regions: Vec<Region>,
    pub services: Vec<Service>,
    /// Whether `_explain.<service>` TXT queries are answered (it discloses configuration).
    pub explain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Soa {
    pub primary: Name,
    pub contact: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub negative_ttl: u32,
}

/// The static records of one name and type.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSet {
    pub name: Name,
    pub record_type: RecordType,
    pub ttl: u32,
    pub rdata: Vec<RData>,
}

/// A place a service can be answered from.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    pub location: Coordinates,
    pub addresses: Vec<IpAddr>,
    /// How its health is probed; a region without a check is always up.
    pub check: Option<Check>,
    /// Taken out of service by the operator.
    pub drained: bool,
    /// Legal area the region belongs to (e.g. `eu`), for sovereignty rules.
    pub jurisdiction: Option<String>,
    /// Relative share under the `weighted` policy.
    pub weight: u32,
}

/// A health check: what to probe, how often, and when to change the region's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub target: CheckTarget,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckTarget {
    Http(HttpCheck),
    /// A TCP connect to `host:port`.
    Tcp {
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub url: reqwest::Url,
    pub method: reqwest::Method,
    /// Header values with `${VAR}` already read from the environment.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Status codes that count as success; `None`: any 2xx.
    pub expect: Option<Vec<u16>>,
    pub body_contains: Option<String>,
}

/// When a region changes state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Consecutive failures before down.
    pub fall: u32,
    /// Consecutive successes before up again.
    pub rise: u32,
    /// A success slower than this counts as slow; `None`: never.
    pub slow: Option<Duration>,
    /// Probes in the sliding window of the two rates.
    pub window: u32,
    /// Failures / window above this: down.
    pub max_error_rate: f64,
    /// Slow / window above this: degraded.
    pub max_slow_rate: f64,
}

/// What a service answers when every one of its regions is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Answer as if all were up (fail open), as Route 53 and gdnsd do.
    Nearest,
    ServFail,
}

/// A name answered with the addresses of the region chosen for each client.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: Name,
    pub ttl: u32,
    pub when_all_down: WhenAllDown,
    /// Indexes into [`ZoneConfig::regions`], in the configured order (the first one answers
    /// clients whose location is unknown).
    pub regions: Vec<usize>,
    pub policy: Policy,
    /// How many regions' addresses an answer carries.
    pub answers: usize,
    /// Share of a degraded region's clients sent to the next region (1.0: all of them).
    pub shed: f64,
    pub canary: Option<Canary>,
    /// Matched in order; the first match applies.
    pub rules: Vec<Rule>,
}

/// How the eligible regions of a service are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// By distance to the client.
    Nearest,
    /// In the configured order.
    Priority,
    /// By weight, stable per client subnet.
    Weighted,
}

/// A region that takes a fixed share of client subnets while it is up.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Index into [`ZoneConfig::regions`].
    pub region: usize,
    pub share: f64,
}

/// A routing rule: for clients it matches, which regions are allowed and preferred.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub matcher: Matcher,
    pub allow: Option<Allow>,
    /// What to answer when no allowed region can serve.
    pub when_none: FailClosed,
    /// Indexes into [`ZoneConfig::regions`], tried in this order before the policy's order.
    pub prefer: Vec<usize>,
}

/// Which clients a rule applies to: any listed continent, country or network (each list
/// that is given must match).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matcher {
    pub continents: Vec<crate::geo::Continent>,
    pub countries: Vec<crate::geo::CountryCode>,
    pub networks: Vec<ipnet::IpNet>,
}

/// The regions a matched client may be sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// Indexes into [`ZoneConfig::regions`].
    pub regions: Vec<usize>,
    /// As written, for messages: `jurisdiction eu`, `regions eu-west, eu-north`.
    pub description: String,
}

/// The fail-closed answer of a rule whose allowed regions are all unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailClosed {
    Refuse,
    ServFail,
    NoData,
}

impl ZoneConfig {
    /// `llm.example.com.: 1 services, 3 regions, 7 static records`
    pub fn summary(&self) -> String {
        let records: usize = self.records.iter().map(|set| set.rdata.len()).sum();
        format!(
            "{}: {} services, {} regions, {} static records",
            self.origin,
            self.services.len(),
            self.regions.len(),
            records
        )
    }
}

/// A problem in a zone file, at a position when one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column.
    pub position: Option<(u32, u32)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Loads every `*.yaml` / `*.yml` file of `dir`, in name order. Errors from all files are
/// returned together, so one run of `regiondns check` shows everything to fix.
pub fn load_dir(dir: &Path) -> Result<Vec<ZoneConfig>, Vec<ConfigError>> {
    let files = zone_files(dir).map_err(|e| vec![e])?;
    if files.is_empty() {
        return Err(vec![ConfigError {
            path: dir.to_owned(),
            position: None,
            message: "no zone files (*.yaml, *.yml)".into(),
        }]);
    }
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match load_file(&path) {
            Ok(zone) => zones.push(zone),
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    check_distinct_origins(&zones, &mut errors);
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}

/// Loads and validates one zone file. Without an explicit SOA serial, the file's modification
/// time (seconds since the epoch) is used: it changes exactly when the file does.
pub fn load_file(path: &Path) -> Result<ZoneConfig, Vec<ConfigError>> {
    let io_error = |e: std::io::Error| {
        vec![ConfigError {
            path: path.to_owned(),
            position: None,
            message: e.to_string(),
        }]
    };
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error)?;
    let serial = modified
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    parse(path, &text, serial)
}

/// Parses and validates zone file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str, default_serial: u32) -> Result<ZoneConfig, Vec<ConfigError>> {
    let options = serde_saphyr::options! { with_snippet: false };
    let zone: raw::Zone = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| vec![yaml_error(path, &e)])?;
    validate::zone(path, zone, default_serial)
}

fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let position = error
        .location()
        .map(|l| (l.line() as u32, l.column() as u32));
    let mut message = error.to_string();
    if let Some((line, column)) = position {
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    ConfigError {
        path: path.to_owned(),
        position,
        message: message.replace("unknown field", "unknown key"),
    }
}

/// The zone files of `dir` (`*.yaml`, `*.yml`), in name order.
pub fn zone_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let error = |message: String| ConfigError {
        path: dir.to_owned(),
        position: None,
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| error(e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reports every zone whose origin an earlier zone already has.
pub fn check_distinct_origins(zones: &[ZoneConfig], errors: &mut Vec<ConfigError>) {
    for (i, zone) in zones.iter().enumerate() {
        if let Some(first) = zones[..i].iter().find(|z| z.origin == zone.origin) {
            errors.push(ConfigError {
                path: zone.source.clone(),
                position: None,
                message: format!(
                    "zone {} is already defined in {}",
                    zone.origin,
                    first.source.display()
                ),
            });
        }
    }
}

/// A TXT value as DNS character-strings of at most 255 bytes each (RFC 1035 3.3.14), split on
/// character boundaries so no UTF-8 sequence is cut in two.
pub fn character_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > 255 {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "origin: llm.example.com.
soa: { primary: ns1, contact: hostmaster@example.com }
ns: [ns1]
";
    const NS1: &str = "  ns1: { A: [198.51.100.53] }\n";
    const REGIONS: &str = "regions:
  us-east:
    location: { lat: 37.4, lon: -79.1 }
    addresses: [203.0.113.10, \"2001:db8:10::1\"]
  eu-west:
    location: { lat: 53.3, lon: -6.3 }
    addresses: [203.0.113.20]
";

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("zones/t.yaml"), text, 1) {
            Ok(_) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_error(text: &str, expected: &str) {
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e == expected),
            "expected {expected:?} in {errors:#?}"
        );
    }

    #[test]
    fn a_valid_zone_is_read_whole() {
        let text = format!(
            "{HEAD}records:\n{NS1}  \"@\": {{ TXT: \"hello\", MX: \"10 mail\" }}\n{REGIONS}services:\n  api: {{ ttl: 20, regions: [eu-west, us-east] }}\n"
        );
        let zone = parse(Path::new("t.yaml"), &text, 42).expect("valid");
        assert_eq!(zone.origin.to_string(), "llm.example.com.");
        assert_eq!(zone.soa.serial, 42, "default serial");
        assert_eq!(zone.soa.contact.to_string(), "hostmaster.example.com.");
        assert_eq!(zone.soa.primary.to_string(), "ns1.llm.example.com.");
        assert_eq!(zone.ttl, 3600);
        assert_eq!(zone.records.len(), 3);
        let mx = zone
            .records
            .iter()
            .find(|r| r.record_type == RecordType::MX)
            .expect("MX");
        assert_eq!(mx.rdata[0].to_string(), "10 mail.llm.example.com.");
        assert_eq!(zone.services[0].name.to_string(), "api.llm.example.com.");
        assert_eq!(zone.services[0].ttl, 20);
        assert_eq!(zone.services[0].regions, vec![1, 0], "list order kept");
        assert_eq!(zone.regions[0].addresses.len(), 2);
        assert_eq!(
            zone.summary(),
            "llm.example.com.: 1 services, 2 regions, 3 static records"
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_line_and_column() {
        let text = format!(
            "{HEAD}records:\n{NS1}regions:\n  eu-west:\n    location: {{ lat: 53.3, lon: -6.3 }}\n    adress: [203.0.113.20]\n"
        );
        assert_error(
            &text,
            "zones/t.yaml:9:5: unknown key `adress`, expected one of location, addresses, check, drained, jurisdiction, weight",
        );
        assert_error(
            &format!("{HEAD}records:\n  ns1: {{ A: [198.51.100.53], AAA: [\"::1\"] }}\n"),
            "zones/t.yaml:5:30: unknown key `AAA`, expected one of ttl, A, AAAA, CNAME, TXT, MX, SRV, CAA, PTR, NS",
        );
        assert_error(
            &format!("{HEAD}colour: blue\n"),
            "zones/t.yaml:4:1: unknown key `colour`, expected one of origin, ttl, soa, ns, records, regions, services, explain",
        );
    }

    #[test]
    fn bad_addresses_are_reported_where_they_are() {
        let text = format!(
            "{HEAD}records:\n{NS1}  www: {{ A: [\"2001:db8::1\"], AAAA: [192.0.2.1] }}\n  x: {{ A: 300.1.1.1 }}\n"
        );
        let errors = errors(&text);
        assert!(errors.contains(&"zones/t.yaml:6:14: invalid IPv4 address '2001:db8::1' (an IPv6 address belongs under AAAA)".to_string()), "{errors:#?}");
        assert!(errors.contains(&"zones/t.yaml:6:37: invalid IPv6 address '192.0.2.1' (an IPv4 address belongs under A)".to_string()), "{errors:#?}");
        assert!(
            errors.contains(&"zones/t.yaml:7:11: invalid IPv4 address '300.1.1.1'".to_string()),
            "{errors:#?}"
        );
        let region = format!(
            "{HEAD}records:\n{NS1}regions:\n  eu:\n    location: {{ lat: 1, lon: 2 }}\n    addresses: [203.0.113.20, nope]\n"
        );
        assert_error(
            &region,
            "zones/t.yaml:9:31: region 'eu': invalid IP address 'nope'",
        );
    }

    #[test]
    fn unknown_and_repeated_regions_in_a_service_are_errors() {
        let text = format!(
            "{HEAD}records:\n{NS1}{REGIONS}services:\n  api:\n    regions: [us-east, eu-wset, us-east]\n"
        );
        assert_error(
            &text,
            "zones/t.yaml:15:24: service 'api': unknown region 'eu-wset' (known: us-east, eu-west)",
        );
        assert_error(
            &text,
            "zones/t.yaml:15:33: service 'api': region 'us-east' is listed twice",
        );
        let empty = format!("{HEAD}records:\n{NS1}{REGIONS}services:\n  api: {{ regions: [] }}\n");
        assert_error(&empty, "zones/t.yaml:14:19: service 'api' lists no regions");
    }

    #[test]
    fn duplicate_names_are_errors() {
        assert_error(
            &format!("{HEAD}records:\n{NS1}  NS1.llm.example.com.: {{ TXT: x }}\n"),
            "zones/t.yaml:6:3: duplicate name 'NS1.llm.example.com.' (first at line 5)",
        );
        assert_error(
            &format!("{HEAD}records:\n{NS1}  ns1: {{ TXT: x }}\n"),
            "zones/t.yaml:6:3: duplicate mapping key: ns1, set DuplicateKeyPolicy in Options if acceptable",
        );
        let region = format!(
            "{HEAD}records:\n{NS1}{REGIONS}  EU-WEST:\n    location: {{ lat: 1, lon: 2 }}\n    addresses: [192.0.2.1]\n"
        );
        assert_error(
            &region,
            "zones/t.yaml:13:3: duplicate region 'EU-WEST' (as 'eu-west')",
        );
        let service = format!(
            "{HEAD}records:\n{NS1}  api: {{ A: 192.0.2.1 }}\n{REGIONS}services:\n  api: {{ regions: [eu-west] }}\n"
        );
        assert_error(
            &service,
            "zones/t.yaml:15:3: service 'api' clashes with the static A record of the same name",
        );
    }

    #[test]
    fn names_outside_the_zone_and_record_rules_are_enforced() {
        let outside = format!("{HEAD}records:\n{NS1}  www.example.org.: {{ A: 192.0.2.1 }}\n");
        assert_error(
            &outside,
            "zones/t.yaml:6:3: name 'www.example.org.' is outside the zone llm.example.com.",
        );
        let cname = format!("{HEAD}records:\n{NS1}  www: {{ CNAME: x.example.net., TXT: hi }}\n");
        assert_error(
            &cname,
            "zones/t.yaml:6:3: www.llm.example.com. has a CNAME and other records: a CNAME must stand alone",
        );
        let glue = format!("{HEAD}records:\n{NS1}  sub: {{ NS: ns.sub }}\n");
        assert_error(
            &glue,
            "zones/t.yaml:6:3: name server ns.sub.llm.example.com. of delegation sub.llm.example.com. needs glue: add its A or AAAA under records",
        );
        let mx = format!("{HEAD}records:\n{NS1}  \"@\": {{ MX: mail.example.com. }}\n");
        assert_error(
            &mx,
            "zones/t.yaml:6:14: MX needs 'preference exchange', got 'mail.example.com.'",
        );
        let caa = format!("{HEAD}records:\n{NS1}  \"@\": {{ CAA: \"0 issue\" }}\n");
        assert!(
            errors(&caa)
                .iter()
                .any(|e| e.starts_with("zones/t.yaml:6:15: invalid CAA value '0 issue'")),
            "{:#?}",
            errors(&caa)
        );
    }

    #[test]
    fn in_zone_name_servers_need_addresses() {
        assert_error(
            &format!("{HEAD}records:\n  www: {{ TXT: x }}\n"),
            "zones/t.yaml:3:5: name server ns1.llm.example.com. is inside the zone but has no A or AAAA record under records",
        );
    }

    #[test]
    fn region_coordinates_must_be_on_earth() {
        let text = format!(
            "{HEAD}records:\n{NS1}regions:\n  eu:\n    location: {{ lat: 91, lon: 2 }}\n    addresses: [192.0.2.1]\n"
        );
        assert_error(
            &text,
            "zones/t.yaml:8:15: region 'eu': location lat must be within -90..90 and lon within -180..180, got 91, 2",
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let errors = errors("origin: [llm\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("zones/t.yaml:1:"), "{errors:?}");
    }

    #[test]
    fn long_txt_values_are_split_into_character_strings() {
        let long = "a".repeat(300);
        let text = format!("{HEAD}records:\n{NS1}  t: {{ TXT: \"{long}\" }}\n");
        let zone = parse(Path::new("t.yaml"), &text, 1).expect("valid");
        let txt = zone
            .records
            .iter()
            .find(|r| r.record_type == RecordType::TXT)
            .expect("TXT");
        let RData::TXT(txt) = &txt.rdata[0] else {
            panic!("TXT rdata")
        };
        let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lengths, vec![255, 45]);
    }

    #[test]
    fn load_dir_reports_every_file_and_duplicate_origins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = format!("{HEAD}records:\n{NS1}");
        std::fs::write(dir.path().join("a.yaml"), &good).expect("write");
        std::fs::write(dir.path().join("b.yml"), &good).expect("write");
        std::fs::write(dir.path().join("c.yaml"), "origin: [").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let errors = load_dir(dir.path()).expect_err("errors");
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].path.ends_with("c.yaml"));
        assert!(
            errors[1]
                .message
                .starts_with("zone llm.example.com. is already defined in")
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let errors = load_dir(empty.path()).expect_err("no zones");
        assert_eq!(errors[0].message, "no zone files (*.yaml, *.yml)");
    }

    fn region_with_check(check: &str) -> String {
        format!(
            "{HEAD}records:\n{NS1}regions:\n  eu:\n    location: {{ lat: 1, lon: 2 }}\n    addresses: [192.0.2.1]\n    check: {check}\n"
        )
    }

    #[test]
    fn checks_get_defaults_and_read_headers_from_the_environment() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("REGIONDNS_TEST_KEY", "k-42") };
        let text = region_with_check(
            "{ http: \"https://eu.example.net/healthz\", method: post, body: '{\"max_tokens\":1}', headers: { api-key: \"Bearer ${REGIONDNS_TEST_KEY}\" }, slow: 800ms }",
        );
        let zone = parse(Path::new("t.yaml"), &text, 1).expect("valid");
        let check = zone.regions[0].check.as_ref().expect("check");
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(check.timeout, Duration::from_secs(2));
        assert_eq!(check.thresholds.fall, 3);
        assert_eq!(check.thresholds.rise, 2);
        assert_eq!(check.thresholds.window, 20);
        assert_eq!(check.thresholds.slow, Some(Duration::from_millis(800)));
        let CheckTarget::Http(http) = &check.target else {
            panic!("http check")
        };
        assert_eq!(http.method, reqwest::Method::POST);
        assert_eq!(
            http.headers,
            vec![("api-key".to_string(), "Bearer k-42".to_string())]
        );
        assert_eq!(http.body.as_deref(), Some("{\"max_tokens\":1}"));
        assert_eq!(http.expect, None, "any 2xx");

        let tcp = parse(
            Path::new("t.yaml"),
            &region_with_check("{ tcp: \"[2001:db8::1]:443\", interval: 1s }"),
            1,
        )
        .expect("valid");
        let check = tcp.regions[0].check.as_ref().expect("check");
        assert_eq!(
            check.target,
            CheckTarget::Tcp {
                host: "2001:db8::1".into(),
                port: 443
            }
        );
        assert_eq!(
            check.timeout,
            Duration::from_secs(1),
            "timeout never above the interval"
        );
    }

    #[test]
    fn check_errors_name_the_region_and_the_position() {
        let cases = [
            (
                "{ interval: 2s }",
                "zones/t.yaml:10:12: region 'eu': a check needs exactly one of `http` or `tcp`",
            ),
            (
                "{ http: \"http://a\", tcp: \"a:1\" }",
                "zones/t.yaml:10:12: region 'eu': a check needs exactly one of `http` or `tcp`",
            ),
            (
                "{ http: \"http://a\", interval: soon }",
                "zones/t.yaml:10:42: region 'eu': invalid duration 'soon' (expected number at 0; e.g. 2s, 800ms)",
            ),
            (
                "{ http: \"http://a\", interval: 1s, timeout: 2s }",
                "zones/t.yaml:10:12: region 'eu': check timeout must be above 0 and at most the interval",
            ),
            (
                "{ http: \"ftp://a\" }",
                "zones/t.yaml:10:20: region 'eu': check url must be http:// or https:// with a host",
            ),
            (
                "{ http: \"http://a/${REGIONDNS_UNSET_VARIABLE}\" }",
                "zones/t.yaml:10:20: region 'eu': environment variable REGIONDNS_UNSET_VARIABLE is not set",
            ),
            (
                "{ tcp: \"a\" }",
                "zones/t.yaml:10:19: region 'eu': tcp check needs host:port, got 'a'",
            ),
            (
                "{ tcp: \"a:1\", expect: [200] }",
                "zones/t.yaml:10:19: region 'eu': method, body, headers, expect and body_contains apply to http checks only",
            ),
            (
                "{ http: \"http://a\", fall: 0 }",
                "zones/t.yaml:10:38: region 'eu': check fall must be at least 1",
            ),
            (
                "{ http: \"http://a\", max_error_rate: 1.5 }",
                "zones/t.yaml:10:48: region 'eu': check max_error_rate must be within 0..1",
            ),
            (
                "{ http: \"http://a\", method: DELETE }",
                "zones/t.yaml:10:40: region 'eu': check method must be GET, HEAD, POST or PUT, got 'DELETE'",
            ),
            (
                "{ http: \"http://a\", expect: [200, 99] }",
                "zones/t.yaml:10:40: region 'eu': check expect needs HTTP status codes (100-599)",
            ),
            (
                "{ http: \"http://a\", intervall: 2s }",
                "zones/t.yaml:10:32: unknown key `intervall`, expected one of http, tcp, method, body, interval, timeout, expect, headers, body_contains, fall, rise, slow, window, max_error_rate, max_slow_rate",
            ),
        ];
        for (check, expected) in cases {
            assert_error(&region_with_check(check), expected);
        }
    }

    #[test]
    fn when_all_down_accepts_nearest_or_servfail() {
        let service = |value: &str| {
            format!(
                "{HEAD}records:\n{NS1}{REGIONS}services:\n  api: {{ regions: [eu-west], when_all_down: {value} }}\n"
            )
        };
        let zone = parse(Path::new("t.yaml"), &service("servfail"), 1).expect("valid");
        assert_eq!(zone.services[0].when_all_down, WhenAllDown::ServFail);
        assert_error(
            &service("panic"),
            "zones/t.yaml:14:45: service 'api': when_all_down must be nearest or servfail, got 'panic'",
        );
    }

    #[test]
    fn policy_settings_are_validated_where_they_are_written() {
        let service = |settings: &str| {
            format!(
                "{HEAD}records:\n{NS1}{REGIONS}services:\n  api:\n    regions: [us-east, eu-west]\n{settings}"
            )
        };
        let cases = [
            (
                "    policy: random\n",
                "zones/t.yaml:16:13: service 'api': policy must be nearest, priority or weighted, got 'random'",
            ),
            (
                "    answers: 9\n",
                "zones/t.yaml:16:14: service 'api': answers must be within 1..8",
            ),
            (
                "    shed: 150%\n",
                "zones/t.yaml:16:11: service 'api': shed must be a share like 5% or 0.05 (0 to 100%), got '150%'",
            ),
            (
                "    canary: { region: ap-south, share: 5% }\n",
                "zones/t.yaml:16:23: service 'api': region 'ap-south' is not one of its regions",
            ),
            (
                "    rules:\n      - match: { continent: [EU] }\n        allow: { jurisdiction: [eu] }\n",
                "zones/t.yaml:18:16: service 'api': no region of the service has jurisdiction eu",
            ),
            (
                "    rules:\n      - match: { continent: [XX] }\n",
                "zones/t.yaml:17:30: service 'api': unknown continent 'XX' (AF, AN, AS, EU, NA, OC, SA)",
            ),
            (
                "    rules:\n      - match: { network: [10.0.0.0/33] }\n",
                "zones/t.yaml:17:28: service 'api': invalid network '10.0.0.0/33' (e.g. 10.0.0.0/8)",
            ),
            (
                "    rules:\n      - match: {}\n",
                "zones/t.yaml:17:16: service 'api': a rule's match needs continent, country or network",
            ),
            (
                "    rules:\n      - match: { country: [DE] }\n        when_none: refuse\n",
                "zones/t.yaml:18:20: service 'api': when_none applies only to a rule with allow",
            ),
            (
                "    rules:\n      - match: { country: [DE] }\n        allow: { regions: [eu-west], jurisdiction: [eu] }\n",
                "zones/t.yaml:18:16: service 'api': allow needs exactly one of jurisdiction or regions",
            ),
        ];
        for (settings, expected) in cases {
            assert_error(&service(settings), expected);
        }
        let valid = service(
            "    policy: weighted\n    answers: 2\n    shed: 0.25\n    canary: { region: eu-west, share: 5% }\n    rules:\n      - match: { country: [de, FR], network: [\"2001:db8::/32\"] }\n        allow: { regions: [eu-west] }\n        when_none: nodata\n        prefer: [eu-west]\n",
        );
        let zone = parse(Path::new("t.yaml"), &valid, 1).expect("valid");
        let api = &zone.services[0];
        assert_eq!(
            (api.policy, api.answers, api.shed),
            (Policy::Weighted, 2, 0.25)
        );
        assert_eq!(
            api.canary,
            Some(Canary {
                region: 1,
                share: 0.05
            })
        );
        let rule = &api.rules[0];
        assert_eq!(
            rule.matcher
                .countries
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["DE", "FR"]
        );
        assert_eq!(
            rule.allow
                .as_ref()
                .map(|a| (a.regions.clone(), a.description.as_str())),
            Some((vec![1], "regions eu-west"))
        );
        assert_eq!(
            (rule.when_none, rule.prefer.clone()),
            (FailClosed::NoData, vec![1])
        );
    }
}
