//! Drains as the publisher applies them: the operator's switch, peers' records and the state
//! directory. Which record wins, and which is refused, is the drain ledger's
//! ([`crate::fleet::ledger`]); a region without a record is as its zone file says.

use std::time::SystemTime;

use tracing::warn;

use super::Publisher;
use crate::{
    fleet::{
        DrainRecord,
        ledger::{MAX_CLOCK_DRIFT, Refusal, Taken},
        store,
    },
    publish::{RegionStatus, fleet::clock_words},
    region::{RegionKey, State},
};

/// What became of an operator's drain or undrain at this instance.
#[derive(Debug)]
pub enum DrainOutcome {
    /// In force here: the region's state now, the record to send to the peers, and the record
    /// it replaced (to put back if the fleet refuses it).
    Applied {
        state: State,
        record: DrainRecord,
        replaced: Option<DrainRecord>,
    },
    UnknownRegion,
    /// A newer record wins: this instance's clock is behind the one that wrote it.
    Lost {
        winner: DrainRecord,
    },
    /// This instance's clock is off most of its peers' by more than they accept (seconds, ours
    /// minus theirs): they would refuse the record.
    ClockSkewed {
        offset: f64,
    },
}

impl std::fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainOutcome::Applied { record, .. } => write!(f, "applied: {}", describe(record)),
            DrainOutcome::UnknownRegion => f.write_str("no such zone or region"),
            DrainOutcome::Lost { winner } => write!(
                f,
                "not applied: a newer record wins ({}); this instance's clock is behind the one \
                 that wrote it",
                describe(winner)
            ),
            DrainOutcome::ClockSkewed { offset } => write!(
                f,
                "not applied: this instance's clock is {} most of its peers' (at most {} allowed), so \
                 they would refuse the record. Set its clock right, or drain at another instance",
                clock_words(*offset),
                humantime::format_duration(MAX_CLOCK_DRIFT)
            ),
        }
    }
}

/// "drained at ns2, 2026-12-06T22:10:04Z".
pub fn describe(record: &DrainRecord) -> String {
    let verb = if record.drained {
        "drained"
    } else {
        "undrained"
    };
    let when = humantime::format_rfc3339_seconds(record.at.get_time().to_system_time());
    format!("{verb} at {}, {when}", record.by)
}

impl Publisher {
    /// The operator's drain or undrain here: a new record, kept and applied at once, unless a
    /// kept record is newer or the peers would refuse it.
    pub(super) fn set_drained(&mut self, key: &RegionKey, drained: bool) -> DrainOutcome {
        let Some(before) = self.health.get(key).map(RegionStatus::state) else {
            return DrainOutcome::UnknownRegion;
        };
        if let Some(offset) = self.clock_skew() {
            return DrainOutcome::ClockSkewed { offset };
        }
        let replaced = self.fleet.ledger.get(key).cloned();
        let record = match self.fleet.ledger.stamp(key, drained, &self.fleet.instance) {
            Ok(record) => record,
            Err(winner) => return DrainOutcome::Lost { winner },
        };
        self.save_drains();
        self.apply_drain(key);
        self.changed(key, before);
        let state = self.health.get(key).map_or(before, RegionStatus::state);
        DrainOutcome::Applied {
            state,
            record,
            replaced,
        }
    }

    /// Takes back the operator's `record` (the fleet refused it), putting back `replaced`; the
    /// region's state after.
    pub(super) fn retract(
        &mut self,
        record: &DrainRecord,
        replaced: Option<DrainRecord>,
    ) -> Option<State> {
        let key = record.key();
        let before = self.health.get(&key).map(RegionStatus::state)?;
        if self.fleet.ledger.retract(record, replaced) {
            self.save_drains();
            self.apply_drain(&key);
            self.changed(&key, before);
        }
        self.health.get(&key).map(RegionStatus::state)
    }

    /// A drain record from a peer (pushed, or in its view): a newer one applies here and is
    /// kept; one stamped too far ahead, or for a region not served here, is refused (counted
    /// and logged once).
    pub(super) fn take_drain(&mut self, record: DrainRecord) -> Taken {
        let key = record.key();
        let taken = if self.health.contains_key(&key) {
            self.fleet.ledger.take(record.clone())
        } else {
            Taken::Refused(Refusal::UnknownRegion)
        };
        match &taken {
            Taken::Refused(why) => {
                if self.fleet.ledger.first_refusal(&record) {
                    self.metrics.count_refused_record(why.label());
                    warn!(zone = %key.zone, region = %key.region,
                        "drain record refused ({}, for {}): {why}", describe(&record), key.region);
                }
            }
            Taken::Merged => {
                self.save_drains();
                if let Some(before) = self.health.get(&key).map(RegionStatus::state) {
                    self.apply_drain(&key);
                    self.changed(&key, before);
                }
            }
            Taken::Known | Taken::Older { .. } => {}
        }
        taken
    }

    pub(super) fn save_drains(&self) {
        if let Some(dir) = &self.fleet.state_dir
            && let Err(error) = store::save_drains(dir, self.fleet.ledger.drains())
        {
            tracing::error!("drains not kept for a restart: {error}");
        }
    }

    /// Sets a region's drained flag from its last record, else from its zone file (without
    /// publishing).
    pub(super) fn apply_drain(&mut self, key: &RegionKey) {
        let record = self.fleet.ledger.get(key);
        let in_file = self.settings.get(key).is_some_and(|s| s.drained);
        let Some(status) = self.health.get_mut(key) else {
            return;
        };
        let drained = record.map_or(in_file, |r| r.drained);
        if status.drained == drained {
            return;
        }
        status.drained = drained;
        status.since = SystemTime::now();
        let probes = status.health.as_str();
        status.reason = match record {
            Some(r) if drained => format!("drained by the operator (at {})", r.by),
            Some(r) => format!(
                "undrained by the operator (at {}); probes say {probes}",
                r.by
            ),
            None if drained => "drained in the zone file".into(),
            None => format!("no longer drained; probes say {probes}"),
        };
    }
}
