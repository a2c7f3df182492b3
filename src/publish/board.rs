//! The health board: every region's status as the publisher keeps it (its probes, the fleet's
//! vote, the operator's drain, its load) and the state routing reads from it. Plain data.

use crate::{
    config::ZoneConfig,
    fleet::Agreement,
    health::{Health, ProbeResult},
    region::{RegionKey, State, States},
};
use std::{
    collections::BTreeMap,
    time::{Instant, SystemTime},
};

/// Everything known about a region's health, for routing and for the admin API.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// The health answers use: this instance's probes, or the fleet's agreement.
    pub health: Health,
    /// What this instance's own probes say, and why, and when they last said it.
    pub probed: Health,
    pub probe_reason: String,
    pub probed_at: Option<Instant>,
    /// How the fleet voted, when peers' views counted.
    pub fleet: Option<Agreement>,
    pub drained: bool,
    /// Whether the region has a check at all (without one it is always up).
    pub checked: bool,
    pub reason: String,
    pub since: SystemTime,
    pub last_probe: Option<ProbeResult>,
    pub probes: u64,
    pub error_rate: f64,
    pub slow_rate: f64,
    /// The load routing uses: the median of the fleet's fresh figures, this instance's
    /// included (its own alone outside a fleet); `None` while unknown.
    pub load: Option<f64>,
    /// The load this instance's own probes report, smoothed.
    pub probed_load: Option<f64>,
    /// Why the last probe gave no load figure, when its check reads one.
    pub load_note: Option<String>,
}

impl RegionStatus {
    pub fn state(&self) -> State {
        match (self.drained, self.health) {
            (true, _) => State::Drained,
            (false, Health::Up) => State::Up,
            (false, Health::Degraded) => State::Degraded,
            (false, Health::Down) => State::Down,
        }
    }
}

pub type HealthMap = BTreeMap<RegionKey, RegionStatus>;

/// The state of every region, as routing needs it.
pub fn states(health: &HealthMap) -> States {
    health
        .iter()
        .map(|(key, status)| (key.clone(), status.state()))
        .collect()
}

/// The reason of a checked region before its first probe.
pub(super) const NOT_PROBED_YET: &str = "not probed yet";

/// Every region up (or drained, as configured) before any probe.
pub fn initial_health(zones: &[ZoneConfig]) -> HealthMap {
    let now = SystemTime::now();
    let regions = zones.iter().flat_map(ZoneConfig::keyed_regions);
    regions
        .map(|(key, region)| {
            let reason = match (&region.check, region.drained) {
                (_, true) => "drained in the zone file",
                (Some(_), false) => NOT_PROBED_YET,
                (None, false) => "no check: always up",
            };
            let status = RegionStatus {
                health: Health::Up,
                probed: Health::Up,
                probe_reason: reason.into(),
                probed_at: None,
                fleet: None,
                drained: region.drained,
                checked: region.check.is_some(),
                reason: reason.into(),
                since: now,
                last_probe: None,
                probes: 0,
                error_rate: 0.0,
                slow_rate: 0.0,
                load: None,
                probed_load: None,
                load_note: None,
            };
            (key, status)
        })
        .collect()
}
