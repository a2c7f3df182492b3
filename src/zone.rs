//! The authoritative data of one zone, ready to answer from: SOA, apex NS, static records,
//! delegations with their glue, and which names are services.
//!
//! This module owns name lookup inside a zone (RFC 1034 4.3.2 without wildcards): exact match,
//! CNAME, NODATA versus NXDOMAIN (empty non-terminals exist), referrals below a zone cut, and
//! the additional-section data of NS, MX and SRV records (their targets' addresses).
//! Records are built once, when the configuration is loaded; a lookup only borrows them. In a
//! signed zone they are signed then too, and the NSEC proofs of negative answers are made the
//! first time each is needed and remembered per thread. It does not choose regions: a service
//! name is handed back as [`Lookup::Service`].

use hickory_proto::rr::{
    Name, RData, Record, RecordType,
    rdata::{NS, SOA},
};

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crate::dnssec::{OnDemand, RrsetSigner, remembered};
use crate::wire::{
    NameKey, WireRRset, encode_signed_rrset,
    name::{NameMap, is_within, parent},
};

/// Index of a service in its zone's configuration.
pub type ServiceId = usize;

/// The records of one name and type, kept as encoded for the wire: the configuration's
/// records are not kept twice (they are decoded again for people to read).
#[derive(Debug, Clone, PartialEq)]
pub struct RRset {
    wire: WireRRset,
    /// The names in the RDATA that are looked up again: a CNAME's target (followed while it
    /// stays in the zone), or NS, MX and SRV targets (whose addresses go in the additional
    /// section, RFC 1034 3.7).
    targets: Box<[NameKey]>,
    /// For NS, MX and SRV, the addresses of their targets in this zone.
    additional: Option<Box<Additional>>,
}

/// What goes in the additional section with an RRset: the static addresses of its in-zone
/// targets, and the services among its targets (whose addresses depend on the client).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Additional {
    pub addresses: Vec<RRset>,
    pub services: Vec<ServiceId>,
}

impl RRset {
    /// `records` share one owner, type and TTL. Records that cannot be encoded (validated
    /// configuration never has any) make an empty set rather than a wrong answer.
    pub fn new(records: Vec<Record>) -> RRset {
        RRset::signed(records, None)
    }

    /// As [`RRset::new`], with its RRSIG when the zone is signed.
    pub fn signed(records: Vec<Record>, signer: Option<&RrsetSigner>) -> RRset {
        let signatures: Vec<RData> = signer.and_then(|s| s.sign(&records)).into_iter().collect();
        let Some(wire) = encode_signed_rrset(&records, &signatures) else {
            return RRset::new(Vec::new());
        };
        let targets = records
            .iter()
            .filter_map(|record| match &record.data {
                RData::CNAME(cname) => Some(NameKey::new(&cname.0)),
                RData::NS(NS(target)) => Some(NameKey::new(target)),
                RData::MX(mx) => Some(NameKey::new(&mx.exchange)),
                RData::SRV(srv) => Some(NameKey::new(&srv.target)),
                _ => None,
            })
            .collect();
        RRset {
            wire,
            targets,
            additional: None,
        }
    }

    /// This set, signed.
    fn sign(&mut self, signer: &RrsetSigner) {
        let signed = RRset::signed(self.records(), Some(signer));
        self.wire = signed.wire;
    }

    /// The records, decoded from the wire form (for display; the query path never calls it).
    pub fn records(&self) -> Vec<Record> {
        self.wire.records()
    }

    pub fn wire(&self) -> &WireRRset {
        &self.wire
    }

    /// The CNAME's target, for a CNAME set.
    pub fn cname_target(&self) -> Option<&[u8]> {
        let cname = self.wire.rtype() == u16::from(RecordType::CNAME);
        self.targets.first().filter(|_| cname).map(NameKey::wire)
    }

    /// The additional-section data of an NS, MX or SRV set.
    pub fn additional(&self) -> Option<&Additional> {
        self.additional.as_deref()
    }

    /// The names in the RDATA whose addresses go in the additional section.
    fn additional_targets(&self) -> &[NameKey] {
        if self.record_type() == Some(RecordType::CNAME) {
            return &[];
        }
        &self.targets
    }

    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    pub fn record_type(&self) -> Option<RecordType> {
        (!self.is_empty()).then(|| RecordType::from(self.wire.rtype()))
    }
}

/// A zone's SOA fields.
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

/// What a zone is built from: its apex, SOA and name servers, its static records and the
/// names of its services (in order: a service's index is its [`ServiceId`]).
pub struct ZoneSource<'a> {
    pub origin: &'a Name,
    /// TTL of the SOA and the apex NS.
    pub ttl: u32,
    pub soa: &'a Soa,
    pub nameservers: &'a [Name],
    pub records: Vec<RecordSet>,
    pub services: Vec<&'a Name>,
    /// The zone's signer, when it is signed.
    pub signer: Option<RrsetSigner>,
}

/// A zone cut: the NS set and the addresses of those name servers that this zone holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    /// The cut's name, in lower case wire form.
    pub name: NameKey,
    pub ns: RRset,
    pub glue: Vec<RRset>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// Exactly as long as needed: a zone has one node per name.
    rrsets: Box<[RRset]>,
    /// A [`ServiceId`], in half the space (a node per name adds up).
    service: Option<u32>,
    /// Boxed: few nodes are zone cuts.
    delegation: Option<Box<Delegation>>,
}

/// What a zone says about a name and type.
#[derive(Debug)]
pub enum Lookup<'z> {
    Found(&'z RRset),
    /// The name is an alias; the query type is not CNAME.
    Cname(&'z RRset),
    /// A/AAAA at a service name: the answer depends on the client.
    Service(ServiceId),
    NoData,
    NxDomain,
    Referral(&'z Delegation),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZoneData {
    origin: NameKey,
    origin_name: Name,
    soa: RRset,
    /// The SOA for negative answers, with TTL = min(SOA TTL, negative_ttl) (RFC 2308 5).
    negative_soa: RRset,
    nodes: NameMap<Node>,
    has_delegations: bool,
    static_records: usize,
    /// A signed zone's signer, kept to deny names and types when asked (compact denial).
    denial: Option<DenialSigner>,
}

/// What a signed zone needs to make its negative answers' proofs.
#[derive(Debug, Clone, PartialEq)]
struct DenialSigner {
    signer: RrsetSigner,
    /// The NSEC records' TTL: the negative answers' (RFC 9077).
    ttl: u32,
    /// Tells this zone's proofs apart from those of every other zone data in a thread's memo.
    id: u64,
}

impl ZoneData {
    pub fn build(source: ZoneSource<'_>) -> ZoneData {
        let origin = source.origin.clone();
        let soa = soa_record(&source, source.ttl);
        let negative_ttl = source.ttl.min(source.soa.negative_ttl);
        let mut zone = ZoneData {
            origin: NameKey::new(&origin),
            origin_name: origin.clone(),
            soa: RRset::new(vec![soa.clone()]),
            negative_soa: RRset::new(vec![soa_record(&source, negative_ttl)]),
            nodes: NameMap::default(),
            has_delegations: false,
            static_records: source.records.iter().map(|set| set.rdata.len()).sum(),
            denial: None,
        };
        let apex_ns = source
            .nameservers
            .iter()
            .map(|ns| Record::from_rdata(origin.clone(), source.ttl, RData::NS(NS(ns.clone()))))
            .collect();
        zone.add_rrset(&origin, RRset::new(vec![soa]));
        zone.add_rrset(&origin, RRset::new(apex_ns));
        for set in source.records {
            let records = set
                .rdata
                .into_iter()
                .map(|rdata| Record::from_rdata(set.name.clone(), set.ttl, rdata))
                .collect();
            zone.add_rrset(&set.name, RRset::new(records));
        }
        for (id, service) in source.services.into_iter().enumerate() {
            zone.node_mut(service).service = u32::try_from(id).ok();
        }
        if let Some(signer) = source.signer {
            zone.add_rrset(&origin, RRset::new(signer.dnskey_records(source.ttl)));
            zone.sign(&signer);
            static ZONES_SIGNED: AtomicU64 = AtomicU64::new(0);
            zone.denial = Some(DenialSigner {
                signer,
                ttl: negative_ttl,
                id: ZONES_SIGNED.fetch_add(1, Ordering::Relaxed),
            });
        }
        zone.build_delegations();
        zone.build_additional();
        zone.nodes.shrink_to_fit();
        zone
    }

    /// The apex, in lower case wire form.
    pub fn origin(&self) -> &[u8] {
        self.origin.wire()
    }

    /// The apex as configured, for people to read.
    pub fn origin_name(&self) -> &Name {
        &self.origin_name
    }

    pub fn soa(&self) -> &RRset {
        &self.soa
    }

    /// How many static records the zone file gave (besides the SOA and the apex NS).
    pub fn static_records(&self) -> usize {
        self.static_records
    }

    /// A signed zone's signer (its signatures made when the zone was read) and the TTL of its
    /// denials, min(SOA TTL, negative TTL) as RFC 9077 asks.
    pub fn signing(&self) -> Option<(&RrsetSigner, u32)> {
        self.denial.as_ref().map(|d| (&d.signer, d.ttl))
    }

    pub fn negative_soa(&self) -> &RRset {
        &self.negative_soa
    }

    /// Every RRset of the zone's names (the SOA and apex NS among them; no service's
    /// addresses, which depend on the client), for a zone transfer.
    pub fn rrsets(&self) -> impl Iterator<Item = &RRset> {
        self.nodes.iter().flat_map(|(_, node)| node.rrsets.iter())
    }

    /// Answers `name`/`qtype`; `name` must be inside this zone. `ANY` gets one RRset (RFC 8482).
    pub fn lookup(&self, name: &[u8], qtype: RecordType) -> Lookup<'_> {
        if let Some(delegation) = self.delegation_above(name, qtype) {
            return Lookup::Referral(delegation);
        }
        let Some(node) = self.nodes.get(name) else {
            return Lookup::NxDomain;
        };
        if let Some(id) = node.service
            && matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY)
        {
            return Lookup::Service(id as ServiceId);
        }
        // By type number: the sets are never empty, and no conversion per set.
        let find = |t: RecordType| {
            let wanted = u16::from(t);
            node.rrsets.iter().find(|s| s.wire.rtype() == wanted)
        };
        if qtype == RecordType::ANY {
            // RFC 8482: one RRset; the lowest type, as Knot DNS picks it.
            let first = node.rrsets.iter().min_by_key(|s| s.wire.rtype());
            return first.map_or(Lookup::NoData, Lookup::Found);
        }
        if let Some(found) = find(qtype) {
            return Lookup::Found(found);
        }
        // NSEC and RRSIG may exist beside a CNAME (RFC 2181 10.1, RFC 4035 2.5): the alias
        // does not answer for them.
        if matches!(qtype, RecordType::NSEC | RecordType::RRSIG) {
            return Lookup::NoData;
        }
        find(RecordType::CNAME).map_or(Lookup::NoData, Lookup::Cname)
    }

    /// The zone cut at or above `name`, if any: the parent side answers only DS at the cut.
    fn delegation_above(&self, name: &[u8], qtype: RecordType) -> Option<&Delegation> {
        if !self.has_delegations {
            return None;
        }
        let mut current = name;
        while current != self.origin.wire() {
            if let Some(delegation) = self
                .nodes
                .get(current)
                .and_then(|n| n.delegation.as_deref())
            {
                let at_cut_asking_parent = current == name && qtype == RecordType::DS;
                return (!at_cut_asking_parent).then_some(delegation);
            }
            current = parent(current)?;
        }
        None
    }

    fn add_rrset(&mut self, name: &Name, rrset: RRset) {
        if !rrset.is_empty() {
            let node = self.node_mut(name);
            let mut rrsets = std::mem::take(&mut node.rrsets).into_vec();
            rrsets.push(rrset);
            node.rrsets = rrsets.into_boxed_slice();
        }
    }

    /// The node of `name`, created with every missing ancestor up to the origin, so that empty
    /// non-terminals answer NODATA rather than NXDOMAIN (RFC 8020).
    fn node_mut(&mut self, name: &Name) -> &mut Node {
        let key = NameKey::new(name);
        let mut ancestor = parent(key.wire());
        while let Some(name) = ancestor.filter(|a| is_within(a, self.origin.wire())) {
            if name == self.origin.wire() {
                break;
            }
            self.nodes.get_or_default(name);
            ancestor = parent(name);
        }
        self.nodes.get_or_default(key.wire())
    }

    /// The signed NSEC record that proves `qtype` absent at `name` in a signed zone, as RFC
    /// 9824 compact denial does it: owned by `name`, its next name the very next one
    /// (`\000.name`), so that it covers nothing else and no zone content can be walked. Its
    /// types are those `name` has (RRSIG and NSEC included, `qtype` never), or NXNAME when
    /// `name` does not exist. Each is signed once per thread and remembered for this zone
    /// data's life; `None` for an unsigned zone.
    pub fn denial(&self, name: &[u8], qtype: u16) -> Option<Arc<WireRRset>> {
        let denial = self.denial.as_ref()?;
        remembered(OnDemand::Denial, denial.id, name, qtype, || {
            let types = self.types_at(name, qtype);
            denial::proof(&denial.signer, name, types, denial.ttl)
        })
    }

    /// What an NSEC at `name` lists when it denies `qtype` there.
    fn types_at(&self, name: &[u8], qtype: u16) -> Vec<RecordType> {
        let mut types = vec![RecordType::RRSIG, RecordType::NSEC];
        match self.nodes.get(name) {
            None => types.push(RecordType::Unknown(denial::NXNAME)),
            Some(node) => {
                let mut present: Vec<u16> = node.rrsets.iter().map(|s| s.wire.rtype()).collect();
                if node.service.is_some() {
                    present.extend([u16::from(RecordType::A), u16::from(RecordType::AAAA)]);
                }
                present.retain(|&t| t != qtype);
                types.extend(present.into_iter().map(RecordType::from));
            }
        }
        types
    }

    /// Signs every RRset this zone is authoritative for: all but those at and below a zone
    /// cut (the delegation's NS and glue belong to the child, RFC 4035 2.2).
    fn sign(&mut self, signer: &RrsetSigner) {
        let authoritative: Vec<NameKey> = self
            .nodes
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !self.at_or_below_cut(name))
            .map(NameKey::from_wire)
            .collect();
        for name in authoritative {
            if let Some(node) = self.nodes.get_mut(name.wire()) {
                node.rrsets.iter_mut().for_each(|set| set.sign(signer));
            }
        }
        self.soa.sign(signer);
        self.negative_soa.sign(signer);
    }

    /// Whether `name` or one of its ancestors below the apex holds NS (is a delegation).
    fn at_or_below_cut(&self, name: &[u8]) -> bool {
        std::iter::successors(Some(name), |n| parent(n))
            .take_while(|n| *n != self.origin.wire() && is_within(n, self.origin.wire()))
            .filter_map(|n| self.nodes.get(n))
            .any(|node| {
                node.rrsets
                    .iter()
                    .any(|s| s.record_type() == Some(RecordType::NS))
            })
    }

    fn build_delegations(&mut self) {
        let cuts: Vec<(NameKey, RRset)> = self
            .nodes
            .iter()
            .filter(|(name, _)| *name != self.origin.wire())
            .filter_map(|(name, node)| {
                let ns = node
                    .rrsets
                    .iter()
                    .find(|s| s.record_type() == Some(RecordType::NS))?;
                Some((NameKey::from_wire(name), ns.clone()))
            })
            .collect();
        for (name, ns) in cuts {
            let glue = self.glue_for(&ns);
            if let Some(node) = self.nodes.get_mut(name.wire()) {
                node.delegation = Some(Box::new(Delegation { name, ns, glue }));
            }
            self.has_delegations = true;
        }
    }

    /// Attaches to every NS, MX and SRV set the addresses of its targets in this zone (the
    /// apex NS's name servers, a mail exchanger, a service's host), in target order.
    fn build_additional(&mut self) {
        let mut found = Vec::new();
        for (name, node) in self.nodes.iter() {
            for (index, rrset) in node.rrsets.iter().enumerate() {
                let mut additional = Additional::default();
                let mut seen = Vec::new();
                for target in rrset.additional_targets() {
                    if !is_within(target.wire(), self.origin.wire()) || seen.contains(&target) {
                        continue;
                    }
                    seen.push(target);
                    let Some(target) = self.nodes.get(target.wire()) else {
                        continue;
                    };
                    additional
                        .services
                        .extend(target.service.map(|id| id as ServiceId));
                    let addresses = target.rrsets.iter().filter(|s| {
                        matches!(s.record_type(), Some(RecordType::A | RecordType::AAAA))
                    });
                    additional.addresses.extend(addresses.cloned());
                }
                if !additional.addresses.is_empty() || !additional.services.is_empty() {
                    found.push((NameKey::from_wire(name), index, additional));
                }
            }
        }
        for (name, index, additional) in found {
            if let Some(rrset) = self
                .nodes
                .get_mut(name.wire())
                .and_then(|n| n.rrsets.get_mut(index))
            {
                rrset.additional = Some(Box::new(additional));
            }
        }
    }

    fn glue_for(&self, ns: &RRset) -> Vec<RRset> {
        ns.additional_targets()
            .iter()
            .filter_map(|target| self.nodes.get(target.wire()))
            .flat_map(|node| node.rrsets.iter())
            .filter(|s| matches!(s.record_type(), Some(RecordType::A | RecordType::AAAA)))
            .cloned()
            .collect()
    }
}

fn soa_record(source: &ZoneSource<'_>, ttl: u32) -> Record {
    let soa = source.soa;
    let as_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let rdata = SOA::new(
        soa.primary.clone(),
        soa.contact.clone(),
        soa.serial,
        as_i32(soa.refresh),
        as_i32(soa.retry),
        as_i32(soa.expire),
        soa.negative_ttl,
    );
    Record::from_rdata(source.origin.clone(), ttl, RData::SOA(rdata))
}

/// Compact denial's proofs.
mod denial {
    use hickory_proto::{
        dnssec::rdata::{DNSSECRData, NSEC},
        rr::{Name, RData, Record, RecordType},
        serialize::binary::{BinDecodable, BinDecoder},
    };

    use crate::{
        dnssec::RrsetSigner,
        wire::{WireRRset, encode_signed_rrset},
    };

    /// The NXNAME meta-type (RFC 9824): in an NSEC's types, "this name does not exist".
    pub const NXNAME: u16 = 128;

    /// The signed NSEC at `name` (lower case wire form) listing `types`, its next name the
    /// immediate successor `\000.name`; `None` when that successor would be too long.
    pub fn proof(
        signer: &RrsetSigner,
        name: &[u8],
        types: Vec<RecordType>,
        ttl: u32,
    ) -> Option<WireRRset> {
        let owner = Name::read(&mut BinDecoder::new(name)).ok()?;
        let successor = [&[1u8, 0][..], name].concat();
        let next = Name::read(&mut BinDecoder::new(&successor)).ok()?;
        let nsec = RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, types)));
        let records = [Record::from_rdata(owner, ttl, nsec)];
        let signature = signer.sign(&records)?;
        encode_signed_rrset(&records, &[signature])
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, str::FromStr, sync::Arc};

    use super::*;
    use crate::config;

    const ZONE: &str = r#"
origin: llm.example.com.
ttl: 3600
soa: { primary: ns1, contact: hostmaster@example.com, serial: 7, negative_ttl: 30 }
ns: [ns1.llm.example.com.]
records:
  ns1: { A: [198.51.100.53] }
  "@": { TXT: ["v=spf1 -all"], MX: ["10 mail", "20 mail", "30 mx.example.net."] }
  mail: { A: [198.51.100.25], AAAA: ["2001:db8::25"] }
  _https._tcp.api: { SRV: ["1 1 443 api"] }
  docs: { CNAME: docs.example.net. }
  a.b.deep: { TXT: [deep] }
  sub: { NS: [ns.sub, ns.elsewhere.net.] }
  ns.sub: { A: [192.0.2.1] }
regions:
  us: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10] }
services:
  api: { regions: [us] }
"#;

    fn zone() -> ZoneData {
        let config = config::parse(Path::new("t.yaml"), ZONE, 1).expect("valid zone");
        Arc::unwrap_or_clone(config.data)
    }

    fn name(s: &str) -> Vec<u8> {
        NameKey::new(&Name::from_str(s).expect("name"))
            .wire()
            .to_vec()
    }

    #[test]
    fn apex_has_soa_ns_and_static_records() {
        let zone = zone();
        let apex = name("LLM.example.COM.");
        assert!(
            matches!(zone.lookup(&apex, RecordType::SOA), Lookup::Found(s) if s.records().len() == 1)
        );
        assert!(
            matches!(zone.lookup(&apex, RecordType::NS), Lookup::Found(s) if s.records().len() == 1)
        );
        assert!(matches!(
            zone.lookup(&apex, RecordType::TXT),
            Lookup::Found(_)
        ));
        assert!(matches!(
            zone.lookup(&apex, RecordType::CAA),
            Lookup::NoData
        ));
    }

    #[test]
    fn negative_soa_ttl_is_the_smaller_of_soa_ttl_and_negative_ttl() {
        let zone = zone();
        assert_eq!(zone.soa().records()[0].ttl, 3600);
        assert_eq!(zone.negative_soa().records()[0].ttl, 30);
    }

    #[test]
    fn missing_names_are_nxdomain_but_empty_non_terminals_are_nodata() {
        let zone = zone();
        assert!(matches!(
            zone.lookup(&name("nope.llm.example.com."), RecordType::A),
            Lookup::NxDomain
        ));
        assert!(matches!(
            zone.lookup(&name("b.deep.llm.example.com."), RecordType::A),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("deep.llm.example.com."), RecordType::TXT),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("a.b.deep.llm.example.com."), RecordType::TXT),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn cname_answers_every_other_type() {
        let zone = zone();
        let docs = name("docs.llm.example.com.");
        assert!(matches!(
            zone.lookup(&docs, RecordType::A),
            Lookup::Cname(_)
        ));
        assert!(matches!(
            zone.lookup(&docs, RecordType::CNAME),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn service_names_are_handed_to_routing_for_addresses_only() {
        let zone = zone();
        let api = name("api.llm.example.com.");
        assert!(matches!(
            zone.lookup(&api, RecordType::A),
            Lookup::Service(0)
        ));
        assert!(matches!(
            zone.lookup(&api, RecordType::AAAA),
            Lookup::Service(0)
        ));
        assert!(matches!(zone.lookup(&api, RecordType::TXT), Lookup::NoData));
    }

    #[test]
    fn any_answers_the_lowest_type_and_nsec_ignores_the_alias() {
        let zone = zone();
        let apex = zone.lookup(&name("llm.example.com."), RecordType::ANY);
        assert!(
            matches!(apex, Lookup::Found(s) if s.record_type() == Some(RecordType::NS)),
            "NS (2) before SOA (6), MX (15), TXT (16): {apex:?}"
        );
        let docs = name("docs.llm.example.com.");
        assert!(matches!(
            zone.lookup(&docs, RecordType::NSEC),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&docs, RecordType::RRSIG),
            Lookup::NoData
        ));
    }

    #[test]
    fn ns_mx_and_srv_sets_carry_their_in_zone_targets_addresses_once() {
        let zone = zone();
        let Lookup::Found(mx) = zone.lookup(&name("llm.example.com."), RecordType::MX) else {
            panic!("MX");
        };
        let additional = mx.additional().expect("mail is in the zone");
        let types: Vec<_> = additional
            .addresses
            .iter()
            .map(RRset::record_type)
            .collect();
        assert_eq!(
            types,
            [Some(RecordType::A), Some(RecordType::AAAA)],
            "mail once, not twice"
        );
        let Lookup::Found(ns) = zone.lookup(&name("llm.example.com."), RecordType::NS) else {
            panic!("NS");
        };
        assert_eq!(ns.additional().expect("ns1").addresses.len(), 1);
        let srv = name("_https._tcp.api.llm.example.com.");
        let Lookup::Found(srv) = zone.lookup(&srv, RecordType::SRV) else {
            panic!("SRV");
        };
        let additional = srv.additional().expect("api is a service");
        assert_eq!(additional.services, [0]);
        assert!(additional.addresses.is_empty());
        let Lookup::Found(txt) = zone.lookup(&name("llm.example.com."), RecordType::TXT) else {
            panic!("TXT");
        };
        assert!(txt.additional().is_none());
    }

    #[test]
    fn names_at_and_below_a_cut_are_referred_with_glue() {
        let zone = zone();
        for qname in [
            "sub.llm.example.com.",
            "x.y.sub.llm.example.com.",
            "ns.sub.llm.example.com.",
        ] {
            match zone.lookup(&name(qname), RecordType::A) {
                Lookup::Referral(d) => {
                    assert_eq!(d.ns.records().len(), 2);
                    assert_eq!(d.glue.len(), 1, "glue for ns.sub only");
                }
                other => panic!("{qname}: expected a referral, got {other:?}"),
            }
        }
        assert!(matches!(
            zone.lookup(&name("sub.llm.example.com."), RecordType::DS),
            Lookup::NoData
        ));
    }
}
