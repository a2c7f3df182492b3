//! Load shifting: how much of its clients a region over its service's `load_target` keeps, and
//! where the rest go. Pure: the publisher feeds each region's smoothed load, probe by probe, to
//! a [`Controller`] per service and region, and hands the shares it sets to the routing table
//! as [`Loads`]; the decision (`policy`) reads them from the snapshot.
//!
//! The controller estimates the region's demand as its smoothed load divided by the share it
//! kept over the same window (both averaged alike, so a lagging average of the load is not
//! taken for a lasting overload), and keeps target / demand of it, changing the share by at
//! most `load_step` per probe. Within [`DEADBAND`] of the target the share holds.

use std::collections::BTreeMap;

use crate::{config::LoadTarget, region::RegionKey};

/// Within this much of the target (in load: 0.02 is 2 points) the kept share does not change:
/// noise in the reports must not move clients back and forth.
pub const DEADBAND: f64 = 0.02;

/// One service's region, as the controller's state is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShiftKey {
    pub region: RegionKey,
    pub service: String,
}

/// The share of a region's clients it keeps, for one service, probe by probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controller {
    /// The share kept now: 1 keeps every client.
    pub kept: f64,
    /// The kept share averaged as the load is, over the probes that reported a figure.
    in_force: f64,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller {
            kept: 1.0,
            in_force: 1.0,
        }
    }
}

/// What one probe tells a controller.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// The region's smoothed load; `None` while unknown.
    pub load: Option<f64>,
    /// Whether this probe brought a figure (a probe without one changes nothing).
    pub fresh: bool,
    /// The weight of a new figure in the smoothed load.
    pub weight: f64,
    /// Whether another region of the service has headroom to take clients.
    pub elsewhere: bool,
    /// Of the region's clients outside its kept share that asked since the last probe, the
    /// share that had to stay (no region they may go to had headroom): 0 when none asked.
    pub stuck: f64,
}

impl Controller {
    /// The kept share after one probe of the region.
    pub fn update(&mut self, reading: Reading, target: LoadTarget) -> f64 {
        if reading.fresh {
            // The figure just read was made with the share in force until now: the kept
            // share and the clients that could not move.
            let in_force = self.kept + (1.0 - self.kept) * reading.stuck;
            self.in_force += reading.weight * (in_force - self.in_force);
        }
        let wanted = match reading.load {
            // Unknown load, or nowhere better to send clients: keep them, step by step.
            None => 1.0,
            Some(_) if !reading.elsewhere => 1.0,
            Some(_) if !reading.fresh => self.kept,
            Some(load) if (load - target.target).abs() <= DEADBAND => self.kept,
            Some(load) => {
                let demand = load / self.in_force.max(0.01);
                target.target / demand.max(f64::MIN_POSITIVE)
            }
        };
        let stepped = wanted.clamp(self.kept - target.step, self.kept + target.step);
        // Clients that would move but cannot stay; they must never be more than one step of
        // the region's clients, or room opening somewhere would move them all at once.
        let floor = match reading.stuck {
            stuck if stuck > 0.0 => (1.0 - target.step / stuck).min(self.kept + target.step),
            _ => 0.0,
        };
        self.kept = stepped.max(floor).clamp(0.0, 1.0);
        self.kept
    }

    pub fn moving(&self) -> bool {
        self.kept < 1.0
    }
}

/// What routing needs of load: each region's smoothed load, and each service region's kept
/// share (absent: keeps all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loads {
    pub load: BTreeMap<RegionKey, f64>,
    pub kept: BTreeMap<ShiftKey, f64>,
}

/// A region of a service as the decision sees load in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionLoad {
    /// Smoothed, when known.
    pub load: Option<f64>,
    /// The share of its clients it keeps (1: all).
    pub kept: f64,
    /// How far its load is below the service's target; 0 when not below or unknown: it takes
    /// no clients moved for load.
    pub headroom: f64,
}

impl RegionLoad {
    pub fn new(load: Option<f64>, kept: f64, target: f64) -> RegionLoad {
        RegionLoad {
            load,
            kept,
            headroom: load.map_or(0.0, |load| (target - load).max(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: LoadTarget = LoadTarget {
        target: 0.8,
        step: 0.1,
    };

    fn reading(load: f64) -> Reading {
        Reading {
            load: Some(load),
            fresh: true,
            weight: 0.5,
            elsewhere: true,
            stuck: 0.0,
        }
    }

    /// A region whose load is `demand` times the share it kept in the last interval.
    fn closed_loop(demand: f64, probes: usize) -> Vec<(f64, f64)> {
        let mut controller = Controller::default();
        let mut smoothed: Option<f64> = None;
        let mut trace = Vec::new();
        for _ in 0..probes {
            let figure = demand * controller.kept;
            let load = smoothed.map_or(figure, |s| s + 0.5 * (figure - s));
            smoothed = Some(load);
            controller.update(reading(load), TARGET);
            trace.push((load, controller.kept));
        }
        trace
    }

    #[test]
    fn below_the_target_every_client_is_kept() {
        for (load, kept) in closed_loop(0.7, 20) {
            assert!(load < 0.8);
            assert_eq!(kept, 1.0);
        }
    }

    #[test]
    fn above_it_the_share_falls_by_steps_to_target_over_demand_and_holds() {
        let trace = closed_loop(1.0 / 0.6, 30);
        for pair in trace.windows(2) {
            assert!(
                pair[0].1 - pair[1].1 <= 0.1 + 1e-9,
                "a step of at most 10 points"
            );
        }
        let (load, kept) = trace[9];
        assert!(
            (load - 0.8).abs() <= 0.05,
            "settled by the 10th probe: {trace:?}"
        );
        assert!((kept - 0.48).abs() <= 0.03, "{trace:?}");
        let settled: Vec<f64> = trace[10..].iter().map(|&(_, kept)| kept).collect();
        let spread = settled
            .iter()
            .fold(0.0_f64, |m, &k| m.max((k - kept).abs()));
        assert!(spread <= 0.05, "holds within 5 points: {settled:?}");
    }

    #[test]
    fn clients_come_back_step_by_step_when_demand_falls() {
        let mut controller = Controller {
            kept: 0.5,
            in_force: 0.5,
        };
        let kept = controller.update(reading(0.3), TARGET);
        assert!((kept - 0.6).abs() < 1e-9);
    }

    #[test]
    fn with_nowhere_to_go_or_an_unknown_load_clients_return() {
        let mut controller = Controller {
            kept: 0.5,
            in_force: 0.5,
        };
        let nowhere = Reading {
            elsewhere: false,
            ..reading(1.2)
        };
        assert!((controller.update(nowhere, TARGET) - 0.6).abs() < 1e-9);
        let unknown = Reading {
            load: None,
            ..reading(0.0)
        };
        assert!((controller.update(unknown, TARGET) - 0.7).abs() < 1e-9);
        let stale = Reading {
            fresh: false,
            ..reading(2.0)
        };
        assert!(
            (controller.update(stale, TARGET) - 0.7).abs() < 1e-9,
            "no figure: no change"
        );
    }

    #[test]
    fn clients_that_cannot_move_are_never_more_than_one_step() {
        // Every client outside the kept share is stuck: the share stops one step below all.
        let mut controller = Controller::default();
        for _ in 0..20 {
            let stuck = Reading {
                stuck: 1.0,
                ..reading(1.5)
            };
            controller.update(stuck, TARGET);
        }
        assert!((controller.kept - 0.9).abs() < 1e-9, "{}", controller.kept);
        // Half of them stuck: at most 20% outside, of which 10 points stuck.
        let mut controller = Controller::default();
        for _ in 0..20 {
            let half = Reading {
                stuck: 0.5,
                ..reading(1.5)
            };
            controller.update(half, TARGET);
        }
        assert!((controller.kept - 0.8).abs() < 1e-9, "{}", controller.kept);
        // Once they can move, the share falls a step at a time again.
        let kept = controller.update(reading(1.5), TARGET);
        assert!((kept - 0.7).abs() < 1e-9, "{kept}");
    }

    #[test]
    fn headroom_is_what_is_left_below_the_target() {
        assert!((RegionLoad::new(Some(0.5), 1.0, 0.8).headroom - 0.3).abs() < 1e-9);
        assert_eq!(RegionLoad::new(Some(0.9), 1.0, 0.8).headroom, 0.0);
        assert_eq!(RegionLoad::new(None, 1.0, 0.8).headroom, 0.0);
    }
}
