//! The `records` sub-language: static records by name and type in presentation format, and
//! the rules that tie them together (a CNAME stands alone, delegations hold only glue below
//! them, in-zone name servers have addresses).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use hickory_proto::rr::{
    LowerName, Name, RData, RecordType,
    rdata::{A, AAAA, CNAME, MX, NS, PTR, SRV, TXT},
};

use super::*;
use crate::config::{RecordSet, raw};

impl Checker<'_> {
    pub(super) fn records(
        &mut self,
        nodes: &raw::Entries<At<raw::Node>>,
        default_ttl: u32,
    ) -> Vec<RecordSet> {
        let mut positions: HashMap<LowerName, Position> = HashMap::new();
        let mut sets = Vec::new();
        for (key, node) in nodes {
            let Some(name) = self.owner_name(key) else {
                continue;
            };
            if let Some(first) = positions.insert(LowerName::new(&name), key.at) {
                self.error(
                    key.at,
                    format!(
                        "duplicate name '{}' (first at line {})",
                        key.value, first.line
                    ),
                );
                continue;
            }
            let before = sets.len();
            self.node(&name, &node.value, default_ttl, &mut sets);
            if sets.len() == before {
                self.error(node.at, format!("name '{}' has no records", key.value));
            }
            self.check_node_types(&name, &sets[before..], key.at);
        }
        self.check_delegations(&sets, &positions);
        sets.shrink_to_fit();
        sets
    }

    fn node(&mut self, name: &Name, node: &raw::Node, default_ttl: u32, out: &mut Vec<RecordSet>) {
        let ttl = self.ttl(node.ttl.as_ref()).unwrap_or(default_ttl);
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
                    self.error(value.at, format!("duplicate {record_type} value"));
                } else {
                    rdata.push(parsed);
                }
            }
            if record_type == RecordType::CNAME && rdata.len() > 1 {
                self.error(values[1].at, "a name has at most one CNAME");
            }
            if !rdata.is_empty() {
                // Kept for the configuration's life: no spare capacity (most sets hold one).
                rdata.shrink_to_fit();
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
            RecordType::TXT => Ok(RData::TXT(TXT::new(crate::config::character_strings(
                &value.value,
            )))),
            RecordType::MX => return self.mx(value),
            RecordType::SRV => return self.srv(value),
            _ => RData::try_from_str(record_type, text)
                .map_err(|e| format!("invalid {record_type} value '{text}': {e}")),
        };
        parsed.map_err(|message| self.error(value.at, message)).ok()
    }

    fn target(&mut self, value: &raw::Text) -> Option<Name> {
        self.any_name(value)
    }

    /// `MX: "10 mail.example.com."`
    fn mx(&mut self, value: &raw::Text) -> Option<RData> {
        let fields: Vec<&str> = value.value.split_whitespace().collect();
        let [preference, exchange] = fields[..] else {
            self.error(
                value.at,
                format!("MX needs 'preference exchange', got '{}'", value.value),
            );
            return None;
        };
        let Ok(preference) = preference.parse::<u16>() else {
            self.error(value.at, format!("invalid MX preference '{preference}'"));
            return None;
        };
        let exchange = self.any_name(&At {
            value: exchange.to_owned(),
            at: value.at,
        })?;
        Some(RData::MX(MX::new(preference, exchange)))
    }

    /// `SRV: "10 5 443 api.example.com."`
    fn srv(&mut self, value: &raw::Text) -> Option<RData> {
        let fields: Vec<&str> = value.value.split_whitespace().collect();
        let [priority, weight, port, target] = fields[..] else {
            self.error(
                value.at,
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
                value.at,
                format!("invalid SRV numbers in '{}'", value.value),
            );
            return None;
        };
        let target = self.any_name(&At {
            value: target.to_owned(),
            at: value.at,
        })?;
        Some(RData::SRV(SRV::new(priority, weight, port, target)))
    }

    /// Rules on which types may share a name (RFC 1034 3.6.2, RFC 2181 10.3).
    fn check_node_types(&mut self, name: &Name, sets: &[RecordSet], at: Position) {
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
    fn check_delegations(&mut self, sets: &[RecordSet], positions: &HashMap<LowerName, Position>) {
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
                        at,
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
                        at,
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
    pub(super) fn check_nameserver_addresses(
        &mut self,
        nameservers: &[Name],
        sets: &[RecordSet],
        at: Position,
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hickory_proto::rr::{RData, RecordType};

    use crate::config::{validate::fixtures::*, *};
    use crate::{wire::name::NameKey, zone::Lookup};

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
            "zones/t.yaml:15:3: service 'api': clashes with the static A record of the same name",
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
    fn long_txt_values_are_split_into_character_strings() {
        let long = "a".repeat(300);
        let text = format!("{HEAD}records:\n{NS1}  t: {{ TXT: \"{long}\" }}\n");
        let zone = parse(Path::new("t.yaml"), &text, 1).expect("valid");
        let name = NameKey::new(&Name::from_ascii("t.llm.example.com.").expect("name"));
        let Lookup::Found(set) = zone.data.lookup(name.wire(), RecordType::TXT) else {
            panic!("TXT")
        };
        let RData::TXT(txt) = &set.records()[0].data else {
            panic!("TXT rdata")
        };
        let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lengths, vec![255, 45]);
    }

    #[test]
    fn ttls_above_2_to_the_31_are_refused_where_they_are_written() {
        let zone = format!(
            "{HEAD}ttl: 4294967295\nrecords:\n{NS1}  www: {{ A: 192.0.2.1, ttl: 2147483648 }}\n"
        );
        assert_error(
            &zone,
            "zones/t.yaml:4:6: ttl must be at most 2147483647 (RFC 2181 8)",
        );
        assert_error(
            &zone,
            "zones/t.yaml:7:29: ttl must be at most 2147483647 (RFC 2181 8)",
        );
        let fine = format!("{HEAD}ttl: 2147483647\nrecords:\n{NS1}");
        let parsed = parse(Path::new("t.yaml"), &fine, 1).expect("the largest TTL is fine");
        assert_eq!(parsed.ttl, 2_147_483_647);
    }
}
