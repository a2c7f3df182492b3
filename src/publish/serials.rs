//! The SOA serials of transferred zones. A serial grows whenever what a secondary would receive
//! changes (a zone file edit, a service's fallback following health or a drain), at most once
//! per `--transfer-min-interval` so that a flapping region cannot storm the secondaries; it is
//! never below the zone file's serial (a floor) and it is kept across restarts in
//! `--state-dir`. The content goes out frozen with its serial ([`super::frozen`]), and its
//! journal is kept there too ([`super::journal`]). Decisions are a pure function ([`decide`]);
//! the book only remembers and stores them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::{RData, Record};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    frozen::{answer_soas, frozen, set_serial},
    journal::{self, Journal},
};
use crate::{
    routing::{RoutingTable, Transferred, ZoneRoutes},
    transfer::{content, serial_lt},
    zone::{RRset, ZoneData},
};

/// A serials file larger than this is not one we wrote (a few dozen bytes per zone).
const MAX_STORED: usize = 1 << 20;

/// What is kept of a zone across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub serial: u32,
    /// Of the content, the SOA's serial left out.
    pub digest: u64,
}

/// A transferred zone's signatures are made again when they are this part of their validity
/// old: well before their half-life, so that a secondary cut off from us keeps serving valid
/// signatures for most of their validity.
const RESIGN_AT: u32 = 4;

/// What to do with a zone's serial now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Give the content out under this serial.
    Bump(u32),
    /// The content changed too soon after the last bump: look again then.
    Defer(Instant),
}

/// The serial for content of `digest`, given what went out last (`current`, bumped at
/// `bumped_at` if in this run), the zone file's `floor`, and the least time between bumps.
/// `resign` says the content's signatures are due to be made again: a new serial, at once.
pub fn decide(
    current: Option<Stored>,
    digest: u64,
    floor: u32,
    bumped_at: Option<Instant>,
    now: Instant,
    min_interval: Duration,
    resign: bool,
) -> Decision {
    let Some(current) = current else {
        return Decision::Bump(floor);
    };
    if current.digest == digest && !resign {
        return match serial_lt(current.serial, floor) {
            true => Decision::Bump(floor),
            false => Decision::Keep,
        };
    }
    if let Some(at) = bumped_at
        && now < at + min_interval
        && !resign
    {
        return Decision::Defer(at + min_interval);
    }
    let next = current.serial.wrapping_add(1);
    Decision::Bump(if serial_lt(next, floor) { floor } else { next })
}

/// A zone's last serial and the content that went out under it.
struct Entry {
    stored: Stored,
    bumped_at: Option<Instant>,
    /// When the oldest signatures of a signed zone's content were made.
    signed_at: Option<SystemTime>,
    transferred: Arc<Transferred>,
}

/// A zone file's records and their digests, kept while the zone's data is the same: a health
/// change then only remakes the services' fallbacks.
struct StaticPart {
    data: Arc<ZoneData>,
    records: Vec<Record>,
    digests: Vec<u64>,
}

/// What a settling of the serials asks of the publisher.
#[derive(Debug, Default)]
pub struct Settled {
    /// Zones whose serial grew: tell their secondaries.
    pub bumped: Vec<(String, u32)>,
    /// When a deferred change or a re-signing is due.
    pub recheck: Option<Instant>,
}

impl Settled {
    /// Asks to settle again by `due`, or earlier if another zone needs it.
    fn recheck_by(&mut self, due: Instant) {
        self.recheck = Some(self.recheck.map_or(due, |r| r.min(due)));
    }
}

/// The serials of every transferred zone, by origin.
pub struct SerialBook {
    zones: BTreeMap<String, Entry>,
    statics: BTreeMap<String, StaticPart>,
    /// Serials read from the state directory at start, not yet given to a zone.
    stored: BTreeMap<String, Stored>,
    min_interval: Duration,
    file: Option<PathBuf>,
    /// Where each zone's IXFR journal is kept, when it is.
    state_dir: Option<PathBuf>,
}

impl SerialBook {
    /// Reads what `state_dir` kept (a missing or unreadable file starts afresh, said in the log).
    pub fn new(state_dir: Option<PathBuf>, min_interval: Duration) -> SerialBook {
        let file = state_dir.as_ref().map(|dir| dir.join("serials.json"));
        let stored = file
            .as_ref()
            .map_or_else(BTreeMap::new, |path| match std::fs::read(path) {
                Ok(bytes) if bytes.len() > MAX_STORED => {
                    warn!(
                        "{}: {} bytes, over {MAX_STORED}: not read; serials start from the zone files",
                        path.display(),
                        bytes.len()
                    );
                    BTreeMap::new()
                }
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    warn!(
                        "{}: unreadable ({e}); serials start from the zone files",
                        path.display()
                    );
                    BTreeMap::new()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => {
                    warn!("{}: {e}; serials start from the zone files", path.display());
                    BTreeMap::new()
                }
            });
        SerialBook {
            zones: BTreeMap::new(),
            statics: BTreeMap::new(),
            stored,
            min_interval,
            file,
            state_dir,
        }
    }

    /// Gives every transferred zone of `table` its serial and frozen content.
    pub fn settle(&mut self, table: RoutingTable, now: Instant) -> (RoutingTable, Settled) {
        let mut settled = Settled::default();
        let table = table.with_transfers(|zone| {
            zone.transfer.as_ref()?;
            Some(self.settle_zone(zone, now, &mut settled))
        });
        let transferred: Vec<String> = table
            .zones()
            .iter()
            .filter(|z| z.transfer.is_some())
            .map(|z| z.data.origin_name().to_string())
            .collect();
        self.zones.retain(|origin, _| transferred.contains(origin));
        self.statics
            .retain(|origin, _| transferred.contains(origin));
        if !settled.bumped.is_empty() {
            self.save();
        }
        (table, settled)
    }

    fn settle_zone(
        &mut self,
        zone: &ZoneRoutes,
        now: Instant,
        settled: &mut Settled,
    ) -> Arc<Transferred> {
        let origin = zone.data.origin_name().to_string();
        let (fallbacks, digest) = self.content(&origin, zone);
        let floor = serial_of(zone.data.soa()).unwrap_or(1);
        if !self.zones.contains_key(&origin)
            && let Some(kept) = self.stored.get(&origin).copied()
            && let Some(entry) = self.journal_entry(zone, kept)
        {
            self.zones.insert(origin.clone(), entry);
        }
        let entry = self.zones.get(&origin);
        let current = entry
            .map(|e| e.stored)
            .or_else(|| self.stored.get(&origin).copied());
        let bumped_at = entry.and_then(|e| e.bumped_at);
        let wall = SystemTime::now();
        let signed_at = entry.and_then(|e| e.signed_at);
        let validity = zone.data.signing().map(|(signer, _)| signer.validity());
        let resign_at = signed_at.zip(validity).map(|(at, v)| at + v / RESIGN_AT);
        let resign = resign_at.is_some_and(|at| wall >= at);
        let decision = decide(
            current,
            digest,
            floor,
            bumped_at,
            now,
            self.min_interval,
            resign,
        );
        // The monotonic instant of a wall-clock time (now, if it is past).
        let instant_of = |at: SystemTime| now + at.duration_since(wall).unwrap_or_default();
        if let Some(at) = resign_at.filter(|_| !resign) {
            settled.recheck_by(instant_of(at));
        }
        // What went out stays, unless there is something new to give out.
        let kept = entry.map(|e| Arc::clone(&e.transferred));
        let (serial, bumped) = match (decision, kept) {
            (Decision::Keep, Some(kept)) => return kept,
            (Decision::Defer(due), kept) => {
                settled.recheck_by(due);
                match kept {
                    Some(kept) => return kept,
                    None => (floor, false),
                }
            }
            (Decision::Keep, None) => (current.map_or(floor, |c| c.serial), false),
            (Decision::Bump(serial), _) => (serial, true),
        };
        let records = self.full(&origin, fallbacks);
        let previous = entry.map(|e| Arc::clone(&e.transferred));
        // Signatures made before are kept for what did not change, until they are due.
        let earlier = previous
            .as_ref()
            .filter(|_| !resign && signed_at.is_some())
            .map_or(&[][..], |p| &p.records[..]);
        let transferred = frozen(zone, records, serial, previous.as_deref(), earlier);
        let signed_at = validity.map(|validity| {
            let at = signed_at.filter(|_| !earlier.is_empty()).unwrap_or(wall);
            settled.recheck_by(instant_of(at + validity / RESIGN_AT));
            at
        });
        self.keep_journal(zone, &transferred, signed_at);
        let entry = Entry {
            stored: Stored { serial, digest },
            bumped_at: bumped.then_some(now),
            signed_at,
            transferred: Arc::clone(&transferred),
        };
        self.zones.insert(origin.clone(), entry);
        if bumped {
            info!("zone {origin}: serial {serial} for secondaries");
            settled.bumped.push((origin, serial));
        }
        transferred
    }

    /// What the journal in the state directory says went out under `kept` (the serial
    /// `serials.json` gave), as the zone's entry: a secondary that holds it is current, and
    /// one behind it gets an IXFR. `None` (the reason logged) when there is none that holds.
    fn journal_entry(&self, zone: &ZoneRoutes, kept: Stored) -> Option<Entry> {
        let origin = zone.data.origin_name();
        let path = journal::path(self.state_dir.as_deref()?, origin);
        let read = journal::read(&path).and_then(|bytes| {
            bytes
                .map(|bytes| journal::decode(&bytes, origin, kept.serial))
                .transpose()
        });
        let journal = match read {
            Ok(journal) => journal?,
            Err(e) => {
                warn!(
                    "{}: {e}: not used; a secondary behind serial {} gets the whole zone",
                    path.display(),
                    kept.serial
                );
                return None;
            }
        };
        let signer = zone.data.signing().map(|(signer, _)| signer);
        // Content signed at an unknown time is signed again at once.
        let signed_at = signer.map(|_| journal.signed_at.unwrap_or(UNIX_EPOCH));
        let (soa, negative_soa) = answer_soas(zone, kept.serial, signer);
        let transferred = Transferred {
            serial: kept.serial,
            records: journal.records,
            soa,
            negative_soa,
            journal: journal.deltas,
        };
        Some(Entry {
            stored: kept,
            bumped_at: None,
            signed_at,
            transferred: Arc::new(transferred),
        })
    }

    /// Writes what went out under a new serial, and the journal to it, to the state directory.
    fn keep_journal(
        &self,
        zone: &ZoneRoutes,
        transferred: &Transferred,
        signed_at: Option<SystemTime>,
    ) {
        let Some(dir) = &self.state_dir else {
            return;
        };
        let origin = zone.data.origin_name();
        let path = journal::path(dir, origin);
        let kept = Journal {
            serial: transferred.serial,
            records: transferred.records.clone(),
            deltas: transferred.journal.clone(),
            signed_at,
        };
        let written = journal::encode(origin, &kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| journal::write(&path, &bytes));
        if let Err(e) = written {
            warn!(
                "{}: {e}: after a restart, secondaries get the whole zone",
                path.display()
            );
        }
    }

    /// The zone file's records (kept since [`SerialBook::content`]) and `fallbacks`.
    fn full(&self, origin: &str, fallbacks: Vec<Record>) -> Vec<Record> {
        let mut records = self
            .statics
            .get(origin)
            .map(|part| part.records.clone())
            .unwrap_or_default();
        records.extend(fallbacks);
        records
    }

    /// The services' fallbacks and the digest of all a secondary would receive; the zone
    /// file's part (records and digests) is remade only when its data changed.
    fn content(&mut self, origin: &str, zone: &ZoneRoutes) -> (Vec<Record>, u64) {
        let kept = self
            .statics
            .get(origin)
            .filter(|part| Arc::ptr_eq(&part.data, &zone.data));
        if kept.is_none() {
            let records = content::static_records(&zone.data);
            let digests = records.iter().map(record_digest).collect();
            let part = StaticPart {
                data: Arc::clone(&zone.data),
                records,
                digests,
            };
            self.statics.insert(origin.to_owned(), part);
        }
        let fallbacks = content::fallbacks(zone);
        let mut digests = self
            .statics
            .get(origin)
            .map(|part| part.digests.clone())
            .unwrap_or_default();
        digests.extend(fallbacks.iter().map(record_digest));
        (fallbacks, combined(digests))
    }

    /// Writes every zone's serial (beside, then renamed over: never half a file).
    fn save(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let mut all = self.stored.clone();
        all.extend(
            self.zones
                .iter()
                .map(|(origin, e)| (origin.clone(), e.stored)),
        );
        let beside = path.with_extension("json.new");
        let written = serde_json::to_vec_pretty(&all)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&beside, bytes))
            .and_then(|()| std::fs::rename(&beside, path));
        if let Err(e) = written {
            warn!(
                "{}: {e}: serials are not kept across a restart",
                path.display()
            );
        }
    }
}

fn serial_of(rrset: &RRset) -> Option<u32> {
    rrset.records().first().and_then(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// A hash of `records` as they go out, in any order (a zone's names are kept in no fixed
/// order), the SOA's serial left out (it is what the digest decides).
#[cfg(test)]
fn digest(records: &[Record]) -> u64 {
    combined(records.iter().map(record_digest).collect())
}

/// One record's part of the digest, the SOA's serial left out.
fn record_digest(record: &Record) -> u64 {
    let mut record = record.clone();
    set_serial(&mut record, 0);
    let text = format!(
        "{} {} {} {}",
        record.name.to_lowercase(),
        record.record_type(),
        record.ttl,
        record.data
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// The records' digests as one, whatever their order.
fn combined(mut each: Vec<u64>) -> u64 {
    each.sort_unstable();
    let bytes: Vec<u8> = each.iter().flat_map(|h| h.to_be_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(5);

    #[test]
    fn a_change_bumps_the_serial_at_most_once_per_interval() {
        let t0 = Instant::now();
        let current = Some(Stored {
            serial: 10,
            digest: 1,
        });
        assert_eq!(
            decide(current, 1, 5, Some(t0), t0, MIN, false),
            Decision::Keep
        );
        assert_eq!(
            decide(current, 2, 5, None, t0, MIN, false),
            Decision::Bump(11)
        );
        let soon = t0 + Duration::from_secs(2);
        assert_eq!(
            decide(current, 2, 5, Some(t0), soon, MIN, false),
            Decision::Defer(t0 + MIN)
        );
        assert_eq!(
            decide(current, 2, 5, Some(t0), t0 + MIN, MIN, false),
            Decision::Bump(11)
        );
    }

    #[test]
    fn signatures_due_again_bump_the_serial_at_once() {
        let t0 = Instant::now();
        let current = Some(Stored {
            serial: 10,
            digest: 1,
        });
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            decide(current, 1, 5, Some(t0), soon, MIN, true),
            Decision::Bump(11)
        );
        assert_eq!(
            decide(current, 1, 5, Some(t0), soon, MIN, false),
            Decision::Keep
        );
    }

    /// The plan of a signed, transferred zone (no services: no GeoIP walk), its key made in
    /// `dir`.
    fn signed_plan(dir: &std::path::Path) -> crate::routing::Plan {
        let key = dir.join("k.pem");
        crate::dnssec::generate(crate::dnssec::KeyAlgorithm::EcdsaP256, &key).expect("a key");
        let text = "origin: example.\nsoa: { primary: ns1.example., contact: h.example., serial: 5 }\n\
                    ns: [ns1.example.]\nrecords:\n  ns1: { A: [192.0.2.1] }\n  www: { A: [192.0.2.2] }\n\
                    transfer: { to: [127.0.0.0/8] }\ndnssec: { key: k.pem, validity: 4h, refresh: 2h }\n";
        let zone = crate::config::parse(&dir.join("t.yaml"), text, 1).expect("a zone");
        let country = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/dbip-country.mmdb");
        let geo = crate::geo::GeoIp::open(&[country.into()]).expect("the bundled GeoIP file");
        let metrics = crate::metrics::Metrics::new();
        crate::routing::Plan::new(&[zone], &metrics, &geo, None).expect("a plan")
    }

    /// A table of `plan`, as the publisher builds one after every probe.
    fn table(plan: &crate::routing::Plan) -> RoutingTable {
        RoutingTable::build(plan, &Default::default(), &Default::default())
    }

    fn signatures(transferred: &Transferred) -> Vec<RData> {
        let rrsig = |r: &&Record| r.record_type() == hickory_proto::rr::RecordType::RRSIG;
        transferred
            .records
            .iter()
            .filter(rrsig)
            .map(|r| r.data.clone())
            .collect()
    }

    #[test]
    fn signatures_are_made_again_with_a_new_serial_when_a_quarter_of_their_validity_is_gone() {
        let dir = tempfile::tempdir().expect("a directory");
        let plan = signed_plan(dir.path());
        let mut book = SerialBook::new(None, MIN);
        let t0 = Instant::now();
        let (first, settled) = book.settle(table(&plan), t0);
        assert_eq!(settled.bumped, [("example.".to_string(), 5)]);
        let due = settled
            .recheck
            .expect("a look again when signatures are due");
        let hour = Duration::from_secs(3600);
        assert!(
            due > t0 + hour - MIN && due <= t0 + hour,
            "a quarter of 4h: {due:?}"
        );
        let signed = Arc::clone(first.zones()[0].transferred.as_ref().expect("transferred"));
        assert!(!signatures(&signed).is_empty());

        // Nothing changed and nothing due: the same content, the same serial.
        let (again, settled) = book.settle(table(&plan), t0 + MIN);
        assert!(settled.bumped.is_empty());
        let kept = again.zones()[0].transferred.as_ref().expect("transferred");
        assert!(Arc::ptr_eq(kept, &signed));

        // An hour on (as if): every signature made again, under a new serial.
        if let Some(entry) = book.zones.get_mut("example.") {
            entry.signed_at = entry.signed_at.map(|at| at - hour);
        }
        let (resigned, settled) = book.settle(table(&plan), t0 + 2 * MIN);
        assert_eq!(settled.bumped, [("example.".to_string(), 6)]);
        let renewed = resigned.zones()[0]
            .transferred
            .as_ref()
            .expect("transferred");
        let (old, new) = (signatures(&signed), signatures(renewed));
        assert_eq!(old.len(), new.len());
        assert!(new.iter().all(|sig| !old.contains(sig)), "all signed anew");
    }

    #[test]
    fn the_digest_is_of_the_records_not_their_order_nor_the_serial() {
        let a = |last| crate::test_records::a("www.example.", last);
        let soa = crate::test_records::soa;
        let one = digest(&[soa(1), a(1), a(2)]);
        assert_eq!(one, digest(&[soa(7), a(2), a(1)]));
        assert_ne!(one, digest(&[soa(1), a(1), a(3)]));
    }

    #[test]
    fn the_zone_files_serial_is_a_floor_and_serials_wrap() {
        let t0 = Instant::now();
        assert_eq!(
            decide(None, 1, 2026, None, t0, MIN, false),
            Decision::Bump(2026)
        );
        let low = Some(Stored {
            serial: 10,
            digest: 1,
        });
        assert_eq!(
            decide(low, 1, 2026, None, t0, MIN, false),
            Decision::Bump(2026)
        );
        assert_eq!(
            decide(low, 2, 2026, None, t0, MIN, false),
            Decision::Bump(2026)
        );
        let high = Some(Stored {
            serial: 3000,
            digest: 1,
        });
        assert_eq!(decide(high, 1, 2026, None, t0, MIN, false), Decision::Keep);
        let last = Some(Stored {
            serial: u32::MAX,
            digest: 1,
        });
        assert_eq!(decide(last, 2, 5, None, t0, MIN, false), Decision::Bump(5));
        assert!(serial_lt(u32::MAX, 0) && !serial_lt(0, u32::MAX));
    }
}
