//! The drain ledger: the last drain record of every region and the hybrid logical clock that
//! orders them. Pure: it does no I/O (the publisher saves what it says changed) and reads time
//! only through the clock it was given, so its rules are tested with clocks set wrong:
//! - a record stamped more than [`MAX_CLOCK_DRIFT`] ahead of this clock is refused, never
//!   merged: merged, it would beat every drain written anywhere for as long as the skew lasts;
//! - every record merged moves the clock past it, so a drain taken here afterwards is newer;
//! - a drain taken here that is still older than the record kept (this clock went back since
//!   that record was written) is refused, naming the record that wins.

use std::{collections::BTreeSet, time::Duration};

use uhlc::{HLC, HLCBuilder, NTP64, Timestamp};

use super::{DrainRecord, Drains};
use crate::region::RegionKey;

/// How far a peer's clock may run ahead of ours. NTP keeps a fleet within milliseconds; a
/// minute allows a host that has just booted, and still bounds how long a record stamped ahead
/// can win.
pub const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(60);

/// How many refused records are remembered, so that the same record offered again at every
/// view is counted and logged once.
const REFUSED_REMEMBERED: usize = 1024;

/// What became of a record offered to the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Newer than the region's last: it applies from now on.
    Merged,
    /// The same record was kept already.
    Known,
    /// An older record: `kept` wins.
    Older { kept: DrainRecord },
    /// Not taken: it was stamped too far ahead of this clock.
    Refused(Refusal),
}

impl Taken {
    /// Whether the record is in force here now.
    pub fn in_force(&self) -> bool {
        matches!(self, Taken::Merged | Taken::Known)
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Stamped this far ahead of this instance's clock.
    ClockAhead(Duration),
    /// For a zone or region this instance does not serve.
    UnknownRegion,
}

impl Refusal {
    /// The label of `regiondns_fleet_refused_records_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ClockAhead(_) => "clock_ahead",
            Refusal::UnknownRegion => "unknown_region",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ClockAhead(by) => write!(
                f,
                "stamped {} ahead of this instance's clock (at most {} allowed)",
                humantime::format_duration(Duration::from_secs_f64(by.as_secs_f64().round())),
                humantime::format_duration(MAX_CLOCK_DRIFT)
            ),
            Refusal::UnknownRegion => f.write_str("no such zone or region here"),
        }
    }
}

/// The drain records and the clock that stamps and orders them.
pub struct DrainLedger {
    hlc: HLC,
    clock: fn() -> NTP64,
    drains: Drains,
    /// The timestamps of records refused lately.
    refused: BTreeSet<Timestamp>,
}

impl DrainLedger {
    /// An empty ledger reading time from `clock`.
    pub fn new(clock: fn() -> NTP64) -> DrainLedger {
        let hlc = HLCBuilder::new()
            .with_clock(clock)
            .with_max_delta(MAX_CLOCK_DRIFT)
            .build();
        DrainLedger {
            hlc,
            clock,
            drains: Drains::default(),
            refused: BTreeSet::new(),
        }
    }

    pub fn get(&self, key: &RegionKey) -> Option<&DrainRecord> {
        self.drains.get(key)
    }

    pub fn drains(&self) -> &Drains {
        &self.drains
    }

    /// Takes back the records this instance kept before a restart: each is the operator's
    /// word and is kept, even one stamped ahead of this clock (it went back since); those are
    /// returned, so that the caller can say so. A drain taken here is refused while such a
    /// record is newer ([`DrainLedger::stamp`]).
    pub fn restore(&mut self, records: Drains) -> Vec<(DrainRecord, Duration)> {
        let mut ahead = Vec::new();
        for record in records.records() {
            if self.hlc.update_with_timestamp(&record.at).is_err() {
                ahead.push((record.clone(), self.ahead_by(&record.at)));
            }
        }
        self.drains = records;
        ahead
    }

    /// A drain or undrain taken here by `by`: the new record, in force at once, or the kept
    /// record that is newer (this clock is behind the one that wrote it).
    pub fn stamp(
        &mut self,
        key: &RegionKey,
        drained: bool,
        by: &str,
    ) -> Result<DrainRecord, DrainRecord> {
        let record = DrainRecord {
            zone: key.zone.clone(),
            region: key.region.clone(),
            drained,
            at: self.hlc.new_timestamp(),
            by: by.to_owned(),
        };
        match self.drains.get(key) {
            Some(kept) if kept.at >= record.at => Err(kept.clone()),
            _ => {
                self.drains.merge(record.clone());
                Ok(record)
            }
        }
    }

    /// A record from a peer (pushed, or in its view).
    pub fn take(&mut self, record: DrainRecord) -> Taken {
        let kept = self.drains.get(&record.key());
        if kept.is_some_and(|kept| *kept == record) {
            return Taken::Known;
        }
        if self.hlc.update_with_timestamp(&record.at).is_err() {
            return Taken::Refused(Refusal::ClockAhead(self.ahead_by(&record.at)));
        }
        if let Some(kept) = kept
            && kept.at >= record.at
        {
            return Taken::Older { kept: kept.clone() };
        }
        self.drains.merge(record);
        Taken::Merged
    }

    /// Takes `record` back if it is still the region's last, putting `previous` (the record
    /// it replaced, if any) in its place: for a drain the fleet refused.
    pub fn retract(&mut self, record: &DrainRecord, previous: Option<DrainRecord>) -> bool {
        if self.drains.get(&record.key()) != Some(record) {
            return false;
        }
        self.drains.replace(&record.key(), previous);
        true
    }

    /// Whether `record` is refused for the first time lately (to count and log it once).
    pub fn first_refusal(&mut self, record: &DrainRecord) -> bool {
        if self.refused.len() >= REFUSED_REMEMBERED {
            self.refused.clear();
        }
        self.refused.insert(record.at)
    }

    /// This instance's clock now, as peers are told it.
    pub fn now(&self) -> NTP64 {
        (self.clock)()
    }

    fn ahead_by(&self, at: &Timestamp) -> Duration {
        let now = self.now().to_duration();
        at.get_time().to_duration().saturating_sub(now)
    }
}

/// How far this instance's clock is off the fleet's, when most of the fleet's clocks (this
/// one's counted as agreeing with itself) are more than [`MAX_CLOCK_DRIFT`] off it: the median
/// of those offsets (ours minus theirs, seconds). `offsets` are the fresh peers'. One skewed
/// peer of two is not the fleet: it is that peer's clock that is wrong.
pub fn clock_skew(offsets: &[f64]) -> Option<f64> {
    let drift = MAX_CLOCK_DRIFT.as_secs_f64();
    let off: Vec<f64> = offsets
        .iter()
        .copied()
        .filter(|o| o.abs() > drift)
        .collect();
    let instances = offsets.len() + 1;
    (2 * off.len() > instances)
        .then(|| super::median(off))
        .flatten()
}

/// The system's clock, moved by `REGIONDNS_TEST_CLOCK_OFFSET` seconds (signed) in a build with
/// the `test-hooks` feature, so that a test can run an instance whose clock is wrong.
pub fn system_clock() -> NTP64 {
    let now = uhlc::system_time_clock();
    #[cfg(feature = "test-hooks")]
    {
        static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let offset = *OFFSET.get_or_init(|| {
            std::env::var("REGIONDNS_TEST_CLOCK_OFFSET")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        });
        let shift = NTP64::from(Duration::from_secs(offset.unsigned_abs()));
        if offset >= 0 {
            now + shift
        } else {
            now - shift
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(region: &str) -> RegionKey {
        RegionKey {
            zone: "llm.example.com.".into(),
            region: region.into(),
        }
    }

    /// A record for `region` written by a clock `ahead` of the system's (behind if negative).
    fn written(region: &str, drained: bool, ahead_secs: i64) -> DrainRecord {
        let now = uhlc::system_time_clock();
        let shift = NTP64::from(Duration::from_secs(ahead_secs.unsigned_abs()));
        let time = if ahead_secs >= 0 {
            now + shift
        } else {
            now - shift
        };
        DrainRecord {
            zone: "llm.example.com.".into(),
            region: region.into(),
            drained,
            at: Timestamp::new(time, uhlc::ID::rand()),
            by: "peer".into(),
        }
    }

    #[test]
    fn a_record_from_a_clock_two_hours_ahead_is_refused_and_changes_nothing() {
        let mut ledger = DrainLedger::new(uhlc::system_time_clock);
        let skewed = written("eu-west", true, 7200);
        let taken = ledger.take(skewed.clone());
        let Taken::Refused(Refusal::ClockAhead(by)) = taken else {
            panic!("taken: {taken:?}");
        };
        assert!(by > Duration::from_secs(7190), "{by:?}");
        assert!(Refusal::ClockAhead(by).to_string().contains("2h"), "{by:?}");
        assert_eq!(ledger.get(&key("eu-west")), None);
        // A drain taken here afterwards is in force: the refused record did not move the clock.
        let ours = ledger
            .stamp(&key("eu-west"), false, "ns1")
            .expect("in force");
        assert!(ours.at < skewed.at);
        assert!(ledger.first_refusal(&skewed));
        assert!(!ledger.first_refusal(&skewed), "counted once");
    }

    #[test]
    fn a_record_within_the_drift_is_merged_and_moves_the_clock_past_it() {
        let mut ledger = DrainLedger::new(uhlc::system_time_clock);
        let ahead = written("eu-west", true, 30);
        assert_eq!(ledger.take(ahead.clone()), Taken::Merged);
        assert_eq!(ledger.take(ahead.clone()), Taken::Known);
        let ours = ledger.stamp(&key("eu-west"), false, "ns1").expect("newer");
        assert!(ours.at > ahead.at, "the clock moved past the merged record");
        assert_eq!(
            ledger.take(ahead),
            Taken::Older { kept: ours.clone() },
            "the older record loses to ours"
        );
        assert!(!ledger.get(&key("eu-west")).expect("kept").drained);
    }

    #[test]
    fn after_a_restart_with_the_clock_behind_a_local_drain_loses_and_says_to_what() {
        let stored: Drains = [
            written("eu-west", true, 7200),
            written("us-east", true, -60),
        ]
        .into_iter()
        .collect();
        let mut ledger = DrainLedger::new(uhlc::system_time_clock);
        let ahead = ledger.restore(stored.clone());
        assert_eq!(ahead.len(), 1, "{ahead:?}");
        assert_eq!(ahead[0].0.region, "eu-west");
        assert_eq!(ledger.drains(), &stored, "every stored record is kept");
        let winner = ledger
            .stamp(&key("eu-west"), false, "ns1")
            .expect_err("the stored record is newer");
        assert_eq!(&winner, stored.get(&key("eu-west")).expect("stored"));
        assert!(ledger.get(&key("eu-west")).expect("kept").drained);
        // The other region's record is in the past: a drain here wins.
        assert!(ledger.stamp(&key("us-east"), false, "ns1").is_ok());
    }

    #[test]
    fn a_retracted_record_gives_way_to_the_one_it_replaced() {
        let mut ledger = DrainLedger::new(uhlc::system_time_clock);
        let first = ledger.stamp(&key("eu-west"), true, "ns1").expect("first");
        let second = ledger.stamp(&key("eu-west"), false, "ns1").expect("second");
        assert!(ledger.retract(&second, Some(first.clone())));
        assert_eq!(ledger.get(&key("eu-west")), Some(&first));
        assert!(!ledger.retract(&second, None), "no longer the last");
        assert!(ledger.retract(&first, None));
        assert_eq!(ledger.get(&key("eu-west")), None);
    }

    #[test]
    fn a_clock_is_skewed_when_most_of_the_fleet_is_off_it() {
        assert_eq!(clock_skew(&[]), None, "alone, nothing to compare with");
        assert_eq!(clock_skew(&[0.2, -7200.0]), None, "one skewed peer of two");
        assert_eq!(clock_skew(&[-7200.0]), None, "a tie is not a majority");
        assert_eq!(clock_skew(&[7200.0, 7199.0]), Some(7199.5));
        assert_eq!(clock_skew(&[7200.0, 30.0]), None, "within the drift");
        assert_eq!(clock_skew(&[-7200.0, -7201.0, 3.0, 7190.0]), Some(-7200.0));
    }

    #[test]
    fn two_ledgers_agree_whatever_order_records_arrive_in() {
        let (mut a, mut b) = (
            DrainLedger::new(uhlc::system_time_clock),
            DrainLedger::new(uhlc::system_time_clock),
        );
        let from_a = a.stamp(&key("eu-west"), true, "ns1").expect("a");
        let from_b = b.stamp(&key("eu-west"), false, "ns2").expect("b");
        a.take(from_b.clone());
        b.take(from_a.clone());
        assert_eq!(a.drains(), b.drains());
        let later = if from_a.at > from_b.at {
            from_a
        } else {
            from_b
        };
        assert_eq!(a.get(&key("eu-west")), Some(&later), "the later one wins");
    }
}
