//! A transferred zone signed as a secondary serves it: every authoritative RRset with its RRSIG
//! and a full NSEC chain (RFC 4034 4, 4035 2.3), since a secondary cannot make the compact
//! denials the primary makes online. A pure function of the content and the signer; the key
//! material and the signature lifetimes are the [`crate::dnssec`] module's.

use std::collections::{BTreeMap, HashMap};

use hickory_proto::{
    dnssec::rdata::{DNSSECRData, NSEC},
    rr::{Name, RData, Record, RecordType},
};

use crate::dnssec::RrsetSigner;

/// `records` (the SOA first, no signatures) with an NSEC at every authoritative name and an
/// RRSIG over every authoritative RRset, the SOA still first. Names below a zone cut (glue) are
/// neither chained nor signed; at a cut only the DS and the NSEC are signed (RFC 4035 2.2).
/// NSEC records carry `nsec_ttl`, the negative answers' TTL (RFC 9077).
///
/// A set that is in `earlier` (the content signed before) as it is now keeps the signature it
/// had there, when `signer`'s key made it: a change re-signs only what it changed, so that an
/// IXFR carries the change and not every signature of the zone.
pub fn signed(
    records: Vec<Record>,
    signer: &RrsetSigner,
    nsec_ttl: u32,
    earlier: &[Record],
) -> Vec<Record> {
    let earlier = Signatures::from_earlier(earlier, signer);
    let Some(apex) = records.first().map(|soa| soa.name.clone()) else {
        return records;
    };
    let mut names: BTreeMap<Name, BTreeMap<RecordType, Vec<Record>>> = BTreeMap::new();
    for record in records {
        let sets = names.entry(record.name.to_lowercase()).or_default();
        sets.entry(record.record_type()).or_default().push(record);
    }
    let cuts: Vec<Name> = names
        .iter()
        .filter(|(name, sets)| **name != apex && sets.contains_key(&RecordType::NS))
        .map(|(name, _)| name.clone())
        .collect();
    let below_cut = |name: &Name| cuts.iter().any(|cut| cut != name && cut.zone_of(name));
    let owners: Vec<Name> = names.keys().filter(|n| !below_cut(n)).cloned().collect();
    for (at, owner) in owners.iter().enumerate() {
        let next = owners.get(at + 1).unwrap_or(&apex).clone();
        let sets = names.entry(owner.clone()).or_default();
        let at_cut = cuts.contains(owner);
        let types: Vec<RecordType> = sets
            .keys()
            .copied()
            .filter(|t| !at_cut || matches!(t, RecordType::NS | RecordType::DS))
            .collect();
        let nsec = NSEC::new_cover_self(next, types);
        let record = Record::from_rdata(owner.clone(), nsec_ttl, nsec_rdata(nsec));
        sets.insert(RecordType::NSEC, vec![record]);
    }
    let mut out: Vec<Record> = Vec::new();
    for (name, sets) in names {
        let at_cut = cuts.contains(&name);
        let authoritative = !below_cut(&name);
        for (rtype, set) in sets {
            let signs =
                authoritative && (!at_cut || matches!(rtype, RecordType::DS | RecordType::NSEC));
            let signature = match signs {
                true => earlier
                    .kept(&name, rtype, &set)
                    .or_else(|| signer.sign(&set)),
                false => None,
            };
            let owner_ttl = set.first().map(|r| (r.name.clone(), r.ttl));
            match rtype == RecordType::SOA {
                true => set.into_iter().rev().for_each(|r| out.insert(0, r)),
                false => out.extend(set),
            }
            if let (Some(rrsig), Some((owner, ttl))) = (signature, owner_ttl) {
                out.push(Record::from_rdata(owner, ttl, rrsig));
            }
        }
    }
    out
}

/// The signatures of content signed before, by the set they cover.
struct Signatures<'a> {
    sets: HashMap<(Name, RecordType), Signed<'a>>,
}

/// A set as it was, and its signature by the key that signs now, if it had one.
#[derive(Default)]
struct Signed<'a> {
    records: Vec<&'a Record>,
    signature: Option<&'a RData>,
}

impl<'a> Signatures<'a> {
    /// The sets of `earlier` and their signatures by `signer`'s key.
    fn from_earlier(earlier: &'a [Record], signer: &RrsetSigner) -> Signatures<'a> {
        let mut sets: HashMap<_, Signed<'_>> = HashMap::new();
        for record in earlier {
            let name = record.name.to_lowercase();
            match &record.data {
                RData::DNSSEC(DNSSECRData::RRSIG(sig)) => {
                    let input = sig.input();
                    if input.key_tag == signer.key_tag() && input.algorithm == signer.algorithm() {
                        let set = sets.entry((name, input.type_covered)).or_default();
                        set.signature = Some(&record.data);
                    }
                }
                _ => sets
                    .entry((name, record.record_type()))
                    .or_default()
                    .records
                    .push(record),
            }
        }
        Signatures { sets }
    }

    /// The signature `set` had, if it was there, the same, and signed.
    fn kept(&self, name: &Name, rtype: RecordType, set: &[Record]) -> Option<RData> {
        let before = self.sets.get(&(name.clone(), rtype))?;
        let same = |r: &Record| {
            before
                .records
                .iter()
                .any(|b| b.ttl == r.ttl && b.data == r.data)
        };
        let unchanged = before.records.len() == set.len() && set.iter().all(same);
        before.signature.filter(|_| unchanged).cloned()
    }
}

fn nsec_rdata(nsec: NSEC) -> RData {
    RData::DNSSEC(DNSSECRData::NSEC(nsec))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use hickory_proto::{
        dnssec::{Verifier, rdata::RRSIG},
        rr::{
            DNSClass,
            rdata::{A, NS},
        },
    };

    use super::*;
    use crate::{
        dnssec::{KeyAlgorithm, generate},
        test_records::{a, name, soa},
    };

    fn zone() -> Vec<Record> {
        let ns = |owner: &str, target: &str| {
            Record::from_rdata(name(owner), 3600, RData::NS(NS(name(target))))
        };
        vec![
            soa(7),
            ns("example.", "ns1.example."),
            a("ns1.example.", 1),
            a("api.example.", 2),
            a("api.example.", 3),
            ns("child.example.", "ns.child.example."),
            a("ns.child.example.", 4),
            a("b.api.example.", 5),
        ]
    }

    fn signed_zone() -> (Vec<Record>, RrsetSigner) {
        let dir = tempfile::tempdir().expect("a directory");
        let key = generate(KeyAlgorithm::EcdsaP256, &dir.path().join("k.pem")).expect("a key");
        let validity = Duration::from_secs(86_400);
        let signer = RrsetSigner::new(
            &Arc::new(key),
            &[],
            &name("example."),
            SystemTime::now(),
            validity,
        );
        let mut records = zone();
        records.extend(signer.dnskey_records(3600));
        (signed(records, &signer, 30, &[]), signer)
    }

    fn signatures(records: &[Record]) -> Vec<(String, RecordType, RData)> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::RRSIG(sig)) => {
                    Some((r.name.to_string(), sig.input().type_covered, r.data.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_change_re_signs_only_the_sets_it_changed_and_another_key_re_signs_all() {
        let (before, signer) = signed_zone();
        let mut changed: Vec<Record> = before
            .iter()
            .filter(|r| !matches!(r.record_type(), RecordType::RRSIG | RecordType::NSEC))
            .cloned()
            .collect();
        changed.retain(|r| {
            !(r.name == name("api.example.") && r.data == RData::A(A::new(192, 0, 2, 3)))
        });
        let later = signer.renewed(SystemTime::now() + Duration::from_secs(60));
        let after = signed(changed.clone(), &later, 30, &before);
        let old = signatures(&before);
        let new = signatures(&after);
        assert_eq!(old.len(), new.len());
        let remade: Vec<(&str, RecordType)> = new
            .iter()
            .filter(|sig| !old.contains(sig))
            .map(|(n, t, _)| (n.as_str(), *t))
            .collect();
        assert_eq!(remade, [("api.example.", RecordType::A)]);

        let dir = tempfile::tempdir().expect("a directory");
        let key = generate(KeyAlgorithm::EcdsaP256, &dir.path().join("k.pem")).expect("a key");
        let validity = Duration::from_secs(86_400);
        let other = RrsetSigner::new(
            &Arc::new(key),
            &[],
            &name("example."),
            SystemTime::now(),
            validity,
        );
        let rolled = signatures(&signed(changed, &other, 30, &before));
        assert!(
            rolled.iter().all(|sig| !old.contains(sig)),
            "a new key signs everything anew"
        );
    }

    fn nsecs(records: &[Record]) -> Vec<(Name, &NSEC)> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::NSEC(nsec)) => Some((r.name.clone(), nsec)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_nsec_chain_runs_through_every_authoritative_name_in_canonical_order() {
        let (records, _) = signed_zone();
        assert_eq!(records[0].record_type(), RecordType::SOA, "the SOA leads");
        let chain = nsecs(&records);
        let owners: Vec<String> = chain.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            owners,
            [
                "example.",
                "api.example.",
                "b.api.example.",
                "child.example.",
                "ns1.example."
            ]
        );
        for (at, (_, nsec)) in chain.iter().enumerate() {
            let next = chain
                .get(at + 1)
                .map_or(name("example."), |(n, _)| n.clone());
            assert_eq!(nsec.next_domain_name(), &next);
        }
        let types = |owner: &str| {
            let (_, nsec) = chain
                .iter()
                .find(|(n, _)| *n == name(owner))
                .expect("an NSEC");
            let mut types: Vec<RecordType> = nsec.type_bit_maps().collect();
            types.sort();
            types
        };
        use RecordType::*;
        assert_eq!(
            types("child.example."),
            [NS, RRSIG, NSEC],
            "a cut lists only NS"
        );
        assert_eq!(types("example."), [NS, SOA, RRSIG, NSEC, DNSKEY]);
        assert_eq!(types("api.example."), [A, RRSIG, NSEC]);
    }

    #[test]
    fn every_authoritative_set_is_signed_and_glue_and_cut_ns_are_not() {
        let (records, signer) = signed_zone();
        let dnskey = signer.dnskey_records(3600).remove(0);
        let RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)) = dnskey.data else {
            panic!("a DNSKEY")
        };
        let rrsigs: Vec<(&Name, &RRSIG)> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::RRSIG(sig)) => Some((&r.name, sig)),
                _ => None,
            })
            .collect();
        let mut covered: Vec<(String, RecordType)> = Vec::new();
        for (owner, sig) in &rrsigs {
            let set = records
                .iter()
                .filter(|r| &r.name == *owner && r.record_type() == sig.input().type_covered);
            dnskey
                .verify_rrsig(owner, DNSClass::IN, sig, set)
                .expect("a signature that verifies");
            covered.push((owner.to_string(), sig.input().type_covered));
        }
        let sets = records
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| (r.name.to_string(), r.record_type()))
            .collect::<std::collections::BTreeSet<_>>();
        let unsigned: Vec<_> = sets.iter().filter(|s| !covered.contains(s)).collect();
        assert_eq!(
            unsigned,
            [
                &("child.example.".to_string(), RecordType::NS),
                &("ns.child.example.".to_string(), RecordType::A)
            ]
        );
    }
}
