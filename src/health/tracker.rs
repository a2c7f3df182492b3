//! The health state machine of one region, fed one probe result at a time. Pure: no clock, no
//! I/O, so every rule is unit-tested by feeding sequences.
//!
//! - `fall` consecutive failures, or an error rate above `max_error_rate` over a full window,
//!   take a region down; `rise` consecutive reachable probes bring it back.
//! - `fall` consecutive slow or overloaded probes, or a slow rate above `max_slow_rate` over a
//!   full window, make an up region degraded; `rise` consecutive healthy probes make it up.
//! - Every transition empties the window, so rates measure only the current state and an old
//!   burst of errors cannot take a region that just came back down again at once.

use std::{collections::VecDeque, fmt, time::Duration};

use super::load_report::LoadReading;
use crate::config::Thresholds;

/// What the probes say about a region.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    /// Reachable but slow or overloaded: used only when no region is up.
    Degraded,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Reachable, expected status and body.
    Success,
    /// Reachable but shedding load (HTTP 429, or 503 with Retry-After): the text says which.
    Overloaded(String),
    /// Anything else: the text says what went wrong.
    Failure(String),
    /// The probe could not be made: regiondns itself ran short (of file descriptors, socket
    /// buffers, memory). It says nothing about the region, so it counts for nothing.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub outcome: Outcome,
    pub latency: Duration,
    /// The load the response reported, when the check reads one.
    pub load: LoadReading,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.outcome {
            Outcome::Success => "success",
            Outcome::Overloaded(reason) | Outcome::Failure(reason) | Outcome::Unknown(reason) => {
                reason
            }
        };
        write!(f, "{what} in {} ms", self.latency.as_millis())
    }
}

/// A change of health, with the reason an operator reads in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    failed: bool,
    degraded: bool,
}

#[derive(Debug)]
pub struct Tracker {
    thresholds: Thresholds,
    health: Health,
    consecutive_failures: u32,
    consecutive_reachable: u32,
    consecutive_degraded: u32,
    consecutive_healthy: u32,
    window: VecDeque<Sample>,
}

impl Tracker {
    /// A region not probed yet counts as up (as Route 53 and Azure do): never a cold-start outage.
    pub fn new(thresholds: Thresholds) -> Tracker {
        Tracker {
            thresholds,
            health: Health::Up,
            consecutive_failures: 0,
            consecutive_reachable: 0,
            consecutive_degraded: 0,
            consecutive_healthy: 0,
            window: VecDeque::with_capacity(thresholds.window as usize),
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed probes / probes in the window (0 when empty).
    pub fn error_rate(&self) -> f64 {
        self.rate(|s| s.failed)
    }

    /// Slow or overloaded probes / probes in the window (0 when empty).
    pub fn slow_rate(&self) -> f64 {
        self.rate(|s| s.degraded)
    }

    fn rate(&self, counts: impl Fn(&Sample) -> bool) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        self.window.iter().filter(|s| counts(s)).count() as f64 / self.window.len() as f64
    }

    /// Takes one probe result; returns the transition it causes, if any.
    pub fn observe(&mut self, probe: &ProbeResult) -> Option<Transition> {
        let sample = self.sample(probe)?;
        self.count(sample);
        if self.window.len() == self.thresholds.window as usize {
            self.window.pop_front();
        }
        self.window.push_back(sample);

        let (to, why) = self.next_health(sample)?;
        let transition = Transition {
            from: self.health,
            to,
            reason: format!("{why}, last: {probe}"),
        };
        self.health = to;
        self.window.clear();
        Some(transition)
    }

    /// `None` for a probe that could not be made: it neither counts nor breaks a streak.
    fn sample(&self, probe: &ProbeResult) -> Option<Sample> {
        let slow = self
            .thresholds
            .slow
            .is_some_and(|slow| probe.latency > slow);
        Some(match probe.outcome {
            Outcome::Success => Sample {
                failed: false,
                degraded: slow,
            },
            Outcome::Overloaded(_) => Sample {
                failed: false,
                degraded: true,
            },
            Outcome::Failure(_) => Sample {
                failed: true,
                degraded: false,
            },
            Outcome::Unknown(_) => return None,
        })
    }

    fn count(&mut self, sample: Sample) {
        if sample.failed {
            self.consecutive_failures += 1;
            self.consecutive_reachable = 0;
            self.consecutive_degraded = 0;
            self.consecutive_healthy = 0;
            return;
        }
        self.consecutive_failures = 0;
        self.consecutive_reachable += 1;
        if sample.degraded {
            self.consecutive_degraded += 1;
            self.consecutive_healthy = 0;
        } else {
            self.consecutive_healthy += 1;
            self.consecutive_degraded = 0;
        }
    }

    /// The new health and why, when the counts call for a change.
    fn next_health(&self, last: Sample) -> Option<(Health, String)> {
        let t = &self.thresholds;
        let full = self.window.len() >= t.window as usize;
        match self.health {
            Health::Up | Health::Degraded if self.consecutive_failures >= t.fall => Some((
                Health::Down,
                format!("{} consecutive failures", self.consecutive_failures),
            )),
            Health::Up | Health::Degraded if full && self.error_rate() > t.max_error_rate => {
                Some((
                    Health::Down,
                    format!(
                        "error rate {:.2} over the last {} probes",
                        self.error_rate(),
                        self.window.len()
                    ),
                ))
            }
            Health::Down if self.consecutive_reachable >= t.rise => {
                let to = if last.degraded {
                    Health::Degraded
                } else {
                    Health::Up
                };
                Some((
                    to,
                    format!(
                        "{} consecutive successful probes",
                        self.consecutive_reachable
                    ),
                ))
            }
            Health::Up if self.consecutive_degraded >= t.fall => Some((
                Health::Degraded,
                format!(
                    "{} consecutive slow or overloaded probes",
                    self.consecutive_degraded
                ),
            )),
            Health::Up if full && self.slow_rate() > t.max_slow_rate => Some((
                Health::Degraded,
                format!(
                    "slow rate {:.2} over the last {} probes",
                    self.slow_rate(),
                    self.window.len()
                ),
            )),
            Health::Degraded if self.consecutive_healthy >= t.rise => Some((
                Health::Up,
                format!("{} consecutive healthy probes", self.consecutive_healthy),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        fall: 3,
        rise: 2,
        slow: Some(Duration::from_millis(800)),
        window: 10,
        max_error_rate: 0.5,
        max_slow_rate: 0.5,
    };

    fn ok() -> ProbeResult {
        ProbeResult {
            outcome: Outcome::Success,
            latency: Duration::from_millis(12),
            load: None,
        }
    }

    fn slow() -> ProbeResult {
        ProbeResult {
            outcome: Outcome::Success,
            latency: Duration::from_millis(900),
            load: None,
        }
    }

    fn fail() -> ProbeResult {
        ProbeResult {
            outcome: Outcome::Failure("HTTP 503".into()),
            latency: Duration::from_millis(12),
            load: None,
        }
    }

    fn busy() -> ProbeResult {
        ProbeResult {
            outcome: Outcome::Overloaded("HTTP 429".into()),
            latency: Duration::from_millis(3),
            load: None,
        }
    }

    fn unknown() -> ProbeResult {
        ProbeResult {
            outcome: Outcome::Unknown("probe not made: Too many open files".into()),
            latency: Duration::from_millis(0),
            load: None,
        }
    }

    #[test]
    fn probes_not_made_count_for_nothing() {
        let mut tracker = Tracker::new(THRESHOLDS);
        let many_unknown = vec![unknown(); 20];
        assert_eq!(run(&mut tracker, &many_unknown), vec![U; 20], "never down");
        assert_eq!(tracker.error_rate(), 0.0);
        // Nor do they break a streak: fail, ?, fail, ?, fail is three in a row.
        let streak = [fail(), unknown(), fail(), unknown(), fail()];
        assert_eq!(run(&mut tracker, &streak), [U, U, U, U, D]);
        let back = [ok(), unknown(), ok()];
        assert_eq!(run(&mut tracker, &back), [D, D, U]);
    }

    /// Feeds the probes; returns the health after each.
    fn run(tracker: &mut Tracker, probes: &[ProbeResult]) -> Vec<Health> {
        probes
            .iter()
            .map(|p| {
                tracker.observe(p);
                tracker.health()
            })
            .collect()
    }

    use Health::{Degraded as G, Down as D, Up as U};

    #[test]
    fn starts_up_before_any_probe() {
        assert_eq!(Tracker::new(THRESHOLDS).health(), U);
    }

    #[test]
    fn fall_consecutive_failures_take_it_down_and_rise_successes_bring_it_back() {
        let mut t = Tracker::new(THRESHOLDS);
        assert_eq!(run(&mut t, &[fail(), fail(), fail()]), [U, U, D]);
        assert_eq!(run(&mut t, &[ok(), ok()]), [D, U]);
    }

    #[test]
    fn the_transition_says_why_with_the_last_probe() {
        let mut t = Tracker::new(THRESHOLDS);
        run(&mut t, &[fail(), fail()]);
        let down = t.observe(&fail()).expect("down");
        assert_eq!((down.from, down.to), (U, D));
        assert_eq!(
            down.reason,
            "3 consecutive failures, last: HTTP 503 in 12 ms"
        );
        t.observe(&ok());
        let up = t.observe(&ok()).expect("up");
        assert_eq!(
            up.reason,
            "2 consecutive successful probes, last: success in 12 ms"
        );
    }

    #[test]
    fn one_failure_alone_moves_nothing() {
        let mut t = Tracker::new(THRESHOLDS);
        assert_eq!(
            run(&mut t, &[ok(), fail(), ok(), fail(), fail(), ok()]),
            [U; 6]
        );
    }

    #[test]
    fn flapping_every_probe_does_not_flap_the_state() {
        let mut t = Tracker::new(THRESHOLDS);
        let flapping: Vec<ProbeResult> = (0..40)
            .map(|i| if i % 2 == 0 { fail() } else { ok() })
            .collect();
        assert!(
            run(&mut t, &flapping).iter().all(|h| *h == U),
            "50% errors is not above 0.5"
        );

        let mut down = Tracker::new(THRESHOLDS);
        run(&mut down, &[fail(), fail(), fail()]);
        let states = run(&mut down, &flapping);
        assert!(
            states.iter().all(|h| *h == D),
            "never two successes in a row: stays down"
        );
    }

    #[test]
    fn a_high_error_rate_takes_it_down_without_consecutive_failures() {
        let mut t = Tracker::new(THRESHOLDS);
        // fail, fail, ok repeated: never 3 in a row, 2/3 of the window failed.
        let pattern: Vec<ProbeResult> = (0..10)
            .map(|i| if i % 3 == 2 { ok() } else { fail() })
            .collect();
        let states = run(&mut t, &pattern);
        assert_eq!(states[8], U, "window not full yet");
        assert_eq!(states[9], D, "full window of 10 with 7 failures");
        assert_eq!(
            t.error_rate(),
            0.0,
            "the window starts afresh after the transition"
        );
    }

    #[test]
    fn slow_or_overloaded_probes_degrade_and_healthy_ones_restore() {
        let mut t = Tracker::new(THRESHOLDS);
        assert_eq!(run(&mut t, &[slow(), slow(), slow()]), [U, U, G]);
        assert_eq!(run(&mut t, &[ok(), ok()]), [G, U]);
        assert_eq!(run(&mut t, &[busy(), busy(), busy()]), [U, U, G]);
        assert_eq!(
            run(&mut t, &[busy(), ok(), busy(), ok(), ok()]),
            [G, G, G, G, U]
        );
    }

    #[test]
    fn a_degraded_region_can_still_go_down() {
        let mut t = Tracker::new(THRESHOLDS);
        run(&mut t, &[busy(), busy(), busy()]);
        assert_eq!(run(&mut t, &[fail(), fail(), fail()]), [G, G, D]);
        assert_eq!(
            run(&mut t, &[busy(), busy()]),
            [D, G],
            "back reachable but still overloaded"
        );
    }

    #[test]
    fn a_high_slow_rate_degrades() {
        let mut t = Tracker::new(THRESHOLDS);
        let pattern: Vec<ProbeResult> = (0..10)
            .map(|i| if i % 3 == 2 { ok() } else { slow() })
            .collect();
        assert_eq!(run(&mut t, &pattern)[9], G);
    }

    #[test]
    fn without_a_slow_threshold_latency_never_degrades() {
        let mut t = Tracker::new(Thresholds {
            slow: None,
            ..THRESHOLDS
        });
        assert!(
            run(&mut t, &[slow(), slow(), slow(), slow()])
                .iter()
                .all(|h| *h == U)
        );
    }

    #[test]
    fn rates_are_measured_over_the_window() {
        let mut t = Tracker::new(THRESHOLDS);
        run(&mut t, &[ok(), fail(), ok(), slow()]);
        assert_eq!(t.error_rate(), 0.25);
        assert_eq!(t.slow_rate(), 0.25);
    }
}
