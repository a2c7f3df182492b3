//! From the raw zone file to a [`ZoneConfig`]: names resolved against the origin, addresses and
//! record data parsed, cross-references (service to region, NS to glue) checked. Every problem is
//! collected with its position; a zone is returned only when there are none.
//!
//! This part holds the zone's frame (origin, SOA, apex NS) and the [`Checker`] that every
//! sub-language reports through; each sub-language has its own module with its tests beside it:
//! [`records`], [`regions`], [`services`].

mod records;
mod regions;
mod services;

use std::{path::Path, sync::Arc, time::Duration};

use hickory_proto::rr::Name;

use super::{
    ConfigError, EventHook, Secrets, Signing, Soa, Thresholds, Transfer, ZoneConfig,
    raw::{self, At, Position},
};
use crate::{
    dnssec::ZoneKey,
    zone::{ZoneData, ZoneSource},
};

const DEFAULT_WEIGHT: u32 = 100;

const DEFAULT_TTL: u32 = 3600;
const DEFAULT_SERVICE_TTL: u32 = 30;
const DEFAULT_REFRESH: u32 = 3600;
const DEFAULT_RETRY: u32 = 600;
const DEFAULT_EXPIRE: u32 = 1_209_600;
const DEFAULT_NEGATIVE_TTL: u32 = 60;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longer intervals are no health check at all, and far ones overflow the prober's clock.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Most probes `fall`, `rise` and `window` may count (the window is allocated up front).
const MAX_PROBE_COUNT: u32 = 1000;
/// TTLs with the top bit set are taken as 0 by resolvers (RFC 2181 8).
const MAX_TTL: u32 = i32::MAX as u32;
const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    fall: 3,
    rise: 2,
    slow: None,
    window: 20,
    max_error_rate: 0.5,
    max_slow_rate: 0.5,
};

pub(super) fn zone(
    path: &Path,
    zone: raw::Zone,
    default_serial: u32,
) -> Result<ZoneConfig, Vec<ConfigError>> {
    let mut checker = Checker {
        path,
        origin: Name::root(),
        errors: Vec::new(),
        scope: None,
        secrets: Secrets::default(),
    };
    checker.origin = checker
        .origin_name(&zone.origin)
        .ok_or_else(|| checker.take())?;

    let ttl = checker.ttl(zone.ttl.as_ref()).unwrap_or(DEFAULT_TTL);
    let soa = checker.soa(&zone.soa, default_serial);
    let nameservers = checker.nameservers(&zone.ns);
    let records = checker.records(&zone.records, ttl);
    let regions = checker.regions(&zone.regions);
    checker.scope = None;
    let transferred = zone.transfer.is_some();
    let services = checker.services(&zone.services, &zone.regions, &records, transferred);
    checker.scope = None;
    checker.check_nameserver_addresses(&nameservers, &records, zone.ns.at);

    let explain = zone.explain;
    let dnssec = zone.dnssec.as_ref().and_then(|d| checker.signing(d));
    let transfer = zone.transfer.as_ref().and_then(|t| checker.transfer(t));
    let events = zone
        .events
        .iter()
        .filter_map(|hook| checker.event_hook(hook))
        .collect();
    // The parsed text goes before the zone's names are built, so that they fill the memory it
    // held rather than scatter over pages it keeps from being given back.
    drop(zone);
    match soa {
        Some(soa) if checker.errors.is_empty() => {
            let data = ZoneData::build(ZoneSource {
                origin: &checker.origin,
                ttl,
                soa: &soa,
                nameservers: &nameservers,
                records,
                services: services.iter().map(|service| &service.name).collect(),
                signer: dnssec
                    .as_ref()
                    .map(|signing| signing.signer(&checker.origin)),
            });
            Ok(ZoneConfig {
                source: path.to_owned(),
                origin: checker.origin,
                ttl,
                soa,
                nameservers,
                data: Arc::new(data),
                regions,
                services,
                explain,
                dnssec,
                events,
                transfer,
                digest: 0,
            })
        }
        _ => Err(checker.take()),
    }
}

/// The shortest secret an event receiver may be given.
const MIN_EVENT_SECRET: usize = 16;

/// Signatures are valid this long by default, and made again this long before they expire.
const DEFAULT_SIGNATURE_VALIDITY: Duration = Duration::from_secs(14 * 86_400);
const DEFAULT_SIGNATURE_REFRESH: Duration = Duration::from_secs(7 * 86_400);

struct Checker<'a> {
    path: &'a Path,
    origin: Name,
    errors: Vec<ConfigError>,
    /// What is being checked (`region 'eu-west'`, `service 'api'`): it starts every message.
    scope: Option<String>,
    /// The `${VAR}` values read for the check being validated.
    secrets: Secrets,
}

impl Checker<'_> {
    /// The `dnssec` block: its key file read and checked, its lifetimes in order.
    fn signing(&mut self, dnssec: &At<raw::Dnssec>) -> Option<Signing> {
        let raw = &dnssec.value;
        let validity = self.lifetime(raw.validity.as_ref(), DEFAULT_SIGNATURE_VALIDITY);
        let refresh = self.lifetime(raw.refresh.as_ref(), DEFAULT_SIGNATURE_REFRESH);
        let key = self.key_file(&raw.key);
        let publish: Vec<Option<ZoneKey>> = raw.publish.iter().map(|k| self.key_file(k)).collect();
        let (validity, refresh) = (validity?, refresh?);
        if refresh >= validity {
            let at = raw.refresh.as_ref().map_or(dnssec.at, |r| r.at);
            let (refresh, validity) = (
                humantime::format_duration(refresh),
                humantime::format_duration(validity),
            );
            self.error(at, format!("dnssec: refresh ({refresh}) must be shorter than validity ({validity}): signatures would expire before they are made again"));
            return None;
        }
        let publish = publish.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Signing {
            key: Arc::new(key?),
            publish: publish.into_iter().map(Arc::new).collect(),
            validity,
            refresh,
        })
    }

    /// The `transfer` block: the secondaries' networks, the key's name, the NOTIFY targets.
    fn transfer(&mut self, transfer: &At<raw::Transfer>) -> Option<Transfer> {
        let raw = &transfer.value;
        if raw.to.value.is_empty() {
            self.error(
                raw.to.at,
                "transfer: to lists no networks: no one could transfer the zone",
            );
        }
        let to = raw
            .to
            .value
            .iter()
            .filter_map(|text| {
                let value = text.value.trim();
                let parsed = value
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                parsed
                    .map_err(|_| {
                        self.error(
                            text.at,
                            format!("transfer: to: '{value}' is not a network (e.g. 192.0.2.0/24)"),
                        )
                    })
                    .ok()
            })
            .collect();
        let tsig = raw.tsig.as_ref().and_then(|text| {
            Name::from_ascii(text.value.trim())
                .map(|name| name.to_lowercase())
                .map_err(|e| self.error(text.at, format!("transfer: tsig: '{}': {e}", text.value)))
                .ok()
        });
        let notify = raw
            .notify
            .iter()
            .filter_map(|text| {
                let value = text.value.trim();
                let parsed = value.parse::<std::net::SocketAddr>().or_else(|_| {
                    value
                        .parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                });
                parsed
                    .map_err(|_| {
                        self.error(
                            text.at,
                            format!(
                                "transfer: notify: '{value}' is not ADDR or ADDR:PORT (e.g. \
                                 192.0.2.53, [2001:db8::53]:5300)"
                            ),
                        )
                    })
                    .ok()
            })
            .collect();
        Some(Transfer { to, tsig, notify })
    }

    /// A receiver of failover events: an http(s) URL, and a secret long enough to sign with.
    fn event_hook(&mut self, hook: &At<raw::EventHook>) -> Option<EventHook> {
        let raw = &hook.value;
        let url = match reqwest::Url::parse(raw.url.value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            Ok(_) => {
                let text = format!("events: url '{}' is not http or https", raw.url.value);
                self.error(raw.url.at, text);
                None
            }
            Err(e) => {
                let text = format!("events: url '{}': {e}", raw.url.value);
                self.error(raw.url.at, text);
                None
            }
        };
        let mut secrets = Secrets::default();
        let secret = match regions::expand_env(&raw.secret.value, &mut secrets) {
            Ok(secret) if secret.chars().count() >= MIN_EVENT_SECRET => Some(secret),
            Ok(_) => {
                let text = format!(
                    "events: the secret of '{}' is shorter than {MIN_EVENT_SECRET} characters",
                    raw.url.value
                );
                self.error(raw.secret.at, text);
                None
            }
            Err(e) => {
                self.error(raw.secret.at, format!("events: secret: {e}"));
                None
            }
        };
        Some(EventHook {
            url: url?,
            secret: secret?.into(),
        })
    }

    /// A key file named in the zone file, relative to it.
    fn key_file(&mut self, name: &raw::Text) -> Option<ZoneKey> {
        let path = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&name.value);
        ZoneKey::read(&path)
            .map_err(|e| self.error(name.at, format!("dnssec: {e}")))
            .ok()
    }

    fn lifetime(&mut self, text: Option<&raw::Text>, default: Duration) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match humantime::parse_duration(text.value.trim()) {
            Ok(duration) if duration >= Duration::from_secs(3600) => Some(duration),
            Ok(_) => {
                self.error(
                    text.at,
                    format!("dnssec: '{}' is too short (at least 1h)", text.value),
                );
                None
            }
            Err(e) => {
                self.error(
                    text.at,
                    format!("dnssec: invalid duration '{}' ({e}; e.g. 14d)", text.value),
                );
                None
            }
        }
    }

    /// A TTL as written, if it is one a resolver takes as written.
    fn ttl(&mut self, ttl: Option<&At<u32>>) -> Option<u32> {
        let ttl = ttl?;
        if ttl.value > MAX_TTL {
            self.error(
                ttl.at,
                format!("ttl must be at most {MAX_TTL} (RFC 2181 8)"),
            );
        }
        Some(ttl.value.min(MAX_TTL))
    }

    /// Records a problem at `at`, in the current scope.
    fn error(&mut self, at: Position, message: impl Into<String>) {
        let message = message.into();
        let message = match &self.scope {
            Some(scope) => format!("{scope}: {message}"),
            None => message,
        };
        self.errors.push(ConfigError {
            path: self.path.to_owned(),
            position: Some((at.line, at.column)),
            message,
        });
    }

    fn take(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.errors)
    }

    fn origin_name(&mut self, text: &raw::Text) -> Option<Name> {
        let written = text.value.trim();
        let absolute = if written.ends_with('.') {
            written.to_owned()
        } else {
            format!("{written}.")
        };
        match Name::parse(&absolute, None) {
            Ok(name) if !name.is_root() => Some(name.to_lowercase()),
            Ok(_) => {
                self.error(text.at, "origin cannot be the root zone");
                None
            }
            Err(e) => {
                self.error(text.at, format!("invalid origin '{written}': {e}"));
                None
            }
        }
    }

    /// A name of this zone: `@` is the apex, a relative name is below the origin, an absolute
    /// one must be inside the zone.
    fn owner_name(&mut self, text: &raw::Text) -> Option<Name> {
        let written = text.value.trim();
        if written == "@" {
            return Some(self.origin.clone());
        }
        let name = self.any_name(text)?;
        if !self.origin.zone_of(&name) {
            self.error(
                text.at,
                format!("name '{written}' is outside the zone {}", self.origin),
            );
            return None;
        }
        if name.is_wildcard() {
            self.error(
                text.at,
                format!("wildcard name '{written}' is not supported"),
            );
            return None;
        }
        Some(name)
    }

    /// A name anywhere in the DNS (a record's target): relative names are below the origin.
    fn any_name(&mut self, text: &raw::Text) -> Option<Name> {
        let written = text.value.trim();
        if written.is_empty() {
            self.error(text.at, "empty name");
            return None;
        }
        if written == "@" {
            return Some(self.origin.clone());
        }
        match Name::parse(written, Some(&self.origin)) {
            Ok(name) => Some(name.to_lowercase()),
            Err(e) => {
                self.error(text.at, format!("invalid name '{written}': {e}"));
                None
            }
        }
    }

    fn soa(&mut self, soa: &At<raw::Soa>, serial: u32) -> Option<Soa> {
        let raw = &soa.value;
        let primary = self.any_name(&raw.primary);
        let contact = self.contact(&raw.contact);
        let negative_ttl = self
            .ttl(raw.negative_ttl.as_ref())
            .unwrap_or(DEFAULT_NEGATIVE_TTL);
        Some(Soa {
            primary: primary?,
            contact: contact?,
            serial: raw.serial.unwrap_or(serial),
            refresh: raw.refresh.unwrap_or(DEFAULT_REFRESH),
            retry: raw.retry.unwrap_or(DEFAULT_RETRY),
            expire: raw.expire.unwrap_or(DEFAULT_EXPIRE),
            negative_ttl,
        })
    }

    /// The SOA RNAME, written either as a mailbox name or as an e-mail address.
    fn contact(&mut self, text: &raw::Text) -> Option<Name> {
        let written = text.value.trim();
        match written.split_once('@') {
            Some((local, domain)) => {
                let mailbox = format!("{}.{}", local.replace('.', "\\."), domain);
                let absolute = if mailbox.ends_with('.') {
                    mailbox
                } else {
                    format!("{mailbox}.")
                };
                let spanned = At {
                    value: absolute,
                    at: text.at,
                };
                self.any_name(&spanned)
            }
            None => self.any_name(text),
        }
    }

    fn nameservers(&mut self, ns: &At<Vec<raw::Text>>) -> Vec<Name> {
        if ns.value.is_empty() {
            self.error(ns.at, "a zone needs at least one name server in `ns`");
        }
        let mut names: Vec<Name> = Vec::new();
        for text in &ns.value {
            if let Some(name) = self.any_name(text) {
                if names.contains(&name) {
                    self.error(text.at, format!("duplicate name server {name}"));
                } else {
                    names.push(name);
                }
            }
        }
        names
    }
}

#[cfg(test)]
/// The zone-level blocks that read beside the zone file or from the environment: dnssec, events.
mod block_tests {
    use std::{os::unix::fs::PermissionsExt, path::Path};

    use super::fixtures::*;
    use crate::dnssec::{KeyAlgorithm, generate};

    fn parse_in(dir: &Path, block: &str) -> Result<crate::config::ZoneConfig, Vec<String>> {
        let text = format!("{HEAD}records:\n{NS1}{block}");
        crate::config::parse(&dir.join("t.yaml"), &text, 1)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_dnssec_block_reads_its_key_beside_the_zone_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(KeyAlgorithm::EcdsaP256, &dir.path().join("k.pem")).expect("key");
        let zone = parse_in(
            dir.path(),
            "dnssec: { key: k.pem, validity: 10d, refresh: 2d }\n",
        )
        .expect("valid");
        let signing = zone.dnssec.as_ref().expect("signed");
        assert_eq!(*signing.key, made);
        assert_eq!(signing.validity.as_secs(), 10 * 86_400);
        assert_eq!(signing.refresh.as_secs(), 2 * 86_400);
        let tag = made.key_tag();
        assert!(
            zone.summary()
                .ends_with(&format!(" static records, signed with key {tag}"))
        );
        let defaults = parse_in(dir.path(), "dnssec: { key: k.pem }\n").expect("valid");
        assert_eq!(
            defaults.dnssec.expect("signed").validity.as_secs(),
            14 * 86_400
        );
        assert!(parse_in(dir.path(), "").expect("valid").dnssec.is_none());
    }

    #[test]
    fn bad_keys_and_lifetimes_are_errors_where_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |file: &str| dir.path().join(file).display().to_string();
        let errors = parse_in(dir.path(), "dnssec: { key: none.pem }\n").expect_err("missing");
        let t = path("t.yaml");
        assert_eq!(
            errors,
            [format!(
                "{t}:6:16: dnssec: cannot read key file {}: No such file or directory (os error 2)",
                path("none.pem")
            )]
        );
        generate(KeyAlgorithm::Ed25519, &dir.path().join("open.pem")).expect("key");
        let open = std::fs::Permissions::from_mode(0o640);
        std::fs::set_permissions(dir.path().join("open.pem"), open).expect("chmod");
        let errors = parse_in(dir.path(), "dnssec: { key: open.pem }\n").expect_err("exposed");
        assert!(
            errors[0].contains("can be read by others (mode 640)"),
            "{errors:?}"
        );
        generate(KeyAlgorithm::Ed25519, &dir.path().join("k.pem")).expect("key");
        let errors = parse_in(
            dir.path(),
            "dnssec: { key: k.pem, validity: 7d, refresh: 7d }\n",
        )
        .expect_err("refresh too late");
        assert_eq!(
            errors,
            [format!(
                "{t}:6:46: dnssec: refresh (7days) must be shorter than validity (7days): signatures would expire before they are made again"
            )]
        );
        let errors =
            parse_in(dir.path(), "dnssec: { key: k.pem, validity: 5m }\n").expect_err("too short");
        assert_eq!(
            errors,
            [format!("{t}:6:33: dnssec: '5m' is too short (at least 1h)")]
        );
    }

    #[test]
    fn event_receivers_need_an_http_url_and_a_secret_of_16_characters() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("REGIONDNS_TEST_HOOK_SECRET", "0123456789abcdef") };
        let dir = tempfile::tempdir().expect("tempdir");
        let zone = parse_in(
            dir.path(),
            "events:\n  - { url: \"https://hooks.example.com/dns\", secret: \"${REGIONDNS_TEST_HOOK_SECRET}\" }\n",
        )
        .expect("valid");
        assert_eq!(zone.events.len(), 1);
        assert_eq!(zone.events[0].url.as_str(), "https://hooks.example.com/dns");
        assert_eq!(&*zone.events[0].secret, "0123456789abcdef");
        assert!(
            !format!("{:?}", zone.events[0]).contains("0123456789abcdef"),
            "the secret is never shown"
        );
        let t = dir.path().join("t.yaml").display().to_string();
        let errors = parse_in(
            dir.path(),
            "events:\n  - { url: \"ftp://h.example.com/\", secret: short }\n",
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            [
                format!("{t}:7:12: events: url 'ftp://h.example.com/' is not http or https"),
                format!(
                    "{t}:7:44: events: the secret of 'ftp://h.example.com/' is shorter than 16 characters"
                ),
            ]
        );
        let errors = parse_in(
            dir.path(),
            "events:\n  - { url: \"http://h/\", secret: \"${REGIONDNS_UNSET_VARIABLE}\" }\n",
        )
        .expect_err("unset");
        assert_eq!(
            errors,
            [format!(
                "{t}:7:33: events: secret: environment variable REGIONDNS_UNSET_VARIABLE is not set"
            )]
        );
    }
}

#[cfg(test)]
pub(super) mod fixtures {
    //! Zone text and error matching shared by the validation tests of every part.

    use std::path::Path;

    pub const HEAD: &str = "origin: llm.example.com.
soa: { primary: ns1, contact: hostmaster@example.com }
ns: [ns1]
";
    pub const NS1: &str = "  ns1: { A: [198.51.100.53] }\n";
    pub const REGIONS: &str = "regions:
  us-east:
    location: { lat: 37.4, lon: -79.1 }
    addresses: [203.0.113.10, \"2001:db8:10::1\"]
  eu-west:
    location: { lat: 53.3, lon: -6.3 }
    addresses: [203.0.113.20]
";

    pub fn errors(text: &str) -> Vec<String> {
        match crate::config::parse(Path::new("zones/t.yaml"), text, 1) {
            Ok(_) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn assert_error(text: &str, expected: &str) {
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e == expected),
            "expected {expected:?} in {errors:#?}"
        );
    }
}
