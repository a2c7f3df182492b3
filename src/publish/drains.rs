//! Drains as the publisher applies them: the operator's switch, peers' records and the state
//! directory. What is kept and which record wins is the drain ledger's ([`crate::fleet::ledger`]).

use super::{Publisher, RegionStatus};
use crate::{
    fleet::{
        DrainRecord,
        store::{self},
    },
    region::{RegionKey, State},
};
use std::time::SystemTime;

impl Publisher {
    /// The operator's drain or undrain here: a new record, kept and applied at once.
    pub(super) fn set_drained(
        &mut self,
        key: &RegionKey,
        drained: bool,
    ) -> Option<(State, DrainRecord)> {
        let before = self.health.get(key)?.state();
        let record = DrainRecord {
            zone: key.zone.clone(),
            region: key.region.clone(),
            drained,
            at: self.fleet.hlc.new_timestamp(),
            by: self.fleet.instance.clone(),
        };
        self.fleet.drains.merge(record.clone());
        self.save_drains();
        self.apply_drain(&record);
        let after = self.health.get(key)?.state();
        self.changed(key, before);
        Some((after, record))
    }

    /// Merges a drain record from anywhere; a newer one applies here and is kept.
    pub(super) fn take_drain(&mut self, record: DrainRecord) {
        let _ = self.fleet.hlc.update_with_timestamp(&record.at);
        if !self.fleet.drains.merge(record.clone()) {
            return;
        }
        self.save_drains();
        let key = record.key();
        if let Some(before) = self.health.get(&key).map(RegionStatus::state) {
            self.apply_drain(&record);
            self.changed(&key, before);
        }
    }

    pub(super) fn save_drains(&self) {
        if let Some(dir) = &self.fleet.state_dir
            && let Err(error) = store::save_drains(dir, &self.fleet.drains)
        {
            tracing::error!("drains not kept for a restart: {error}");
        }
    }

    /// Sets a region's drained flag from a record (without publishing).
    pub(super) fn apply_drain(&mut self, record: &DrainRecord) {
        let Some(status) = self.health.get_mut(&record.key()) else {
            return;
        };
        if status.drained != record.drained {
            status.drained = record.drained;
            status.since = SystemTime::now();
            status.reason = if record.drained {
                format!("drained by the operator (at {})", record.by)
            } else {
                format!(
                    "undrained by the operator (at {}); probes say {}",
                    record.by,
                    status.health.as_str()
                )
            };
        }
    }
}
