//! Load shifting as the publisher drives it: each probe's figure fed to the controllers of the
//! services with a load target, what routing needs of it, and the notices when a shift starts or
//! stops.

use super::{Publisher, RegionStatus};
use crate::{
    events::Notice,
    health::load_report::smoothing_weight,
    region::{RegionKey, State},
    routing::{
        Loads, RegionLoad, ServicePlan, WeighedCounters,
        load_control::{Admission, Reading, ShiftKey},
    },
    timeline::{LoadShift, StateChange},
};
use std::{sync::Arc, time::SystemTime};
use tracing::info;

/// What feeding one region's load to the controllers did.
#[derive(Default)]
pub(super) struct Shifted {
    pub(super) republish: bool,
    /// Services that started or stopped moving the region's clients, and why.
    pub(super) started_or_stopped: Vec<(LoadShift, String)>,
}

/// Since the counts were last taken (`counted`, updated): of the answers to a region's clients
/// outside its kept share, the share that had to stay; and whether it answered clients other
/// regions moved to it.
pub(super) fn weighed_since(
    counted: &mut [u64; 3],
    counters: Option<&WeighedCounters>,
) -> (f64, bool) {
    let now = counters.map_or([0; 3], |c| [c.moved.get(), c.stuck.get(), c.moved_in.get()]);
    let [moved, stuck, moved_in] = [0, 1, 2].map(|i| now[i].saturating_sub(counted[i]));
    *counted = now;
    let stuck = match moved + stuck {
        0 => 0.0,
        asked => stuck as f64 / asked as f64,
    };
    (stuck, moved_in > 0)
}

/// "load 92% above the target 80%: keeps 87% of its clients".
pub(super) fn load_reason(load: Option<f64>, target: f64, kept: f64) -> String {
    let target = target * 100.0;
    match load {
        None => format!("load unknown: keeps {:.0}% of its clients", kept * 100.0),
        Some(load) if kept < 1.0 => format!(
            "load {:.0}% above the target {target:.0}%: keeps {:.0}% of its clients",
            load * 100.0,
            kept * 100.0
        ),
        Some(load) => format!(
            "load {:.0}% (target {target:.0}%): keeps all its clients",
            load * 100.0
        ),
    }
}

impl Publisher {
    /// Feeds `key`'s load to the controller of every service with a load target that answers
    /// with it: what changed, and whether the routing snapshot must be built again (a kept
    /// share changed, or headroom did while a region of the service moves clients).
    pub(super) fn shift_load(&mut self, key: &RegionKey, fresh: bool) -> Shifted {
        let mut shifted = Shifted::default();
        let Some(status) = self.health.get(key) else {
            return shifted;
        };
        let weight = self
            .settings
            .get(key)
            .and_then(|s| s.check.as_ref())
            .map_or(1.0, |c| smoothing_weight(c.thresholds.window));
        let services = self.plan.services().filter(|s| s.load.is_some());
        for service in services.filter(|s| s.regions.iter().any(|r| &r.key == key)) {
            let Some(target) = service.load else { continue };
            let shift_key = |region: &RegionKey| ShiftKey {
                region: region.clone(),
                service: service.name.to_string(),
            };
            let elsewhere = self.admitted_elsewhere(service, key);
            let (controller, counted) = self.shifts.entry(shift_key(key)).or_default();
            let region = service.regions.iter().find(|r| &r.key == key);
            let (stuck, guests) = weighed_since(counted, region.and_then(|r| r.weighed.as_ref()));
            let reading = Reading {
                load: status.load,
                fresh,
                weight,
                elsewhere,
                stuck,
                guests,
            };
            let before = *controller;
            let was_moving = controller.moving();
            let kept = controller.update(reading, target);
            let moving = controller.moving();
            shifted.republish |= *controller != before;
            let moved = Some(1.0 - kept);
            (self.metrics).set_load_moved(&key.zone, &service.name, &key.region, moved);
            let any_moving = service.regions.iter().any(|r| {
                self.shifts
                    .get(&shift_key(&r.key))
                    .is_some_and(|(c, _)| c.moving())
            });
            shifted.republish |= any_moving && fresh;
            if moving != was_moving {
                let reason = load_reason(status.load, target.target, kept);
                let shift = LoadShift {
                    service: service.name.to_string(),
                    moving,
                };
                shifted.started_or_stopped.push((shift, reason));
            }
        }
        shifted
    }

    /// Whether a region of `service` other than `key` is up and takes clients moved for load.
    pub(super) fn admitted_elsewhere(&self, service: &ServicePlan, key: &RegionKey) -> bool {
        let mut others = service.regions.iter().filter(|r| &r.key != key);
        others.any(|r| {
            let Some(status) = self.health.get(&r.key) else {
                return false;
            };
            let shift = ShiftKey {
                region: r.key.clone(),
                service: service.name.to_string(),
            };
            let shares = self.shifts.get(&shift).map(|(c, _)| *c).unwrap_or_default();
            let admission = RegionLoad::new(status.load, shares).admission();
            status.state() == State::Up && admission != Admission::Closed
        })
    }

    /// Drops the kept shares of service regions the plan no longer moves clients of.
    pub(super) fn forget_shifts(&mut self) {
        let services = self.plan.services().filter(|s| s.load.is_some());
        let current: std::collections::BTreeSet<ShiftKey> = services
            .flat_map(|service| {
                service.regions.iter().map(|r| ShiftKey {
                    region: r.key.clone(),
                    service: service.name.to_string(),
                })
            })
            .collect();
        let metrics = &self.metrics;
        self.shifts.retain(|key, _| {
            let keep = current.contains(key);
            if !keep {
                let region = &key.region;
                metrics.set_load_moved(&region.zone, &key.service, &region.region, None);
            }
            keep
        });
    }

    /// Logs, records and tells receivers that a service started or stopped moving clients.
    pub(super) fn record_load_shift(&mut self, key: &RegionKey, shift: LoadShift, reason: String) {
        let Some(state) = self.health.get(key).map(RegionStatus::state) else {
            return;
        };
        let verb = if shift.moving { "starts" } else { "stops" };
        info!(zone = %key.zone, region = %key.region, service = %shift.service,
            "{}: {} {verb} moving clients for load: {reason}", shift.service, key.region);
        if let Some(notices) = &self.notices {
            notices.send(Notice::load_shift(
                key,
                state,
                &shift,
                &reason,
                self.generation,
            ));
        }
        self.timeline.record(StateChange {
            time: SystemTime::now(),
            key: key.clone(),
            from: state,
            to: state,
            reason,
            generation: self.generation,
            load_shift: Some(shift),
        });
        self.published_timeline
            .store(Arc::new(self.timeline.clone()));
    }

    /// What routing needs of load: each region's smoothed load and each controller's shares.
    pub(super) fn loads(&self) -> Loads {
        let load = self.health.iter();
        let load = load.filter_map(|(key, s)| Some((key.clone(), s.load?)));
        let shares = self.shifts.iter().map(|(key, (c, _))| (key.clone(), *c));
        Loads {
            load: load.collect(),
            shares: shares.collect(),
        }
    }
}
