//! From the raw zone file to a [`ZoneConfig`]: names resolved against the origin, addresses and
//! record data parsed, cross-references (service to region, NS to glue) checked. Every problem is
//! collected with its position; a zone is returned only when there are none.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use hickory_proto::rr::{
    LowerName, Name, RData, RecordType,
    rdata::{A, AAAA, CNAME, MX, NS, PTR, SRV, TXT},
};
use serde_saphyr::{Location, Spanned};

use super::{
    Allow, Canary, Check, CheckTarget, ConfigError, FailClosed, HttpCheck, MAX_ANSWERS,
    MAX_SERVICE_REGIONS, Matcher, Policy, RecordSet, Region, Rule, Service, Soa, Thresholds,
    WhenAllDown, ZoneConfig, raw,
};
use crate::geo::{Continent, CountryCode};

const DEFAULT_WEIGHT: u32 = 100;
use crate::geo::Coordinates;

const DEFAULT_TTL: u32 = 3600;
const DEFAULT_SERVICE_TTL: u32 = 30;
const DEFAULT_REFRESH: u32 = 3600;
const DEFAULT_RETRY: u32 = 600;
const DEFAULT_EXPIRE: u32 = 1_209_600;
const DEFAULT_NEGATIVE_TTL: u32 = 60;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
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
    };
    checker.origin = checker
        .origin_name(&zone.origin)
        .ok_or_else(|| checker.take())?;

    let ttl = zone.ttl.as_ref().map_or(DEFAULT_TTL, |t| t.value);
    let soa = checker.soa(&zone.soa, default_serial);
    let nameservers = checker.nameservers(&zone.ns);
    let records = checker.records(&zone.records, ttl);
    let regions = checker.regions(&zone.regions);
    let services = checker.services(&zone.services, &zone.regions, &records);
    checker.check_nameserver_addresses(&nameservers, &records, &zone.ns.referenced);

    match soa {
        Some(soa) if checker.errors.is_empty() => Ok(ZoneConfig {
            source: path.to_owned(),
            origin: checker.origin,
            ttl,
            soa,
            nameservers,
            records,
            regions,
            services,
            explain: zone.explain,
        }),
        _ => Err(checker.take()),
    }
}

struct Checker<'a> {
    path: &'a Path,
    origin: Name,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, at: &Location, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.to_owned(),
            position: Some((at.line() as u32, at.column() as u32)),
            message: message.into(),
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
                self.error(&text.referenced, "origin cannot be the root zone");
                None
            }
            Err(e) => {
                self.error(&text.referenced, format!("invalid origin '{written}': {e}"));
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
                &text.referenced,
                format!("name '{written}' is outside the zone {}", self.origin),
            );
            return None;
        }
        if name.is_wildcard() {
            self.error(
                &text.referenced,
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
            self.error(&text.referenced, "empty name");
            return None;
        }
        if written == "@" {
            return Some(self.origin.clone());
        }
        match Name::parse(written, Some(&self.origin)) {
            Ok(name) => Some(name.to_lowercase()),
            Err(e) => {
                self.error(&text.referenced, format!("invalid name '{written}': {e}"));
                None
            }
        }
    }

    fn soa(&mut self, soa: &Spanned<raw::Soa>, serial: u32) -> Option<Soa> {
        let raw = &soa.value;
        let primary = self.any_name(&raw.primary);
        let contact = self.contact(&raw.contact);
        let negative_ttl = raw
            .negative_ttl
            .as_ref()
            .map_or(DEFAULT_NEGATIVE_TTL, |t| t.value);
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
                let spanned = Spanned::new(absolute, text.referenced, text.defined);
                self.any_name(&spanned)
            }
            None => self.any_name(text),
        }
    }

    fn nameservers(&mut self, ns: &Spanned<Vec<raw::Text>>) -> Vec<Name> {
        if ns.value.is_empty() {
            self.error(
                &ns.referenced,
                "a zone needs at least one name server in `ns`",
            );
        }
        let mut names: Vec<Name> = Vec::new();
        for text in &ns.value {
            if let Some(name) = self.any_name(text) {
                if names.contains(&name) {
                    self.error(&text.referenced, format!("duplicate name server {name}"));
                } else {
                    names.push(name);
                }
            }
        }
        names
    }

    fn records(
        &mut self,
        nodes: &indexmap::IndexMap<raw::Text, Spanned<raw::Node>>,
        default_ttl: u32,
    ) -> Vec<RecordSet> {
        let mut positions: HashMap<LowerName, Location> = HashMap::new();
        let mut sets = Vec::new();
        for (key, node) in nodes {
            let Some(name) = self.owner_name(key) else {
                continue;
            };
            if let Some(first) = positions.insert(LowerName::new(&name), key.referenced) {
                self.error(
                    &key.referenced,
                    format!(
                        "duplicate name '{}' (first at line {})",
                        key.value,
                        first.line()
                    ),
                );
                continue;
            }
            let before = sets.len();
            self.node(&name, &node.value, default_ttl, &mut sets);
            if sets.len() == before {
                self.error(
                    &node.referenced,
                    format!("name '{}' has no records", key.value),
                );
            }
            self.check_node_types(&name, &sets[before..], &key.referenced);
        }
        self.check_delegations(&sets, &positions);
        sets
    }

    fn node(&mut self, name: &Name, node: &raw::Node, default_ttl: u32, out: &mut Vec<RecordSet>) {
        let ttl = node.ttl.unwrap_or(default_ttl);
        let typed = [
            (RecordType::A, &node.a),
            (RecordType::AAAA, &node.aaaa),
            (RecordType::CNAME, &node.cname),
            (RecordType::TXT, &node.txt),
            (RecordType::MX, &node.mx),
            (RecordType::SRV, &node.srv),
            (RecordType::CAA, &node.caa),
            (RecordType::PTR, &node.ptr),
            (RecordType::NS, &node.ns),
        ];
        for (record_type, values) in typed {
            let Some(raw::Values(values)) = values else {
                continue;
            };
            let mut rdata: Vec<RData> = Vec::new();
            for value in values {
                let Some(parsed) = self.rdata(record_type, value) else {
                    continue;
                };
                if rdata.contains(&parsed) {
                    self.error(&value.referenced, format!("duplicate {record_type} value"));
                } else {
                    rdata.push(parsed);
                }
            }
            if record_type == RecordType::CNAME && rdata.len() > 1 {
                self.error(&values[1].referenced, "a name has at most one CNAME");
            }
            if !rdata.is_empty() {
                out.push(RecordSet {
                    name: name.clone(),
                    record_type,
                    ttl,
                    rdata,
                });
            }
        }
    }

    fn rdata(&mut self, record_type: RecordType, value: &raw::Text) -> Option<RData> {
        let text = value.value.trim();
        let parsed = match record_type {
            RecordType::A => text
                .parse::<Ipv4Addr>()
                .map(|ip| RData::A(A(ip)))
                .map_err(|_| {
                    let hint = if text.parse::<Ipv6Addr>().is_ok() {
                        " (an IPv6 address belongs under AAAA)"
                    } else {
                        ""
                    };
                    format!("invalid IPv4 address '{text}'{hint}")
                }),
            RecordType::AAAA => text
                .parse::<Ipv6Addr>()
                .map(|ip| RData::AAAA(AAAA(ip)))
                .map_err(|_| {
                    let hint = if text.parse::<Ipv4Addr>().is_ok() {
                        " (an IPv4 address belongs under A)"
                    } else {
                        ""
                    };
                    format!("invalid IPv6 address '{text}'{hint}")
                }),
            RecordType::CNAME => return self.target(value).map(|n| RData::CNAME(CNAME(n))),
            RecordType::NS => return self.target(value).map(|n| RData::NS(NS(n))),
            RecordType::PTR => return self.target(value).map(|n| RData::PTR(PTR(n))),
            RecordType::TXT => Ok(RData::TXT(TXT::new(super::character_strings(&value.value)))),
            RecordType::MX => return self.mx(value),
            RecordType::SRV => return self.srv(value),
            _ => RData::try_from_str(record_type, text)
                .map_err(|e| format!("invalid {record_type} value '{text}': {e}")),
        };
        parsed
            .map_err(|message| self.error(&value.referenced, message))
            .ok()
    }

    fn target(&mut self, value: &raw::Text) -> Option<Name> {
        self.any_name(value)
    }

    /// `MX: "10 mail.example.com."`
    fn mx(&mut self, value: &raw::Text) -> Option<RData> {
        let fields: Vec<&str> = value.value.split_whitespace().collect();
        let [preference, exchange] = fields[..] else {
            self.error(
                &value.referenced,
                format!("MX needs 'preference exchange', got '{}'", value.value),
            );
            return None;
        };
        let Ok(preference) = preference.parse::<u16>() else {
            self.error(
                &value.referenced,
                format!("invalid MX preference '{preference}'"),
            );
            return None;
        };
        let exchange = self.any_name(&Spanned::new(
            exchange.to_owned(),
            value.referenced,
            value.defined,
        ))?;
        Some(RData::MX(MX::new(preference, exchange)))
    }

    /// `SRV: "10 5 443 api.example.com."`
    fn srv(&mut self, value: &raw::Text) -> Option<RData> {
        let fields: Vec<&str> = value.value.split_whitespace().collect();
        let [priority, weight, port, target] = fields[..] else {
            self.error(
                &value.referenced,
                format!(
                    "SRV needs 'priority weight port target', got '{}'",
                    value.value
                ),
            );
            return None;
        };
        let numbers = [priority, weight, port].map(|n| n.parse::<u16>());
        let [Ok(priority), Ok(weight), Ok(port)] = numbers else {
            self.error(
                &value.referenced,
                format!("invalid SRV numbers in '{}'", value.value),
            );
            return None;
        };
        let target = self.any_name(&Spanned::new(
            target.to_owned(),
            value.referenced,
            value.defined,
        ))?;
        Some(RData::SRV(SRV::new(priority, weight, port, target)))
    }

    /// Rules on which types may share a name (RFC 1034 3.6.2, RFC 2181 10.3).
    fn check_node_types(&mut self, name: &Name, sets: &[RecordSet], at: &Location) {
        let has = |t: RecordType| sets.iter().any(|s| s.record_type == t);
        let apex = *name == self.origin;
        if has(RecordType::CNAME) && sets.len() > 1 {
            self.error(
                at,
                format!("{name} has a CNAME and other records: a CNAME must stand alone"),
            );
        }
        if apex && has(RecordType::CNAME) {
            self.error(at, "the zone apex cannot have a CNAME");
        }
        if apex && has(RecordType::NS) {
            self.error(at, "the apex name servers are set with the zone's `ns` key");
        }
        if !apex && has(RecordType::NS) && sets.len() > 1 {
            self.error(
                at,
                format!("{name} is delegated (NS): it can hold no other records"),
            );
        }
    }

    /// Below a delegation only glue (A/AAAA) may exist, and in-bailiwick name servers need it.
    fn check_delegations(&mut self, sets: &[RecordSet], positions: &HashMap<LowerName, Location>) {
        let cuts: Vec<&RecordSet> = sets
            .iter()
            .filter(|s| s.record_type == RecordType::NS && s.name != self.origin)
            .collect();
        let position_of = |name: &Name| positions.get(&LowerName::new(name)).copied();
        for cut in &cuts {
            for set in sets {
                let below = set.name != cut.name && cut.name.zone_of(&set.name);
                let glue = matches!(set.record_type, RecordType::A | RecordType::AAAA);
                if let Some(at) = position_of(&set.name).filter(|_| below && !glue) {
                    self.error(
                        &at,
                        format!(
                            "{} is below the delegation {}: only glue (A, AAAA) may be there",
                            set.name, cut.name
                        ),
                    );
                }
            }
            for rdata in &cut.rdata {
                let RData::NS(NS(target)) = rdata else {
                    continue;
                };
                let has_glue = sets.iter().any(|s| {
                    s.name == *target && matches!(s.record_type, RecordType::A | RecordType::AAAA)
                });
                let needs_glue = cut.name.zone_of(target) && !has_glue;
                if let Some(at) = position_of(&cut.name).filter(|_| needs_glue) {
                    self.error(
                        &at,
                        format!(
                            "name server {target} of delegation {} needs glue: add its A or AAAA under records",
                            cut.name
                        ),
                    );
                }
            }
        }
    }

    /// Name servers inside the zone must have addresses in it, or nobody can reach them.
    fn check_nameserver_addresses(
        &mut self,
        nameservers: &[Name],
        sets: &[RecordSet],
        at: &Location,
    ) {
        for ns in nameservers {
            let has_address = sets.iter().any(|s| {
                s.name == *ns && matches!(s.record_type, RecordType::A | RecordType::AAAA)
            });
            if self.origin.zone_of(ns) && !has_address {
                self.error(at, format!("name server {ns} is inside the zone but has no A or AAAA record under records"));
            }
        }
    }

    fn regions(
        &mut self,
        regions: &indexmap::IndexMap<raw::Text, Spanned<raw::Region>>,
    ) -> Vec<Region> {
        let mut out: Vec<Region> = Vec::new();
        for (key, region) in regions {
            let name = key.value.trim();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                self.error(
                    &key.referenced,
                    format!("invalid region name '{name}': use letters, digits, '-', '_' and '.'"),
                );
                continue;
            }
            if let Some(first) = out.iter().find(|r| r.name.eq_ignore_ascii_case(name)) {
                self.error(
                    &key.referenced,
                    format!("duplicate region '{name}' (as '{}')", first.name),
                );
                continue;
            }
            let location = self.location(name, &region.value.location);
            let addresses = self.addresses(name, &region.value.addresses);
            let check = region.value.check.as_ref().map(|c| self.check(name, c));
            if let (Some(location), None | Some(Some(_))) = (location, &check) {
                out.push(Region {
                    name: name.to_owned(),
                    location,
                    addresses,
                    check: check.flatten(),
                    drained: region.value.drained,
                    jurisdiction: region
                        .value
                        .jurisdiction
                        .as_ref()
                        .map(|j| j.value.trim().to_ascii_lowercase()),
                    weight: region
                        .value
                        .weight
                        .as_ref()
                        .map_or(DEFAULT_WEIGHT, |w| w.value),
                });
            }
        }
        out
    }

    fn location(&mut self, region: &str, location: &Spanned<raw::Location>) -> Option<Coordinates> {
        let raw::Location { lat, lon } = location.value;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            self.error(&location.referenced, format!("region '{region}': location lat must be within -90..90 and lon within -180..180, got {lat}, {lon}"));
            return None;
        }
        Some(Coordinates { lat, lon })
    }

    fn addresses(&mut self, region: &str, addresses: &Spanned<Vec<raw::Text>>) -> Vec<IpAddr> {
        if addresses.value.is_empty() {
            self.error(
                &addresses.referenced,
                format!("region '{region}' has no addresses"),
            );
        }
        let mut out: Vec<IpAddr> = Vec::new();
        for text in &addresses.value {
            match text.value.trim().parse::<IpAddr>() {
                Ok(ip) if out.contains(&ip) => {
                    self.error(
                        &text.referenced,
                        format!("region '{region}': duplicate address {ip}"),
                    );
                }
                Ok(ip) => out.push(ip),
                Err(_) => self.error(
                    &text.referenced,
                    format!("region '{region}': invalid IP address '{}'", text.value),
                ),
            }
        }
        out
    }

    fn check(&mut self, region: &str, check: &Spanned<raw::Check>) -> Option<Check> {
        let raw = &check.value;
        let at = &check.referenced;
        let errors_before = self.errors.len();
        let interval = self
            .duration(region, raw.interval.as_ref())
            .unwrap_or(DEFAULT_INTERVAL);
        let timeout = match raw.timeout.as_ref() {
            Some(text) => self.duration(region, Some(text)).unwrap_or(DEFAULT_TIMEOUT),
            None => DEFAULT_TIMEOUT.min(interval),
        };
        if interval < MIN_INTERVAL {
            self.error(
                at,
                format!("region '{region}': check interval must be at least 100ms"),
            );
        }
        if timeout > interval || timeout.is_zero() {
            self.error(
                at,
                format!(
                    "region '{region}': check timeout must be above 0 and at most the interval"
                ),
            );
        }
        let thresholds = self.thresholds(region, raw);
        let target = match (&raw.http, &raw.tcp) {
            (Some(url), None) => self.http_check(region, url, raw),
            (None, Some(address)) => self.tcp_check(region, address, raw),
            _ => {
                self.error(
                    at,
                    format!("region '{region}': a check needs exactly one of `http` or `tcp`"),
                );
                None
            }
        };
        let target = target.filter(|_| self.errors.len() == errors_before)?;
        Some(Check {
            target,
            interval,
            timeout,
            thresholds,
        })
    }

    fn duration(&mut self, region: &str, text: Option<&raw::Text>) -> Option<Duration> {
        let text = text?;
        humantime::parse_duration(text.value.trim())
            .map_err(|e| {
                self.error(
                    &text.referenced,
                    format!(
                        "region '{region}': invalid duration '{}' ({e}; e.g. 2s, 800ms)",
                        text.value
                    ),
                );
            })
            .ok()
    }

    fn thresholds(&mut self, region: &str, raw: &raw::Check) -> Thresholds {
        let mut count = |value: &Option<Spanned<u32>>, name: &str, default: u32| match value {
            Some(v) if v.value == 0 => {
                self.error(
                    &v.referenced,
                    format!("region '{region}': check {name} must be at least 1"),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        let fall = count(&raw.fall, "fall", DEFAULT_THRESHOLDS.fall);
        let rise = count(&raw.rise, "rise", DEFAULT_THRESHOLDS.rise);
        let window = count(&raw.window, "window", DEFAULT_THRESHOLDS.window);
        let mut rate = |value: &Option<Spanned<f64>>, name: &str, default: f64| match value {
            Some(v) if !(0.0..=1.0).contains(&v.value) => {
                self.error(
                    &v.referenced,
                    format!("region '{region}': check {name} must be within 0..1"),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        let max_error_rate = rate(
            &raw.max_error_rate,
            "max_error_rate",
            DEFAULT_THRESHOLDS.max_error_rate,
        );
        let max_slow_rate = rate(
            &raw.max_slow_rate,
            "max_slow_rate",
            DEFAULT_THRESHOLDS.max_slow_rate,
        );
        Thresholds {
            fall,
            rise,
            slow: self.duration(region, raw.slow.as_ref()),
            window,
            max_error_rate,
            max_slow_rate,
        }
    }

    fn http_check(
        &mut self,
        region: &str,
        url: &raw::Text,
        raw: &raw::Check,
    ) -> Option<CheckTarget> {
        let expanded = self.expand(region, url)?;
        let url = match reqwest::Url::parse(&expanded) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
            {
                parsed
            }
            Ok(_) => {
                self.error(
                    &url.referenced,
                    format!("region '{region}': check url must be http:// or https:// with a host"),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    &url.referenced,
                    format!("region '{region}': invalid check url '{expanded}': {e}"),
                );
                return None;
            }
        };
        let method = match raw.method.as_ref() {
            None => reqwest::Method::GET,
            Some(text) => match text.value.trim().to_ascii_uppercase().as_str() {
                "GET" => reqwest::Method::GET,
                "HEAD" => reqwest::Method::HEAD,
                "POST" => reqwest::Method::POST,
                "PUT" => reqwest::Method::PUT,
                other => {
                    self.error(&text.referenced, format!("region '{region}': check method must be GET, HEAD, POST or PUT, got '{other}'"));
                    return None;
                }
            },
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            let Some(expanded) = self.expand(region, value) else {
                continue;
            };
            let valid_name = reqwest::header::HeaderName::from_bytes(name.value.as_bytes()).is_ok();
            let valid_value = reqwest::header::HeaderValue::from_str(&expanded).is_ok();
            if !valid_name || !valid_value {
                self.error(
                    &name.referenced,
                    format!("region '{region}': invalid check header '{}'", name.value),
                );
                continue;
            }
            headers.push((name.value.clone(), expanded));
        }
        let body = match raw.body.as_ref() {
            Some(text) => Some(self.expand(region, text)?),
            None => None,
        };
        let expect = raw.expect.as_ref().map(|codes| {
            if codes.value.is_empty() || codes.value.iter().any(|c| !(100..=599).contains(c)) {
                self.error(
                    &codes.referenced,
                    format!("region '{region}': check expect needs HTTP status codes (100-599)"),
                );
            }
            codes.value.clone()
        });
        Some(CheckTarget::Http(HttpCheck {
            url,
            method,
            headers,
            body,
            expect,
            body_contains: raw.body_contains.as_ref().map(|t| t.value.clone()),
        }))
    }

    fn tcp_check(
        &mut self,
        region: &str,
        address: &raw::Text,
        raw: &raw::Check,
    ) -> Option<CheckTarget> {
        let http_only = [
            raw.method.as_ref(),
            raw.body.as_ref(),
            raw.body_contains.as_ref(),
        ];
        if http_only.iter().any(Option::is_some) || !raw.headers.is_empty() || raw.expect.is_some()
        {
            self.error(&address.referenced, format!("region '{region}': method, body, headers, expect and body_contains apply to http checks only"));
        }
        let written = self.expand(region, address)?;
        let parsed = written.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse::<u16>().ok()?))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
        });
        match parsed {
            Some((host, port)) => Some(CheckTarget::Tcp { host, port }),
            None => {
                self.error(
                    &address.referenced,
                    format!("region '{region}': tcp check needs host:port, got '{written}'"),
                );
                None
            }
        }
    }

    fn policy(&mut self, service: &ServiceContext, text: Option<&raw::Text>) -> Policy {
        let Some(text) = text else {
            return Policy::Nearest;
        };
        match text.value.trim() {
            "nearest" => Policy::Nearest,
            "priority" => Policy::Priority,
            "weighted" => Policy::Weighted,
            other => {
                self.error(
                    &text.referenced,
                    format!(
                        "service '{}': policy must be nearest, priority or weighted, got '{other}'",
                        service.name
                    ),
                );
                Policy::Nearest
            }
        }
    }

    fn answers(&mut self, service: &ServiceContext, answers: Option<&Spanned<u32>>) -> usize {
        let Some(answers) = answers else { return 1 };
        if !(1..=MAX_ANSWERS).contains(&(answers.value as usize)) {
            self.error(
                &answers.referenced,
                format!(
                    "service '{}': answers must be within 1..{MAX_ANSWERS}",
                    service.name
                ),
            );
        }
        (answers.value as usize).clamp(1, MAX_ANSWERS)
    }

    /// `5%` or `0.05`.
    fn share(&mut self, service: &ServiceContext, what: &str, text: &raw::Text) -> f64 {
        let written = text.value.trim();
        let parsed = match written.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => written.parse::<f64>(),
        };
        match parsed {
            Ok(share) if (0.0..=1.0).contains(&share) => share,
            _ => {
                self.error(&text.referenced, format!("service '{}': {what} must be a share like 5% or 0.05 (0 to 100%), got '{written}'", service.name));
                0.0
            }
        }
    }

    fn canary(
        &mut self,
        service: &ServiceContext,
        canary: &Spanned<raw::Canary>,
    ) -> Option<Canary> {
        let region = self.service_region(service, &canary.value.region)?;
        Some(Canary {
            region,
            share: self.share(service, "canary share", &canary.value.share),
        })
    }

    /// A region named in a service's settings: it must be one of the service's regions.
    fn service_region(&mut self, service: &ServiceContext, text: &raw::Text) -> Option<usize> {
        let wanted = text.value.trim();
        let found = service.regions.iter().copied().find(|&i| {
            service
                .raw_regions
                .get_index(i)
                .is_some_and(|(k, _)| k.value.trim().eq_ignore_ascii_case(wanted))
        });
        if found.is_none() {
            self.error(
                &text.referenced,
                format!(
                    "service '{}': region '{wanted}' is not one of its regions",
                    service.name
                ),
            );
        }
        found
    }

    fn rule(&mut self, service: &ServiceContext, rule: &Spanned<raw::Rule>) -> Option<Rule> {
        let raw = &rule.value;
        let errors_before = self.errors.len();
        let matcher = self.matcher(service, &raw.matcher);
        let allow = raw
            .allow
            .as_ref()
            .and_then(|allow| self.allow(service, allow));
        let when_none = match raw.when_none.as_ref() {
            None => FailClosed::Refuse,
            Some(text) if raw.allow.is_none() => {
                self.error(
                    &text.referenced,
                    format!(
                        "service '{}': when_none applies only to a rule with allow",
                        service.name
                    ),
                );
                FailClosed::Refuse
            }
            Some(text) => match text.value.trim() {
                "refuse" => FailClosed::Refuse,
                "servfail" => FailClosed::ServFail,
                "nodata" => FailClosed::NoData,
                other => {
                    self.error(&text.referenced, format!("service '{}': when_none must be refuse, servfail or nodata, got '{other}'", service.name));
                    FailClosed::Refuse
                }
            },
        };
        let prefer = raw
            .prefer
            .iter()
            .filter_map(|p| self.service_region(service, p))
            .collect();
        (self.errors.len() == errors_before).then_some(Rule {
            matcher,
            allow,
            when_none,
            prefer,
        })
    }

    fn matcher(&mut self, service: &ServiceContext, matcher: &Spanned<raw::Match>) -> Matcher {
        let raw = &matcher.value;
        if raw.continent.is_empty() && raw.country.is_empty() && raw.network.is_empty() {
            self.error(
                &matcher.referenced,
                format!(
                    "service '{}': a rule's match needs continent, country or network",
                    service.name
                ),
            );
        }
        let mut out = Matcher::default();
        for text in &raw.continent {
            match Continent::from_code(&text.value.trim().to_ascii_uppercase()) {
                Some(continent) => out.continents.push(continent),
                None => self.error(
                    &text.referenced,
                    format!(
                        "service '{}': unknown continent '{}' (AF, AN, AS, EU, NA, OC, SA)",
                        service.name, text.value
                    ),
                ),
            }
        }
        for text in &raw.country {
            match CountryCode::parse(text.value.trim()) {
                Some(country) => out.countries.push(country),
                None => self.error(
                    &text.referenced,
                    format!(
                        "service '{}': '{}' is not an ISO 3166 two-letter country code",
                        service.name, text.value
                    ),
                ),
            }
        }
        for text in &raw.network {
            match text.value.trim().parse::<ipnet::IpNet>() {
                Ok(network) => out.networks.push(network.trunc()),
                Err(_) => self.error(
                    &text.referenced,
                    format!(
                        "service '{}': invalid network '{}' (e.g. 10.0.0.0/8)",
                        service.name, text.value
                    ),
                ),
            }
        }
        out
    }

    fn allow(&mut self, service: &ServiceContext, allow: &Spanned<raw::Allow>) -> Option<Allow> {
        let raw = &allow.value;
        match (raw.jurisdiction.is_empty(), raw.regions.is_empty()) {
            (false, true) => {
                let wanted: Vec<String> = raw
                    .jurisdiction
                    .iter()
                    .map(|j| j.value.trim().to_ascii_lowercase())
                    .collect();
                let regions: Vec<usize> = service
                    .regions
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let jurisdiction = service
                            .raw_regions
                            .get_index(i)
                            .and_then(|(_, r)| r.value.jurisdiction.as_ref());
                        jurisdiction
                            .is_some_and(|j| wanted.contains(&j.value.trim().to_ascii_lowercase()))
                    })
                    .collect();
                if regions.is_empty() {
                    self.error(
                        &allow.referenced,
                        format!(
                            "service '{}': no region of the service has jurisdiction {}",
                            service.name,
                            wanted.join(", ")
                        ),
                    );
                    return None;
                }
                Some(Allow {
                    regions,
                    description: format!("jurisdiction {}", wanted.join(", ")),
                })
            }
            (true, false) => {
                let regions: Vec<usize> = raw
                    .regions
                    .iter()
                    .filter_map(|r| self.service_region(service, r))
                    .collect();
                let names: Vec<&str> = raw.regions.iter().map(|r| r.value.trim()).collect();
                Some(Allow {
                    regions,
                    description: format!("regions {}", names.join(", ")),
                })
            }
            _ => {
                self.error(
                    &allow.referenced,
                    format!(
                        "service '{}': allow needs exactly one of jurisdiction or regions",
                        service.name
                    ),
                );
                None
            }
        }
    }

    /// `${VAR}` replaced by the environment variable's value; an unset variable is an error.
    fn expand(&mut self, region: &str, text: &raw::Text) -> Option<String> {
        expand_env(&text.value)
            .map_err(|e| self.error(&text.referenced, format!("region '{region}': {e}")))
            .ok()
    }

    fn services(
        &mut self,
        services: &indexmap::IndexMap<raw::Text, Spanned<raw::Service>>,
        raw_regions: &indexmap::IndexMap<raw::Text, Spanned<raw::Region>>,
        records: &[RecordSet],
    ) -> Vec<Service> {
        let region_names: Vec<&str> = raw_regions.keys().map(|k| k.value.trim()).collect();
        let mut seen: HashSet<LowerName> = HashSet::new();
        let mut out = Vec::new();
        for (key, service) in services {
            let Some(name) = self.owner_name(key) else {
                continue;
            };
            if !seen.insert(LowerName::new(&name)) {
                self.error(
                    &key.referenced,
                    format!("duplicate service '{}'", key.value),
                );
                continue;
            }
            let clash = records.iter().find(|s| {
                s.name == name
                    && matches!(
                        s.record_type,
                        RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::NS
                    )
            });
            if let Some(clash) = clash {
                self.error(
                    &key.referenced,
                    format!(
                        "service '{}' clashes with the static {} record of the same name",
                        key.value, clash.record_type
                    ),
                );
                continue;
            }
            if let Some(cut) = records.iter().find(|s| {
                s.record_type == RecordType::NS && s.name.zone_of(&name) && s.name != self.origin
            }) {
                self.error(
                    &key.referenced,
                    format!(
                        "service '{}' is below the delegation {}",
                        key.value, cut.name
                    ),
                );
                continue;
            }
            let regions = self.service_regions(&key.value, &service.value.regions, &region_names);
            let when_all_down = match service.value.when_all_down.as_ref() {
                None => WhenAllDown::Nearest,
                Some(text) => match text.value.trim() {
                    "nearest" => WhenAllDown::Nearest,
                    "servfail" => WhenAllDown::ServFail,
                    other => {
                        self.error(&text.referenced, format!("service '{}': when_all_down must be nearest or servfail, got '{other}'", key.value));
                        WhenAllDown::Nearest
                    }
                },
            };
            let context = ServiceContext {
                name: key.value.trim(),
                regions: &regions,
                raw_regions,
            };
            let service = &service.value;
            out.push(Service {
                name,
                ttl: service.ttl.unwrap_or(DEFAULT_SERVICE_TTL),
                when_all_down,
                policy: self.policy(&context, service.policy.as_ref()),
                answers: self.answers(&context, service.answers.as_ref()),
                shed: service
                    .shed
                    .as_ref()
                    .map_or(1.0, |t| self.share(&context, "shed", t)),
                canary: service
                    .canary
                    .as_ref()
                    .and_then(|c| self.canary(&context, c)),
                rules: service
                    .rules
                    .iter()
                    .filter_map(|r| self.rule(&context, r))
                    .collect(),
                regions,
            });
        }
        out
    }

    fn service_regions(
        &mut self,
        service: &str,
        list: &Spanned<Vec<raw::Text>>,
        known: &[&str],
    ) -> Vec<usize> {
        if list.value.is_empty() {
            self.error(
                &list.referenced,
                format!("service '{service}' lists no regions"),
            );
        }
        if list.value.len() > MAX_SERVICE_REGIONS {
            self.error(
                &list.referenced,
                format!("service '{service}' lists more than {MAX_SERVICE_REGIONS} regions"),
            );
        }
        let mut out = Vec::new();
        for text in &list.value {
            let wanted = text.value.trim();
            match known.iter().position(|k| k.eq_ignore_ascii_case(wanted)) {
                Some(index) if out.contains(&index) => {
                    self.error(
                        &text.referenced,
                        format!("service '{service}': region '{wanted}' is listed twice"),
                    );
                }
                Some(index) => out.push(index),
                None => self.error(
                    &text.referenced,
                    format!(
                        "service '{service}': unknown region '{wanted}' (known: {})",
                        known.join(", ")
                    ),
                ),
            }
        }
        out
    }
}

/// What the settings of one service are checked against.
struct ServiceContext<'a> {
    name: &'a str,
    /// Indexes into the zone's regions.
    regions: &'a [usize],
    raw_regions: &'a indexmap::IndexMap<raw::Text, Spanned<raw::Region>>,
}

fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '${{' in '{text}'"))?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
