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
pub const MAX_SERVICE_REGIONS: usize = 1024;

use std::{
    fmt,
    io::Read,
    net::IpAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use hickory_proto::rr::Name;

pub use crate::zone::{RecordSet, Soa};
use crate::{
    dnssec::{RrsetSigner, ZoneKey},
    geo::Coordinates,
    region::RegionKey,
    zone::ZoneData,
};

/// One validated zone file.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    pub source: PathBuf,
    pub origin: Name,
    /// TTL of the SOA, the apex NS and static records without their own `ttl`.
    pub ttl: u32,
    pub soa: Soa,
    pub nameservers: Vec<Name>,
    /// The zone's names and their static records, built once per file read: a reload that
    /// keeps this file's last good version shares them.
    pub data: Arc<ZoneData>,
    pub regions: Vec<Region>,
    pub services: Vec<Service>,
    /// Whether `_explain.<service>` TXT queries are answered (it discloses configuration).
    pub explain: bool,
    /// How the zone is signed, if it is.
    pub dnssec: Option<Signing>,
    /// Where the zone's failover events are sent.
    pub events: Vec<EventHook>,
    /// Zone transfers to secondaries, when the zone allows them.
    pub transfer: Option<Transfer>,
    /// A hash of the file's text: instances of a fleet compare theirs.
    pub digest: u64,
}

/// A receiver of failover events: the URL they are POSTed to and the key they are signed with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventHook {
    pub url: reqwest::Url,
    pub secret: Arc<str>,
}

impl std::fmt::Debug for EventHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHook")
            .field("url", &self.url.as_str())
            .field("secret", &"(hidden)")
            .finish()
    }
}

/// A signed zone's key and signature lifetimes.
#[derive(Debug, Clone, PartialEq)]
pub struct Signing {
    pub key: Arc<ZoneKey>,
    /// Keys published in the DNSKEY set beside `key`, signing nothing (a key roll).
    pub publish: Vec<Arc<ZoneKey>>,
    /// How long a signature is valid from when it is made.
    pub validity: Duration,
    /// How long before expiry signatures are made again.
    pub refresh: Duration,
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
    /// Values read from the environment for this check (`${VAR}`): never shown.
    pub secrets: Secrets,
}

/// Values that came from `${VAR}`, with the names they are shown as instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets(Vec<(String, String)>);

impl Secrets {
    pub(crate) fn add(&mut self, value: &str, name: &str) {
        if !value.is_empty() && !self.0.iter().any(|(v, _)| v == value) {
            self.0.push((value.to_owned(), format!("${{{name}}}")));
        }
    }

    /// `text` with every secret value replaced by its `${VAR}`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, name) in &self.0 {
            out = out.replace(value.as_str(), name);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckTarget {
    Http(Box<HttpCheck>),
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
    /// Where the response says how loaded the region is, if it does.
    pub load: Option<LoadSource>,
}

/// Where a probe's response carries the region's load (a fraction of capacity or a percentage).
#[derive(Debug, Clone, PartialEq)]
pub enum LoadSource {
    Header(reqwest::header::HeaderName),
    /// A JSON pointer into the body (RFC 6901).
    Json(String),
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
    /// Clients moved away from regions whose reported load is above a target.
    pub load: Option<LoadTarget>,
    /// Matched in order; the first match applies.
    pub rules: Vec<Rule>,
    /// How `policy: latency` weighs measurements; `None` for the other policies.
    pub latency: Option<crate::latency::estimate::Settings>,
    /// What a zone transfer carries for the name.
    pub secondary: Secondary,
}

/// What a secondary, which cannot choose per client, receives for a service's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secondary {
    /// The addresses of every region of the service that is up (all of them when none is).
    All,
    /// The addresses of this region (an index into [`ZoneConfig::regions`]).
    Region(usize),
    /// Nothing: the name is left out of the transfer.
    Omit,
}

/// Who may transfer a zone, with which key, and whom to notify of a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub to: Vec<ipnet::IpNet>,
    /// The name of the TSIG key (in the `--tsig-keys` file) transfers must be signed with.
    pub tsig: Option<Name>,
    pub notify: Vec<std::net::SocketAddr>,
}

/// A service's load target: the load its regions should stay at or below, and how fast the
/// share of clients moved for load may change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadTarget {
    /// A fraction of capacity, e.g. 0.8.
    pub target: f64,
    /// Most change of a region's moved share per probe interval, e.g. 0.1.
    pub step: f64,
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
    /// By the round trips the latency table measured, else by distance.
    Latency,
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
/// that is given must match); or, for the rule a service's `unlocated` adds last, every client
/// with no usable location (no GeoIP record, or one that cannot be read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matcher {
    pub continents: Vec<crate::geo::Continent>,
    pub countries: Vec<crate::geo::CountryCode>,
    pub networks: Vec<ipnet::IpNet>,
    pub unlocated: bool,
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

impl Signing {
    /// A signer of `zone` for signatures made now.
    pub fn signer(&self, zone: &Name) -> RrsetSigner {
        let now = std::time::SystemTime::now();
        RrsetSigner::new(&self.key, &self.publish, zone, now, self.validity)
    }
}

impl ZoneConfig {
    /// `llm.example.com.: 1 services, 3 regions, 7 static records`
    /// Every region of this zone with the key health and routing know it by.
    pub fn keyed_regions(&self) -> impl Iterator<Item = (RegionKey, &Region)> {
        self.regions.iter().map(|region| {
            let key = RegionKey {
                zone: self.origin.to_string(),
                region: region.name.clone(),
            };
            (key, region)
        })
    }

    pub fn summary(&self) -> String {
        let records = self.data.static_records();
        let signed = self.dnssec.as_ref().map_or(String::new(), |signing| {
            format!(", signed with key {}", signing.key.key_tag())
        });
        format!(
            "{}: {} services, {} regions, {} static records{signed}",
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

/// Loads every `*.yaml` / `*.yml` file of `dir`, in name order: the zones that validate, and
/// the errors of all the others together, so one run of `regiondns check` shows everything
/// to fix and a server can serve what is good.
pub fn load_dir(dir: &Path, max_file_size: u64) -> (Vec<ZoneConfig>, Vec<ConfigError>) {
    let files = match zone_files(dir) {
        Ok(files) => files,
        Err(error) => return (Vec::new(), vec![error]),
    };
    if files.is_empty() {
        let error = ConfigError {
            path: dir.to_owned(),
            position: None,
            message: "no zone files (*.yaml, *.yml)".into(),
        };
        return (Vec::new(), vec![error]);
    }
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for loaded in load_files(&files, max_file_size) {
        match loaded {
            Ok(zone) => zones.push(zone),
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    check_distinct_origins(&zones, &mut errors);
    // Of two files with one origin, the first in name order is served.
    let mut seen = Vec::new();
    zones.retain(|zone| {
        let first = !seen.contains(&zone.origin);
        seen.push(zone.origin.clone());
        first
    });
    (zones, errors)
}

/// Loads each of `paths` with [`load_file`], the results in the order of `paths`. Files are
/// parsed on as many threads as there are cores (and files): parsing is most of the time a
/// start-up or reload takes, and each file is parsed on its own. The threads end here.
pub fn load_files(
    paths: &[PathBuf],
    max_file_size: u64,
) -> Vec<Result<ZoneConfig, Vec<ConfigError>>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(paths.len());
    if threads <= 1 {
        return paths.iter().map(|p| load_file(p, max_file_size)).collect();
    }
    let next = AtomicUsize::new(0);
    let load_some = || {
        let mut loaded = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else {
                return loaded;
            };
            loaded.push((i, load_file(path, max_file_size)));
        }
    };
    let mut loaded: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(load_some)).collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    });
    loaded.sort_unstable_by_key(|(i, _)| *i);
    loaded.into_iter().map(|(_, result)| result).collect()
}

/// Zone files larger than this are refused unread, unless `--max-zone-file-mib` says otherwise.
pub const DEFAULT_MAX_ZONE_FILE: u64 = 64 << 20;

/// Loads and validates one zone file; one over `max_file_size` bytes is refused before it is
/// read (a file that grows while read is cut there and refused too). Without an explicit SOA
/// serial, the file's modification time (seconds since the epoch) is used: it changes exactly
/// when the file does.
pub fn load_file(path: &Path, max_file_size: u64) -> Result<ZoneConfig, Vec<ConfigError>> {
    let error = |message: String| {
        vec![ConfigError {
            path: path.to_owned(),
            position: None,
            message,
        }]
    };
    let io_error = |e: std::io::Error| error(e.to_string());
    let too_large = |size: u64| {
        error(format!(
            "{size} bytes, over the limit of {max_file_size} (--max-zone-file-mib): not read"
        ))
    };
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    if size > max_file_size {
        return Err(too_large(size));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max_file_size + 1).read_to_string(&mut text))
        .map_err(io_error)?;
    if text.len() as u64 > max_file_size {
        return Err(too_large(text.len() as u64));
    }
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error)?;
    let serial = modified
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    parse(path, &text, serial)
}

/// YAML nodes (mappings, sequences, scalars) a zone file may hold: room for 500,000 records.
const MAX_NODES: usize = 2_500_000;

/// Parses and validates zone file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str, default_serial: u32) -> Result<ZoneConfig, Vec<ConfigError>> {
    // The parser's default budget (250,000 nodes) stops near 50,000 records; files are
    // bounded by size before they are read, so the budget grows with that bound (a record
    // is about five nodes). Aliases stay bounded by the parser's anchor ratio.
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES,
        },
    };
    let zone: raw::Zone = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| vec![yaml_error(path, &e)])?;
    let digest = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    validate::zone(path, zone, default_serial).map(|zone| ZoneConfig { digest, ..zone })
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
    use hickory_proto::rr::RecordType;

    use super::{validate::fixtures::*, *};
    use crate::{wire::name::NameKey, zone::Lookup};
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
        assert_eq!(zone.data.static_records(), 3);
        let apex = NameKey::new(&zone.origin);
        let Lookup::Found(mx) = zone.data.lookup(apex.wire(), RecordType::MX) else {
            panic!("MX at the apex")
        };
        assert_eq!(mx.records()[0].data.to_string(), "10 mail.llm.example.com.");
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
            "zones/t.yaml:4:1: unknown key `colour`, expected one of origin, ttl, soa, ns, records, regions, services, explain, dnssec, events, transfer",
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let errors = errors("origin: [llm\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("zones/t.yaml:1:"), "{errors:?}");
    }

    #[test]
    fn load_dir_reports_every_file_and_duplicate_origins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = format!("{HEAD}records:\n{NS1}");
        std::fs::write(dir.path().join("a.yaml"), &good).expect("write");
        std::fs::write(dir.path().join("b.yml"), &good).expect("write");
        std::fs::write(dir.path().join("c.yaml"), "origin: [").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let (zones, errors) = load_dir(dir.path(), DEFAULT_MAX_ZONE_FILE);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(zones.len(), 1, "a.yaml is served, b.yml has its origin");
        assert!(zones[0].source.ends_with("a.yaml"));
        assert!(errors[0].path.ends_with("c.yaml"));
        assert!(
            errors[1]
                .message
                .starts_with("zone llm.example.com. is already defined in")
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let (zones, errors) = load_dir(empty.path(), DEFAULT_MAX_ZONE_FILE);
        assert!(zones.is_empty());
        assert_eq!(errors[0].message, "no zone files (*.yaml, *.yml)");
    }

    #[test]
    fn files_loaded_on_several_threads_come_back_in_the_order_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = (0..24)
            .map(|i| {
                // Listed in reverse name order, so an order restored by sorting names fails.
                let path = dir.path().join(format!("z{:02}.yaml", 23 - i));
                let text = match i % 3 {
                    0 => "origin: [\n".to_owned(),
                    _ => {
                        HEAD.replace("llm.example.com.", &format!("z{i}.example.com."))
                            + &format!("records:\n{NS1}")
                    }
                };
                std::fs::write(&path, text).expect("write");
                path
            })
            .collect();
        let loaded = load_files(&paths, DEFAULT_MAX_ZONE_FILE);
        assert_eq!(loaded.len(), paths.len());
        for (i, (path, loaded)) in paths.iter().zip(&loaded).enumerate() {
            match loaded {
                Ok(zone) => {
                    assert_eq!(&zone.source, path);
                    assert_eq!(zone.origin.to_string(), format!("z{i}.example.com."));
                }
                Err(errors) => {
                    assert_eq!(i % 3, 0, "{errors:?}");
                    assert_eq!(&errors[0].path, path);
                }
            }
        }
    }

    #[test]
    fn zones_beyond_the_parsers_default_node_budget_load() {
        // 60,000 records: about 300,000 YAML nodes, over the default budget of 250,000.
        let mut text = format!("{HEAD}records:\n{NS1}");
        for i in 0..60_000 {
            text += &format!("  h{i}: {{ A: [10.0.{}.{}] }}\n", i / 256 % 256, i % 256);
        }
        let zone = parse(Path::new("big.yaml"), &text, 1).expect("a large zone");
        assert_eq!(zone.data.static_records(), 60_001);
    }

    #[test]
    fn files_over_the_size_limit_are_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.yaml");
        let text = format!("{HEAD}records:\n{NS1}");
        std::fs::write(&path, &text).expect("write");
        let size = text.len() as u64;
        assert!(load_file(&path, size).is_ok(), "at the limit");
        let errors = load_file(&path, size - 1).expect_err("over the limit");
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{}: {size} bytes, over the limit of {} (--max-zone-file-mib): not read",
                path.display(),
                size - 1
            )
        );
    }
}
