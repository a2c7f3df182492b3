//! What a secondary receives of a zone: its static records as they are, and for each service
//! the declared fallback (`secondary: all`, a region, or nothing), from one routing snapshot.
//! A pure function of that snapshot; it sends nothing.

use hickory_proto::rr::{Record, RecordType};

use crate::{
    config::Secondary,
    region::State,
    routing::{ServiceRoutes, ZoneRoutes},
    zone::ZoneData,
};

/// The zone's records for a transfer: the SOA first (and not again: the transfer adds the
/// closing copy), then every other static record, then the services' fallbacks.
pub fn zone_records(zone: &ZoneRoutes) -> Vec<Record> {
    let mut records = static_records(&zone.data);
    records.extend(fallbacks(zone));
    records
}

/// The records of the zone file: the SOA first, then every other one. They change only with
/// the file, so a caller may keep them for as long as it holds the same `data`.
pub fn static_records(data: &ZoneData) -> Vec<Record> {
    let mut records = data.soa().records();
    for rrset in data.rrsets() {
        if rrset.record_type() != Some(RecordType::SOA) {
            records.extend(rrset.records());
        }
    }
    records
}

/// Every service's fallback, in the zone's order.
pub fn fallbacks(zone: &ZoneRoutes) -> Vec<Record> {
    zone.services().iter().flat_map(fallback).collect()
}

/// A service's records at a secondary, by its `secondary` setting: every region that is up or
/// degraded (all of them when none is, as an answer in fail-open mode would), one region's, or
/// none. Each address once, A before AAAA.
pub fn fallback(service: &ServiceRoutes) -> Vec<Record> {
    let regions: Vec<usize> = match service.plan.secondary {
        Secondary::Omit => return Vec::new(),
        Secondary::Region(at) => vec![at],
        Secondary::All => {
            let up = |s: &State| matches!(s, State::Up | State::Degraded);
            let serving: Vec<usize> = (0..service.states.len())
                .filter(|&i| service.states.get(i).is_some_and(up))
                .collect();
            match serving.is_empty() {
                true => (0..service.plan.regions.len()).collect(),
                false => serving,
            }
        }
    };
    let mut records: Vec<Record> = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        for region in regions.iter().filter_map(|&r| service.plan.regions.get(r)) {
            for record in region.records(qtype).records() {
                if !records.iter().any(|r| r.data == record.data) {
                    records.push(record);
                }
            }
        }
    }
    records
}
