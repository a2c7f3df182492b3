//! The last state changes of every region, newest first, for the operator's view (`/events` on
//! the admin API and the status page): when, which region, from what state to what, and why.
//!
//! This module only keeps the record: a ring of at most [`KEPT`] changes that the publisher,
//! the one owner of region state, appends to and publishes whole. It never reads health or
//! routing itself.

use std::{collections::VecDeque, time::SystemTime};

use serde_json::{Value, json};

use crate::region::{RegionKey, State};

/// Changes kept; older ones are forgotten.
pub const KEPT: usize = 200;

/// One region's change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub time: SystemTime,
    pub key: RegionKey,
    pub from: State,
    pub to: State,
    pub reason: String,
    /// The routing snapshot that applied it.
    pub generation: u64,
    /// When the change is a service starting or stopping to move the region's clients for
    /// load (its state stays as it was).
    pub load_shift: Option<LoadShift>,
}

/// A service started (`moving`) or stopped moving a region's clients for load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadShift {
    pub service: String,
    pub moving: bool,
}

impl LoadShift {
    /// The event's name, as the timeline and webhooks give it.
    pub fn event(&self) -> &'static str {
        if self.moving {
            "load_shift_start"
        } else {
            "load_shift_stop"
        }
    }
}

impl StateChange {
    pub fn to_json(&self) -> Value {
        json!({
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "zone": self.key.zone,
            "region": self.key.region,
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "reason": self.reason,
            "generation": self.generation,
            "event": self.load_shift.as_ref().map_or("state", LoadShift::event),
            "service": self.load_shift.as_ref().map(|l| l.service.as_str()),
        })
    }
}

/// The last [`KEPT`] changes, newest first.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    changes: VecDeque<StateChange>,
}

impl Timeline {
    pub fn record(&mut self, change: StateChange) {
        if self.changes.len() == KEPT {
            self.changes.pop_back();
        }
        self.changes.push_front(change);
    }

    /// Newest first.
    pub fn changes(&self) -> impl Iterator<Item = &StateChange> {
        self.changes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u64) -> StateChange {
        StateChange {
            time: SystemTime::UNIX_EPOCH,
            key: RegionKey {
                zone: "llm.example.com.".into(),
                region: format!("r{n}"),
            },
            from: State::Up,
            to: State::Down,
            reason: "3 consecutive failures".into(),
            generation: n,
            load_shift: None,
        }
    }

    #[test]
    fn the_newest_changes_are_kept_first_and_the_oldest_forgotten() {
        let mut timeline = Timeline::default();
        for n in 0..(KEPT as u64 + 5) {
            timeline.record(change(n));
        }
        let generations: Vec<u64> = timeline.changes().map(|c| c.generation).collect();
        assert_eq!(generations.len(), KEPT);
        assert_eq!(generations[0], KEPT as u64 + 4);
        assert_eq!(generations[KEPT - 1], 5);
        let json = timeline.changes().next().expect("a change").to_json();
        assert_eq!(json["from"], "up");
        assert_eq!(json["to"], "down");
        assert_eq!(json["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["event"], "state");
    }
}
