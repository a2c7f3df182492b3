//! Load shifting: how much of its clients a region over its service's `load_target` keeps, and
//! where the rest go. Pure: the publisher feeds each region's smoothed load, probe by probe, to
//! a [`Controller`] per service and region, and hands the shares it sets to the routing table
//! as [`Loads`]; the decision (`policy`) reads them from the snapshot.
//!
//! The controller estimates the region's demand as its smoothed load divided by the share it
//! kept over the same window (both averaged alike, so a lagging average of the load is not
//! taken for a lasting overload), and keeps target / demand of it, changing the share by at
//! most `load_step` per probe. Within [`DEADBAND`] of the target the share holds.
//!
//! The same controller says how much of the clients moved to its region from others it admits
//! ([`Controller::admits`]). Moved clients fill the nearest region of their order up to that
//! share before any go farther, so the admitted share is what holds a region that takes
//! guests at its target: over it, with guests, the region admits fewer (by its distance from
//! the target, at most `load_step` per probe) before it moves any client of its own; under
//! it, its own clients come back first, then it admits more.

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
    /// The share of the clients moved to this region by others that it takes now; the rest go
    /// farther.
    pub admits: f64,
    /// The kept share averaged as the load is, over the probes that reported a figure.
    in_force: f64,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller {
            kept: 1.0,
            admits: 1.0,
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
    /// Whether clients moved here by other regions were answered since the last probe.
    pub guests: bool,
}

impl Controller {
    /// A controller whose shares are `kept` and `admits`, as a snapshot showed them (for
    /// `explain` from a running server's figures).
    pub fn with_shares(kept: f64, admits: f64) -> Controller {
        Controller {
            kept,
            admits,
            in_force: kept,
        }
    }

    /// The kept share after one probe of the region (and the admitted share).
    pub fn update(&mut self, reading: Reading, target: LoadTarget) -> f64 {
        if let Some(load) = reading.load.filter(|_| reading.fresh)
            && self.kept >= 1.0
            && self.admit(load, reading.guests, target)
        {
            // Guests leave first; the region's own clients stay while they do.
            self.in_force += reading.weight * (1.0 - self.in_force);
            return self.kept;
        }
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
        if self.kept < 1.0 || reading.load.is_none() {
            // Moving clients of its own, it takes none of others'; unknown, it is asked last.
            self.admits = if self.kept < 1.0 { 0.0 } else { 1.0 };
        }
        self.kept
    }

    /// Moves the admitted share toward the target for `load`, while every own client is kept:
    /// over the target it falls in proportion (target / load, and to none below half a step),
    /// under it, it rises by the distance (at most a step). Whether the kept share must wait:
    /// guests are still admitted over the target.
    fn admit(&mut self, load: f64, guests: bool, target: LoadTarget) -> bool {
        let distance = target.target - load;
        if distance.abs() <= DEADBAND {
            return false;
        }
        if distance > 0.0 {
            self.admits = (self.admits + distance.min(target.step)).min(1.0);
            return true;
        }
        let admits = self.admits * target.target / load;
        self.admits = if admits < target.step / 2.0 {
            0.0
        } else {
            admits
        };
        guests && self.admits > 0.0
    }

    pub fn moving(&self) -> bool {
        self.kept < 1.0
    }
}

/// What routing needs of load: each region's smoothed load, and each service region's
/// controller (absent: keeps all its clients, admits all moved to it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loads {
    pub load: BTreeMap<RegionKey, f64>,
    pub shares: BTreeMap<ShiftKey, Controller>,
}

/// A region of a service as the decision sees load in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionLoad {
    /// Smoothed, when known.
    pub load: Option<f64>,
    /// The share of its clients it keeps (1: all).
    pub kept: f64,
    /// The share of the clients moved to it that it takes.
    pub admits: f64,
}

/// How a region takes clients another region moves for load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// It reports its load and takes this share of them (above 0).
    Reported(f64),
    /// Its load is unknown: it takes them, after every region that reports room.
    Unreported,
    /// It takes none.
    Closed,
}

impl RegionLoad {
    pub fn new(load: Option<f64>, shares: Controller) -> RegionLoad {
        RegionLoad {
            load,
            kept: shares.kept,
            admits: shares.admits,
        }
    }

    pub fn admission(&self) -> Admission {
        match self.load {
            None => Admission::Unreported,
            Some(_) if self.admits > 0.0 && self.kept >= 1.0 => Admission::Reported(self.admits),
            Some(_) => Admission::Closed,
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
            guests: false,
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
            admits: 0.0,
            in_force: 0.5,
        };
        let kept = controller.update(reading(0.3), TARGET);
        assert!((kept - 0.6).abs() < 1e-9);
    }

    #[test]
    fn with_nowhere_to_go_or_an_unknown_load_clients_return() {
        let mut controller = Controller {
            kept: 0.5,
            admits: 0.0,
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
    fn over_its_target_a_region_with_guests_admits_fewer_before_moving_its_own_clients() {
        let mut controller = Controller::default();
        let with_guests = |load| Reading {
            guests: true,
            ..reading(load)
        };
        controller.update(with_guests(1.0), TARGET);
        assert_eq!(
            (controller.kept, controller.admits),
            (1.0, 0.8),
            "target / load"
        );
        controller.update(with_guests(0.85), TARGET);
        assert!((controller.admits - 0.8 * 0.8 / 0.85).abs() < 1e-9);
        let held = controller.admits;
        controller.update(with_guests(0.81), TARGET);
        assert_eq!(controller.admits, held, "within the deadband: holds");
        controller.update(with_guests(0.6), TARGET);
        assert!(
            (controller.admits - held - 0.1).abs() < 1e-9,
            "under: a step more"
        );
        // Far over, it soon admits none, and then its own clients move.
        for _ in 0..6 {
            controller.update(with_guests(1.6), TARGET);
        }
        assert_eq!(controller.admits, 0.0);
        assert!(controller.kept < 1.0);
        // Without guests, its own clients move, and then it admits none.
        controller.update(reading(1.2), TARGET);
        assert!(controller.kept < 1.0);
        assert_eq!(controller.admits, 0.0);
        let shares = RegionLoad::new(Some(1.2), controller);
        assert_eq!(shares.admission(), Admission::Closed);
        // Under the target again, its own clients come back before it admits any guest.
        for _ in 0..20 {
            controller.update(reading(0.5), TARGET);
            if controller.kept < 1.0 {
                assert_eq!(controller.admits, 0.0);
            }
        }
        assert_eq!((controller.kept, controller.admits), (1.0, 1.0));
    }

    #[test]
    fn regions_that_report_no_load_are_asked_after_those_that_do() {
        let unknown = RegionLoad::new(None, Controller::default());
        assert_eq!(unknown.admission(), Admission::Unreported);
        let half = Controller {
            admits: 0.5,
            ..Controller::default()
        };
        assert_eq!(
            RegionLoad::new(Some(0.8), half).admission(),
            Admission::Reported(0.5)
        );
    }
}
