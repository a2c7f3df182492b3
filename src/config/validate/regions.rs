//! The `regions` sub-language: where each region is, its addresses, its health check (HTTP or
//! TCP, timing, thresholds, headers with `${VAR}` from the environment) and its weight.

use std::{net::IpAddr, time::Duration};

use super::*;
use crate::config::{Check, CheckTarget, HttpCheck, LoadSource, Region, Thresholds, raw};
use crate::geo::Coordinates;

impl Checker<'_> {
    pub(super) fn regions(&mut self, regions: &raw::Entries<At<raw::Region>>) -> Vec<Region> {
        let mut out: Vec<Region> = Vec::new();
        for (key, region) in regions {
            self.scope = None;
            let name = key.value.trim();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                self.error(
                    key.at,
                    format!("invalid region name '{name}': use letters, digits, '-', '_' and '.'"),
                );
                continue;
            }
            if let Some(first) = out.iter().find(|r| r.name.eq_ignore_ascii_case(name)) {
                self.error(
                    key.at,
                    format!("duplicate region '{name}' (as '{}')", first.name),
                );
                continue;
            }
            self.scope = Some(format!("region '{name}'"));
            let location = self.location(&region.value.location);
            let addresses = self.addresses(&region.value.addresses);
            let check = region.value.check.as_ref().map(|c| self.check(c));
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

    fn location(&mut self, location: &At<raw::Location>) -> Option<Coordinates> {
        let raw::Location { lat, lon } = location.value;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            self.error(
                location.at,
                format!(
                    "location lat must be within -90..90 and lon within -180..180, got {lat}, {lon}"
                ),
            );
            return None;
        }
        Some(Coordinates { lat, lon })
    }

    fn addresses(&mut self, addresses: &At<Vec<raw::Text>>) -> Vec<IpAddr> {
        if addresses.value.is_empty() {
            self.error(addresses.at, "no addresses");
        }
        let mut out: Vec<IpAddr> = Vec::new();
        for text in &addresses.value {
            match text.value.trim().parse::<IpAddr>() {
                Ok(ip) if out.contains(&ip) => {
                    self.error(text.at, format!("duplicate address {ip}"));
                }
                Ok(ip) => out.push(ip),
                Err(_) => self.error(text.at, format!("invalid IP address '{}'", text.value)),
            }
        }
        out
    }

    fn check(&mut self, check: &At<raw::Check>) -> Option<Check> {
        let raw = &check.value;
        let at = check.at;
        let errors_before = self.errors.len();
        let interval = self
            .duration(raw.interval.as_ref())
            .unwrap_or(DEFAULT_INTERVAL);
        let timeout = match raw.timeout.as_ref() {
            Some(text) => self.duration(Some(text)).unwrap_or(DEFAULT_TIMEOUT),
            None => DEFAULT_TIMEOUT.min(interval),
        };
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            self.error(at, "check interval must be within 100ms..1h");
        }
        if timeout > interval || timeout.is_zero() {
            self.error(at, "check timeout must be above 0 and at most the interval");
        }
        let thresholds = self.thresholds(raw, timeout);
        self.secrets = Secrets::default();
        let target = match (&raw.http, &raw.tcp) {
            (Some(url), None) => self.http_check(url, raw),
            (None, Some(address)) => self.tcp_check(address, raw),
            _ => {
                self.error(at, "a check needs exactly one of `http` or `tcp`");
                None
            }
        };
        let target = target.filter(|_| self.errors.len() == errors_before)?;
        Some(Check {
            target,
            interval,
            timeout,
            thresholds,
            secrets: std::mem::take(&mut self.secrets),
        })
    }

    fn duration(&mut self, text: Option<&raw::Text>) -> Option<Duration> {
        let text = text?;
        humantime::parse_duration(text.value.trim())
            .map_err(|e| {
                self.error(
                    text.at,
                    format!("invalid duration '{}' ({e}; e.g. 2s, 800ms)", text.value),
                );
            })
            .ok()
    }

    fn thresholds(&mut self, raw: &raw::Check, timeout: Duration) -> Thresholds {
        let mut count = |value: &Option<At<u32>>, name: &str, default: u32| match value {
            Some(v) if !(1..=MAX_PROBE_COUNT).contains(&v.value) => {
                self.error(
                    v.at,
                    format!("check {name} must be within 1..{MAX_PROBE_COUNT}"),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        let fall = count(&raw.fall, "fall", DEFAULT_THRESHOLDS.fall);
        let rise = count(&raw.rise, "rise", DEFAULT_THRESHOLDS.rise);
        let window = count(&raw.window, "window", DEFAULT_THRESHOLDS.window);
        let mut rate = |value: &Option<At<f64>>, name: &str, default: f64| match value {
            Some(v) if !(0.0..=1.0).contains(&v.value) => {
                self.error(v.at, format!("check {name} must be within 0..1"));
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
        let slow = self.duration(raw.slow.as_ref());
        if let (Some(slow), Some(text)) = (slow, raw.slow.as_ref())
            && (slow.is_zero() || slow >= timeout)
        {
            // At the timeout a probe fails: a threshold there could never count one as slow.
            self.error(text.at, "check slow must be above 0 and below the timeout");
        }
        Thresholds {
            fall,
            rise,
            slow,
            window,
            max_error_rate,
            max_slow_rate,
        }
    }

    fn http_check(&mut self, url: &raw::Text, raw: &raw::Check) -> Option<CheckTarget> {
        let expanded = self.expand(url)?;
        let url = match reqwest::Url::parse(&expanded) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
            {
                parsed
            }
            Ok(_) => {
                self.error(url.at, "check url must be http:// or https:// with a host");
                return None;
            }
            Err(e) => {
                // As written: the expanded URL may hold a secret.
                self.error(url.at, format!("invalid check url '{}': {e}", url.value));
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
                    self.error(
                        text.at,
                        format!("check method must be GET, HEAD, POST or PUT, got '{other}'"),
                    );
                    return None;
                }
            },
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            let Some(expanded) = self.expand(value) else {
                continue;
            };
            let valid_name = reqwest::header::HeaderName::from_bytes(name.value.as_bytes()).is_ok();
            let valid_value = reqwest::header::HeaderValue::from_str(&expanded).is_ok();
            if !valid_name || !valid_value {
                self.error(name.at, format!("invalid check header '{}'", name.value));
                continue;
            }
            headers.push((name.value.clone(), expanded));
        }
        let body = match raw.body.as_ref() {
            Some(text) => Some(self.expand(text)?),
            None => None,
        };
        let expect = raw.expect.as_ref().map(|codes| {
            if codes.value.is_empty() || codes.value.iter().any(|c| !(100..=599).contains(c)) {
                self.error(codes.at, "check expect needs HTTP status codes (100-599)");
            }
            codes.value.clone()
        });
        Some(CheckTarget::Http(Box::new(HttpCheck {
            url,
            method,
            headers,
            body,
            expect,
            body_contains: raw.body_contains.as_ref().map(|t| t.value.clone()),
            load: raw.load.as_ref().and_then(|load| self.load_source(load)),
        })))
    }

    fn load_source(&mut self, load: &At<raw::LoadReport>) -> Option<LoadSource> {
        match (&load.value.header, &load.value.json) {
            (Some(header), None) => {
                let name = reqwest::header::HeaderName::from_bytes(header.value.trim().as_bytes());
                name.map_err(|_| {
                    self.error(header.at, format!("invalid load header '{}'", header.value));
                })
                .ok()
                .map(LoadSource::Header)
            }
            (None, Some(pointer)) => {
                let pointer = pointer.value.trim();
                if !pointer.starts_with('/') {
                    self.error(
                        load.at,
                        format!(
                            "load json must be a JSON pointer like /utilization, got '{pointer}'"
                        ),
                    );
                    return None;
                }
                Some(LoadSource::Json(pointer.to_owned()))
            }
            _ => {
                self.error(load.at, "load needs exactly one of `header` or `json`");
                None
            }
        }
    }

    fn tcp_check(&mut self, address: &raw::Text, raw: &raw::Check) -> Option<CheckTarget> {
        if let Some(load) = &raw.load {
            self.error(load.at, "load applies to http checks only");
        }
        let http_only = [
            raw.method.as_ref(),
            raw.body.as_ref(),
            raw.body_contains.as_ref(),
        ];
        if http_only.iter().any(Option::is_some) || !raw.headers.is_empty() || raw.expect.is_some()
        {
            self.error(
                address.at,
                "method, body, headers, expect and body_contains apply to http checks only",
            );
        }
        let written = self.expand(address)?;
        let parsed = written.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse::<u16>().ok()?))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
        });
        match parsed {
            Some((host, port)) => Some(CheckTarget::Tcp { host, port }),
            None => {
                self.error(
                    address.at,
                    format!("tcp check needs host:port, got '{}'", address.value),
                );
                None
            }
        }
    }

    /// `${VAR}` replaced by the environment variable's value; an unset variable is an error.
    /// The values read are remembered as the check's secrets.
    fn expand(&mut self, text: &raw::Text) -> Option<String> {
        expand_env(&text.value, &mut self.secrets)
            .map_err(|e| self.error(text.at, e))
            .ok()
    }
}

pub(super) fn expand_env(text: &str, secrets: &mut Secrets) -> Result<String, String> {
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
        secrets.add(&value, name);
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use crate::config::{validate::fixtures::*, *};

    fn region_with_check(check: &str) -> String {
        format!(
            "{HEAD}records:\n{NS1}regions:\n  eu:\n    location: {{ lat: 1, lon: 2 }}\n    addresses: [192.0.2.1]\n    check: {check}\n"
        )
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
                "zones/t.yaml:10:38: region 'eu': check fall must be within 1..1000",
            ),
            (
                "{ http: \"http://a\", window: 4294967295 }",
                "zones/t.yaml:10:40: region 'eu': check window must be within 1..1000",
            ),
            (
                "{ http: \"http://a\", interval: 100000000years }",
                "zones/t.yaml:10:12: region 'eu': check interval must be within 100ms..1h",
            ),
            (
                "{ http: \"http://a\", interval: 10ms }",
                "zones/t.yaml:10:12: region 'eu': check interval must be within 100ms..1h",
            ),
            (
                "{ http: \"http://a\", timeout: 1s, slow: 1s }",
                "zones/t.yaml:10:51: region 'eu': check slow must be above 0 and below the timeout",
            ),
            (
                "{ http: \"http://a\", load: {} }",
                "zones/t.yaml:10:38: region 'eu': load needs exactly one of `header` or `json`",
            ),
            (
                "{ http: \"http://a\", load: { json: utilization } }",
                "zones/t.yaml:10:38: region 'eu': load json must be a JSON pointer like /utilization, got 'utilization'",
            ),
            (
                "{ http: \"http://a\", load: { header: \"X Load\" } }",
                "zones/t.yaml:10:48: region 'eu': invalid load header 'X Load'",
            ),
            (
                "{ tcp: \"a:1\", load: { header: X-Load } }",
                "zones/t.yaml:10:32: region 'eu': load applies to http checks only",
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
                "zones/t.yaml:10:32: unknown key `intervall`, expected one of http, tcp, method, body, interval, timeout, expect, headers, body_contains, fall, rise, slow, window, load, max_error_rate, max_slow_rate",
            ),
        ];
        for (check, expected) in cases {
            assert_error(&region_with_check(check), expected);
        }
    }
}
