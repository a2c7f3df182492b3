//! The `services` sub-language: which regions answer a name, with what TTL and policy, the
//! canary and shed shares, and the rules (match by continent, country or network; allow, prefer,
//! fail closed).

use std::collections::HashSet;

use hickory_proto::rr::{LowerName, RecordType};

use super::*;
use crate::config::{
    Allow, Canary, FailClosed, LoadTarget, MAX_ANSWERS, MAX_SERVICE_REGIONS, Matcher, Policy,
    RecordSet, Rule, Secondary, Service, WhenAllDown, raw,
};
use crate::geo::{Continent, CountryCode};
use crate::latency::estimate::Settings as LatencySettings;

/// How far a region's moved share may change per probe interval, unless `load_step` says.
const DEFAULT_LOAD_STEP: f64 = 0.1;

impl Checker<'_> {
    fn policy(&mut self, text: Option<&raw::Text>) -> Policy {
        let Some(text) = text else {
            return Policy::Nearest;
        };
        match text.value.trim() {
            "nearest" => Policy::Nearest,
            "priority" => Policy::Priority,
            "weighted" => Policy::Weighted,
            "latency" => Policy::Latency,
            other => {
                self.error(
                    text.at,
                    format!("policy must be nearest, priority, weighted or latency, got '{other}'"),
                );
                Policy::Nearest
            }
        }
    }

    /// The `latency:` settings of a `policy: latency` service (defaults where unsaid).
    fn latency(
        &mut self,
        policy: Policy,
        written: Option<&At<raw::Latency>>,
    ) -> Option<LatencySettings> {
        if policy != Policy::Latency {
            if let Some(written) = written {
                self.error(written.at, "latency settings need policy: latency");
            }
            return None;
        }
        let mut settings = LatencySettings::default();
        let Some(At { value: raw, .. }) = written else {
            return Some(settings);
        };
        if let Some(explore) = &raw.explore {
            settings.explore = self.share("explore", explore);
        }
        if let Some(better_by) = &raw.better_by {
            settings.better_by = self.share("better_by", better_by);
        }
        if let Some(min) = &raw.min_samples {
            if min.value == 0 {
                self.error(min.at, "min_samples must be 1 or more");
            }
            settings.min_samples = min.value.max(1);
        }
        Some(settings)
    }

    fn answers(&mut self, answers: Option<&At<u32>>) -> usize {
        let Some(answers) = answers else { return 1 };
        if !(1..=MAX_ANSWERS).contains(&(answers.value as usize)) {
            self.error(
                answers.at,
                format!("answers must be within 1..{MAX_ANSWERS}"),
            );
        }
        (answers.value as usize).clamp(1, MAX_ANSWERS)
    }

    /// `5%` or `0.05`.
    fn share(&mut self, what: &str, text: &raw::Text) -> f64 {
        let written = text.value.trim();
        let parsed = match written.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => written.parse::<f64>(),
        };
        match parsed {
            Ok(share) if (0.0..=1.0).contains(&share) => share,
            _ => {
                self.error(
                    text.at,
                    format!("{what} must be a share like 5% or 0.05 (0 to 100%), got '{written}'"),
                );
                0.0
            }
        }
    }

    /// `load_target` and `load_step`; a target needs a region whose check reports load.
    fn load_target(&mut self, service: &ServiceContext, raw: &raw::Service) -> Option<LoadTarget> {
        let Some(written) = &raw.load_target else {
            if let Some(step) = &raw.load_step {
                self.error(step.at, "load_step needs load_target");
            }
            return None;
        };
        let target = self.share("load_target", written);
        let step = raw
            .load_step
            .as_ref()
            .map_or(DEFAULT_LOAD_STEP, |t| self.share("load_step", t));
        if target == 0.0 {
            self.error(written.at, "load_target must be above 0");
        }
        if step == 0.0 {
            self.error(written.at, "load_step must be above 0");
        }
        let reports = |i: &usize| {
            let region = service.raw_regions.get(*i).map(|(_, r)| &r.value);
            region
                .and_then(|r| r.check.as_ref())
                .is_some_and(|c| c.value.load.is_some())
        };
        if !service.regions.iter().any(reports) {
            self.error(
                written.at,
                "load_target needs regions whose check reports load (check: { load: { header: X-Load } })",
            );
        }
        Some(LoadTarget { target, step })
    }

    fn canary(&mut self, service: &ServiceContext, canary: &At<raw::Canary>) -> Option<Canary> {
        let region = self.service_region(service, &canary.value.region)?;
        Some(Canary {
            region,
            share: self.share("canary share", &canary.value.share),
        })
    }

    /// A region named in a service's settings: it must be one of the service's regions.
    fn service_region(&mut self, service: &ServiceContext, text: &raw::Text) -> Option<usize> {
        let wanted = text.value.trim();
        let found = service.regions.iter().copied().find(|&i| {
            service
                .raw_regions
                .get(i)
                .is_some_and(|(k, _)| k.value.trim().eq_ignore_ascii_case(wanted))
        });
        if found.is_none() {
            self.error(
                text.at,
                format!("region '{wanted}' is not one of its regions"),
            );
        }
        found
    }

    /// The service's rules, and last the one its `unlocated` setting adds for clients with no
    /// usable location.
    fn rules(&mut self, service: &ServiceContext, raw: &raw::Service) -> Vec<Rule> {
        let mut rules: Vec<Rule> = raw
            .rules
            .iter()
            .filter_map(|r| self.rule(service, r))
            .collect();
        rules.extend(self.unlocated(raw.unlocated.as_ref(), &rules));
        rules
    }

    /// The rule for clients with no usable location that no rule matched: by default
    /// (`restricted`) only the regions every rule with `allow` allows, failing closed as they
    /// do; none (every region) with `any` or when no rule restricts; none allowed with
    /// `refuse`, `servfail` or `nodata`. An unreadable GeoIP record must never let a client
    /// out of its jurisdiction.
    fn unlocated(&mut self, setting: Option<&raw::Text>, rules: &[Rule]) -> Option<Rule> {
        let restricting: Vec<&Rule> = rules.iter().filter(|r| r.allow.is_some()).collect();
        let written = setting.map_or("restricted", |t| t.value.trim());
        let (regions, when_none, description) = match written {
            "any" => return None,
            "restricted" => {
                let first = restricting.first()?;
                let regions = first.allow.as_ref().map_or(Vec::new(), |a| {
                    a.regions
                        .iter()
                        .copied()
                        .filter(|r| {
                            restricting.iter().all(|rule| {
                                rule.allow.as_ref().is_some_and(|a| a.regions.contains(r))
                            })
                        })
                        .collect()
                });
                let same = restricting.iter().all(|r| r.when_none == first.when_none);
                let when_none = if same {
                    first.when_none
                } else {
                    FailClosed::Refuse
                };
                let allowed: Vec<&str> = restricting
                    .iter()
                    .filter_map(|r| Some(r.allow.as_ref()?.description.as_str()))
                    .collect();
                (
                    regions,
                    when_none,
                    format!("what every rule allows ({})", allowed.join("; ")),
                )
            }
            "refuse" => (
                Vec::new(),
                FailClosed::Refuse,
                "no region (unlocated: refuse)".into(),
            ),
            "servfail" => (
                Vec::new(),
                FailClosed::ServFail,
                "no region (unlocated: servfail)".into(),
            ),
            "nodata" => (
                Vec::new(),
                FailClosed::NoData,
                "no region (unlocated: nodata)".into(),
            ),
            other => {
                if let Some(text) = setting {
                    self.error(
                        text.at,
                        format!(
                            "unlocated must be restricted, any, refuse, servfail or nodata, got '{other}'"
                        ),
                    );
                }
                return None;
            }
        };
        Some(Rule {
            matcher: Matcher {
                unlocated: true,
                ..Matcher::default()
            },
            allow: Some(Allow {
                regions,
                description,
            }),
            when_none,
            prefer: Vec::new(),
        })
    }

    fn rule(&mut self, service: &ServiceContext, rule: &At<raw::Rule>) -> Option<Rule> {
        let raw = &rule.value;
        let errors_before = self.errors.len();
        let matcher = self.matcher(&raw.matcher);
        let allow = raw
            .allow
            .as_ref()
            .and_then(|allow| self.allow(service, allow));
        let when_none = match raw.when_none.as_ref() {
            None => FailClosed::Refuse,
            Some(text) if raw.allow.is_none() => {
                self.error(text.at, "when_none applies only to a rule with allow");
                FailClosed::Refuse
            }
            Some(text) => match text.value.trim() {
                "refuse" => FailClosed::Refuse,
                "servfail" => FailClosed::ServFail,
                "nodata" => FailClosed::NoData,
                other => {
                    self.error(
                        text.at,
                        format!("when_none must be refuse, servfail or nodata, got '{other}'"),
                    );
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

    fn matcher(&mut self, matcher: &At<raw::Match>) -> Matcher {
        let raw = &matcher.value;
        if raw.continent.is_empty() && raw.country.is_empty() && raw.network.is_empty() {
            self.error(
                matcher.at,
                "a rule's match needs continent, country or network",
            );
        }
        let mut out = Matcher::default();
        for text in &raw.continent {
            match Continent::from_code(&text.value.trim().to_ascii_uppercase()) {
                Some(continent) => out.continents.push(continent),
                None => self.error(
                    text.at,
                    format!(
                        "unknown continent '{}' (AF, AN, AS, EU, NA, OC, SA)",
                        text.value
                    ),
                ),
            }
        }
        for text in &raw.country {
            match CountryCode::parse(text.value.trim()) {
                Some(country) => out.countries.push(country),
                None => self.error(
                    text.at,
                    format!(
                        "'{}' is not an ISO 3166 two-letter country code",
                        text.value
                    ),
                ),
            }
        }
        for text in &raw.network {
            match text.value.trim().parse::<ipnet::IpNet>() {
                Ok(network) => out.networks.push(network.trunc()),
                Err(_) => self.error(
                    text.at,
                    format!("invalid network '{}' (e.g. 10.0.0.0/8)", text.value),
                ),
            }
        }
        out
    }

    fn allow(&mut self, service: &ServiceContext, allow: &At<raw::Allow>) -> Option<Allow> {
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
                            .get(i)
                            .and_then(|(_, r)| r.value.jurisdiction.as_ref());
                        jurisdiction
                            .is_some_and(|j| wanted.contains(&j.value.trim().to_ascii_lowercase()))
                    })
                    .collect();
                if regions.is_empty() {
                    self.error(
                        allow.at,
                        format!(
                            "no region of the service has jurisdiction {}",
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
                    allow.at,
                    "allow needs exactly one of jurisdiction or regions",
                );
                None
            }
        }
    }

    pub(super) fn services(
        &mut self,
        services: &raw::Entries<At<raw::Service>>,
        raw_regions: &raw::Entries<At<raw::Region>>,
        records: &[RecordSet],
        transferred: bool,
    ) -> Vec<Service> {
        let region_names: Vec<&str> = raw_regions.keys().map(|k| k.value.trim()).collect();
        let mut seen: HashSet<LowerName> = HashSet::new();
        let mut out = Vec::new();
        for (key, service) in services {
            self.scope = None;
            let Some(name) = self.owner_name(key) else {
                continue;
            };
            if !seen.insert(LowerName::new(&name)) {
                self.error(key.at, format!("duplicate service '{}'", key.value));
                continue;
            }
            self.scope = Some(format!("service '{}'", key.value.trim()));
            let clash = records.iter().find(|s| {
                s.name == name
                    && matches!(
                        s.record_type,
                        RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::NS
                    )
            });
            if let Some(clash) = clash {
                self.error(
                    key.at,
                    format!(
                        "clashes with the static {} record of the same name",
                        clash.record_type
                    ),
                );
                continue;
            }
            if let Some(cut) = records.iter().find(|s| {
                s.record_type == RecordType::NS && s.name.zone_of(&name) && s.name != self.origin
            }) {
                self.error(key.at, format!("is below the delegation {}", cut.name));
                continue;
            }
            let regions = self.service_regions(&service.value.regions, &region_names);
            let when_all_down = match service.value.when_all_down.as_ref() {
                None => WhenAllDown::Nearest,
                Some(text) => match text.value.trim() {
                    "nearest" => WhenAllDown::Nearest,
                    "servfail" => WhenAllDown::ServFail,
                    other => {
                        self.error(
                            text.at,
                            format!("when_all_down must be nearest or servfail, got '{other}'"),
                        );
                        WhenAllDown::Nearest
                    }
                },
            };
            let context = ServiceContext {
                regions: &regions,
                raw_regions,
            };
            let service = &service.value;
            let policy = self.policy(service.policy.as_ref());
            let rules = self.rules(&context, service);
            let mut secondary = self.secondary(&context, service.secondary.as_ref());
            if transferred {
                let names = raw_regions
                    .keys()
                    .map(|k| k.value.trim())
                    .collect::<Vec<_>>();
                let at = service.secondary.as_ref().map_or(key.at, |t| t.at);
                secondary = self.secondary_allowed(&rules, at, secondary, &names);
            }
            out.push(Service {
                name,
                ttl: self
                    .ttl(service.ttl.as_ref())
                    .unwrap_or(DEFAULT_SERVICE_TTL),
                when_all_down,
                policy,
                latency: self.latency(policy, service.latency.as_ref()),
                answers: self.answers(service.answers.as_ref()),
                shed: service.shed.as_ref().map_or(1.0, |t| self.share("shed", t)),
                canary: service
                    .canary
                    .as_ref()
                    .and_then(|c| self.canary(&context, c)),
                load: self.load_target(&context, service),
                secondary,
                rules,
                regions,
            });
        }
        out
    }

    /// `secondary:`: `all` (the default), `omit` or one of the service's regions.
    fn secondary(&mut self, context: &ServiceContext<'_>, text: Option<&raw::Text>) -> Secondary {
        let Some(text) = text else {
            return Secondary::All;
        };
        let names: Vec<&str> = context.raw_regions.keys().map(|k| k.value.trim()).collect();
        match text.value.trim() {
            "all" => Secondary::All,
            "omit" => Secondary::Omit,
            wanted => match names.iter().position(|n| n.eq_ignore_ascii_case(wanted)) {
                Some(index) if context.regions.contains(&index) => Secondary::Region(index),
                _ => {
                    let listed: Vec<&str> = context.regions.iter().map(|&r| names[r]).collect();
                    self.error(
                        text.at,
                        format!(
                            "secondary must be all, omit or one of the service's regions ({}), got '{wanted}'",
                            listed.join(", ")
                        ),
                    );
                    Secondary::Omit
                }
            },
        }
    }

    /// In a transferred zone, a `secondary` that some rule's clients may not be sent to is an
    /// error (the default `all` included): a secondary answers every client alike, and must
    /// never answer one with a region its rules forbid.
    fn secondary_allowed(
        &mut self,
        rules: &[Rule],
        at: Position,
        secondary: Secondary,
        names: &[&str],
    ) -> Secondary {
        let allows = rules.iter().filter_map(|r| r.allow.as_ref());
        let forbidding = allows.clone().find(|allow| match secondary {
            Secondary::Region(region) => !allow.regions.contains(&region),
            Secondary::All => true,
            Secondary::Omit => false,
        });
        let Some(allow) = forbidding else {
            return secondary;
        };
        let what = match secondary {
            Secondary::Region(r) => format!("region '{}'", names[r]),
            _ => "every region that is up (secondary: all, the default)".to_owned(),
        };
        self.error(
            at,
            format!(
                "secondary: {what} would answer clients whose rule allows only {}; give \
                 `secondary: omit` or a region every rule allows",
                allow.description
            ),
        );
        Secondary::Omit
    }

    fn service_regions(&mut self, list: &At<Vec<raw::Text>>, known: &[&str]) -> Vec<usize> {
        if list.value.is_empty() {
            self.error(list.at, "lists no regions");
        }
        if list.value.len() > MAX_SERVICE_REGIONS {
            self.error(
                list.at,
                format!("lists more than {MAX_SERVICE_REGIONS} regions"),
            );
        }
        let mut out = Vec::new();
        for text in &list.value {
            let wanted = text.value.trim();
            match known.iter().position(|k| k.eq_ignore_ascii_case(wanted)) {
                Some(index) if out.contains(&index) => {
                    self.error(text.at, format!("region '{wanted}' is listed twice"));
                }
                Some(index) => out.push(index),
                None => self.error(
                    text.at,
                    format!("unknown region '{wanted}' (known: {})", known.join(", ")),
                ),
            }
        }
        out
    }
}

/// What the settings of one service are checked against.
struct ServiceContext<'a> {
    /// Indexes into the zone's regions.
    regions: &'a [usize],
    raw_regions: &'a raw::Entries<At<raw::Region>>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{validate::fixtures::*, *};

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
        assert_error(
            &empty,
            "zones/t.yaml:14:19: service 'api': lists no regions",
        );
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
                "zones/t.yaml:16:13: service 'api': policy must be nearest, priority, weighted or latency, got 'random'",
            ),
            (
                "    latency: { explore: 5% }\n",
                "zones/t.yaml:16:14: service 'api': latency settings need policy: latency",
            ),
            (
                "    policy: latency\n    latency: { explore: 5%, min_samples: 0 }\n",
                "zones/t.yaml:17:42: service 'api': min_samples must be 1 or more",
            ),
            (
                "    policy: latency\n    latency: { better_by: 2 }\n",
                "zones/t.yaml:17:27: service 'api': better_by must be a share like 5% or 0.05 (0 to 100%), got '2'",
            ),
            (
                "    answers: 9\n",
                "zones/t.yaml:16:14: service 'api': answers must be within 1..8",
            ),
            (
                "    load_target: 80%\n",
                "zones/t.yaml:16:18: service 'api': load_target needs regions whose check reports load (check: { load: { header: X-Load } })",
            ),
            (
                "    load_step: 5%\n",
                "zones/t.yaml:16:16: service 'api': load_step needs load_target",
            ),
            (
                "    load_target: 180%\n",
                "zones/t.yaml:16:18: service 'api': load_target must be a share like 5% or 0.05 (0 to 100%), got '180%'",
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

    #[test]
    fn a_transferred_service_gives_secondaries_only_what_every_rule_allows() {
        let zone = |settings: &str, transfer: &str| {
            format!(
                "{HEAD}records:\n{NS1}{REGIONS}services:\n  api:\n    regions: [us-east, eu-west]\n    rules:\n      - match: {{ continent: [EU] }}\n        allow: {{ regions: [eu-west] }}\n{settings}{transfer}"
            )
        };
        let transfer = "transfer: { to: [192.0.2.0/24, 2001:db8::53], tsig: xfr.example., notify: [192.0.2.53, \"[2001:db8::53]:5300\"] }\n";
        let forbidden = [
            (
                "",
                "zones/t.yaml:14:3: service 'api': secondary: every region that is up (secondary: all, the default) would answer clients whose rule allows only regions eu-west",
            ),
            (
                "    secondary: all\n",
                "zones/t.yaml:19:16: service 'api': secondary: every region that is up",
            ),
            (
                "    secondary: us-east\n",
                "zones/t.yaml:19:16: service 'api': secondary: region 'us-east' would answer clients whose rule allows only regions eu-west",
            ),
            (
                "    secondary: mars\n",
                "zones/t.yaml:19:16: service 'api': secondary must be all, omit or one of the service's regions (us-east, eu-west), got 'mars'",
            ),
        ];
        for (settings, expected) in forbidden {
            let said = errors(&zone(settings, transfer));
            assert!(
                said.iter().any(|e| e.starts_with(expected)),
                "{settings:?}: {said:#?}"
            );
        }
        for (settings, secondary) in [
            ("    secondary: eu-west\n", Secondary::Region(1)),
            ("    secondary: omit\n", Secondary::Omit),
        ] {
            let parsed = parse(Path::new("t.yaml"), &zone(settings, transfer), 1).expect("valid");
            assert_eq!(parsed.services[0].secondary, secondary);
            let policy = parsed.transfer.expect("transfer");
            assert_eq!(policy.to.len(), 2);
            assert_eq!(
                policy.tsig.map(|n| n.to_string()),
                Some("xfr.example.".into())
            );
            assert_eq!(policy.notify[1].to_string(), "[2001:db8::53]:5300");
            assert_eq!(policy.notify[0].port(), 53);
        }
        // Without transfers the rules alone decide: nothing to check.
        let untransferred = parse(Path::new("t.yaml"), &zone("", ""), 1).expect("valid");
        assert_eq!(untransferred.services[0].secondary, Secondary::All);
        let bad = "transfer: { to: [192.0.2.0/33], notify: [example.com] }\n";
        let said = errors(&zone("    secondary: omit\n", bad));
        for expected in [
            "'192.0.2.0/33' is not a network",
            "notify: 'example.com' is not ADDR or ADDR:PORT",
        ] {
            assert!(said.iter().any(|e| e.contains(expected)), "{said:#?}");
        }
    }
}
