//! Why a client gets the answer it gets: the client's location, the rule that matched, every
//! candidate region with its state, distance and verdict, the policy's steps and the final
//! answer. Used by `regiondns explain` and by `_explain.<service>` TXT queries.
//!
//! It runs the server's own code ([`crate::routing::ServiceRoutes::decide`] and
//! [`crate::answer::decision_answer`]) with an observer that writes lines; it decides nothing.

use hickory_proto::{
    rr::{Name, RData, Record, RecordType, rdata::TXT},
    serialize::binary::{BinDecodable, BinDecoder},
};

use crate::{
    answer::{Answer, ClientAddress, decision_answer},
    config::{Matcher, character_strings},
    geo::{GeoIp, Located},
    region::State,
    routing::{Decision, Explain, RegionRoute, RoutingTable, RulePlan, ServiceRoutes, ZoneRoutes},
    wire::name::{first_label, parent},
};

/// The first label of the names that explain a service's answer over DNS.
const EXPLAIN_LABEL: &[u8] = b"_explain";

/// The answer to `_explain.<service>` TXT, in a zone that enables it: the decision for this
/// client, one TXT record per line. `None` for every other question.
pub fn txt_answer<'t>(
    table: &'t RoutingTable,
    qname: &[u8],
    qtype: RecordType,
    client: ClientAddress,
) -> Option<Answer<'t>> {
    if qtype != RecordType::TXT || first_label(qname) != EXPLAIN_LABEL {
        return None;
    }
    let zone = table.zone_for(qname).filter(|zone| zone.explain)?;
    let service = zone.service_named(parent(qname)?)?;
    let name = Name::read(&mut BinDecoder::new(qname)).ok()?;
    // A plan keeps the databases open while a zone answers `_explain`.
    let geo = table.explain_geo.as_deref()?;
    let records = service_lines(zone, service, geo, client, RecordType::A)
        .iter()
        .map(|line| {
            let text = TXT::new(character_strings(line));
            Record::from_rdata(name.clone(), 0, RData::TXT(text))
        })
        .collect();
    // The explanation is about this very address.
    let scope = if client.ip.is_ipv4() { 32 } else { 128 };
    Some(Answer::made(records, &zone.counters.noerror, scope))
}

/// Lines describing how `service` answers `qtype` for `client`. The decision is the server's
/// own, from the compiled places; `geo` says what the address's record holds, and the
/// distances.
pub fn service_lines(
    zone: &ZoneRoutes,
    service: &ServiceRoutes,
    geo: &GeoIp,
    client: ClientAddress,
    qtype: RecordType,
) -> Vec<String> {
    let (mut found, _) = service.client(client.ip);
    let located = geo.locate(client.ip);
    found.coordinates = located.coordinates();
    let first = client_line(client, &located);
    let mut report = Report {
        lines: vec![first],
        has_rules: !service.plan.rules.is_empty(),
    };
    let decision = service.decide(&found, &mut report);
    if let Some(line) = service.latency_line(client.ip, &located) {
        report.lines.push(line);
    }
    let names = match decision {
        Decision::Regions { picks, .. } => picks
            .iter()
            .filter_map(|i| service.region(i))
            .map(|r| r.key.region.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    let answer = decision_answer(zone, service, decision, qtype);
    let answered = answer.answer_records();
    let records: Vec<String> = answered.iter().map(|r| r.data.to_string()).collect();
    let ttl = answered.first().map(|r| r.ttl);
    let mut last = format!("answer: {}", answer.rcode.name());
    if !names.is_empty() {
        last.push_str(&format!(" from {names}"));
    }
    if !records.is_empty() {
        last.push_str(&format!(" {qtype} {}", records.join(" ")));
    }
    if let Some(ttl) = ttl {
        last.push_str(&format!(", TTL {ttl}"));
    }
    if let Some(reason) = answer.extended_error {
        last.push_str(&format!(", extended error: {}", reason.text));
    }
    last.push_str(&format!(", ECS scope /{}", answer.scope));
    report.lines.push(last);
    report.lines
}

fn client_line(client: ClientAddress, located: &Located) -> String {
    let ip = format!("{} ({})", client.ip, client.source.describe());
    match located {
        Located::Known(l) => {
            let coordinates = l.coordinates.map_or("no coordinates".into(), |c| {
                format!("{:.2},{:.2}", c.lat, c.lon)
            });
            format!(
                "client {ip}: country {}, continent {}, at {coordinates}, GeoIP network /{}",
                l.country.map_or("?".into(), |c| c.to_string()),
                l.continent.map_or("?", |c| c.code()),
                l.prefix_len
            )
        }
        Located::Unknown { prefix_len } => {
            format!("client {ip}: not in the GeoIP databases (network /{prefix_len})")
        }
    }
}

struct Report {
    lines: Vec<String>,
    has_rules: bool,
}

impl Explain for Report {
    fn rule(&mut self, matched: Option<(usize, &RulePlan)>) {
        let line = match matched {
            None if self.has_rules => "rule: none matched".to_string(),
            None => "rules: none".to_string(),
            Some((index, rule)) => {
                let mut line = format!("rule {} matched: {}", index + 1, describe(&rule.matcher));
                if let Some(allow) = &rule.allow {
                    line.push_str(&format!(
                        "; allow {}; when none: {:?}",
                        allow.description, rule.when_none
                    ));
                }
                if !rule.prefer.is_empty() {
                    line.push_str(&format!("; prefer {} region(s) first", rule.prefer.len()));
                }
                line
            }
        };
        self.lines.push(line);
    }

    fn candidate(
        &mut self,
        region: &RegionRoute,
        state: State,
        distance: Option<f64>,
        verdict: &str,
    ) {
        let distance = distance.map_or("distance unknown".into(), |d| format!("{d:.0} km"));
        self.lines.push(format!(
            "region {}: {}, {distance}, {verdict}",
            region.key.region,
            state.as_str()
        ));
    }

    fn step(&mut self, text: &dyn Fn() -> String) {
        self.lines.push(text());
    }
}

fn describe(matcher: &Matcher) -> String {
    if matcher.unlocated {
        return "no usable location (no GeoIP record, or one that cannot be read)".into();
    }
    let mut parts = Vec::new();
    if !matcher.continents.is_empty() {
        let codes: Vec<&str> = matcher.continents.iter().map(|c| c.code()).collect();
        parts.push(format!("continent {}", codes.join(", ")));
    }
    if !matcher.countries.is_empty() {
        let codes: Vec<String> = matcher.countries.iter().map(ToString::to_string).collect();
        parts.push(format!("country {}", codes.join(", ")));
    }
    if !matcher.networks.is_empty() {
        let networks: Vec<String> = matcher.networks.iter().map(ToString::to_string).collect();
        parts.push(format!("network {}", networks.join(", ")));
    }
    parts.join(" and ")
}
