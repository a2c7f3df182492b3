//! What goes out under one serial of a transferred zone: its records with the SOA at that
//! serial (signed, with the NSEC chain, for a signed zone), the SOAs its answers carry, and the
//! journal of differences from the serials before it that an IXFR sends. Pure functions of the
//! content before and now; when a serial is given out is [`super::serials`]' to decide.

use std::{sync::Arc, time::SystemTime};

use hickory_proto::rr::{RData, Record, RecordType};

use crate::{
    dnssec::RrsetSigner,
    routing::{Delta, Transferred, ZoneRoutes},
    transfer::signed,
    zone::RRset,
};

/// Differences kept per zone, for IXFR: a secondary further behind gets the whole zone.
const JOURNAL_KEPT: usize = 16;

/// The content with its SOA at `serial` (signed, with its NSEC chain, when the zone is: sets
/// unchanged since `earlier` keep their signatures), and the journal from `previous` (the
/// content that went out under the last serial, if any) to it.
pub(super) fn frozen(
    zone: &ZoneRoutes,
    mut records: Vec<Record>,
    serial: u32,
    previous: Option<&Transferred>,
    earlier: &[Record],
) -> Arc<Transferred> {
    if let Some(soa) = records.first_mut() {
        set_serial(soa, serial);
    }
    let signing = zone.data.signing();
    let signer = signing.map(|(signer, _)| signer.renewed(SystemTime::now()));
    if let (Some(signer), Some((_, nsec_ttl))) = (&signer, signing) {
        records = signed::signed(records, signer, nsec_ttl, earlier);
    }
    let journal = previous
        .filter(|p| p.serial != serial)
        .map(|p| {
            let mut journal: Vec<Delta> = p.journal.clone();
            journal.push(delta(p, &records, serial));
            let drop = journal.len().saturating_sub(JOURNAL_KEPT);
            journal.drain(..drop);
            journal
        })
        .unwrap_or_default();
    let (soa, negative_soa) = answer_soas(zone, serial, signer.as_ref());
    Arc::new(Transferred {
        serial,
        soa,
        negative_soa,
        records,
        journal,
    })
}

/// The SOA of the zone's answers and of its negative answers, at `serial` (signed by `signer`).
pub(super) fn answer_soas(
    zone: &ZoneRoutes,
    serial: u32,
    signer: Option<&RrsetSigner>,
) -> (RRset, RRset) {
    let with_serial = |rrset: &RRset| {
        let mut records = rrset.records();
        records.iter_mut().for_each(|r| set_serial(r, serial));
        RRset::signed(records, signer)
    };
    (
        with_serial(zone.data.soa()),
        with_serial(zone.data.negative_soa()),
    )
}

/// What changed from `previous` to `records` (SOA records left out: the IXFR frames them).
fn delta(previous: &Transferred, records: &[Record], serial: u32) -> Delta {
    let key = |r: &Record| {
        (
            r.name.to_lowercase(),
            r.record_type(),
            r.ttl,
            r.data.clone(),
        )
    };
    let not_soa = |r: &&Record| r.record_type() != RecordType::SOA;
    let old: std::collections::HashSet<_> =
        previous.records.iter().filter(not_soa).map(key).collect();
    let new: std::collections::HashSet<_> = records.iter().filter(not_soa).map(key).collect();
    Delta {
        from: previous.serial,
        to: serial,
        removed: previous
            .records
            .iter()
            .filter(not_soa)
            .filter(|r| !new.contains(&key(r)))
            .cloned()
            .collect(),
        added: records
            .iter()
            .filter(not_soa)
            .filter(|r| !old.contains(&key(r)))
            .cloned()
            .collect(),
    }
}

pub(super) fn set_serial(record: &mut Record, serial: u32) {
    if let RData::SOA(soa) = &mut record.data {
        soa.serial = serial;
    }
}
