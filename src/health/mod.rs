//! Region health: probes every region that has a check, decides its state, and publishes a new
//! routing snapshot whenever a state changes.
//!
//! Data flows one way: one prober task per check runs [`probe`] and feeds its own [`Tracker`];
//! it sends each result to the [`Publisher`], the only owner of the health map, which also takes
//! the operator's drain requests. On a state change the publisher builds a new
//! [`RoutingTable`] and swaps it in; the query path never waits for any of this.

mod probe;
mod tracker;

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Once},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

pub use probe::{MAX_BODY, Probe};
pub use tracker::{Health, Outcome, ProbeResult, Tracker, Transition};

use crate::{
    config::{Check, ZoneConfig},
    metrics::Metrics,
    routing::{Plan, RoutingTable},
};

/// A region's state as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Degraded,
    Down,
    /// Taken out by the operator, whatever the probes say.
    Drained,
}

impl State {
    pub const ALL: [State; 4] = [State::Up, State::Degraded, State::Down, State::Drained];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Drained => "drained",
        }
    }
}

/// A region of a zone: `("llm.example.com.", "eu-west")`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionKey {
    pub zone: String,
    pub region: String,
}

/// Everything known about a region's health, for routing and for the admin API.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    pub health: Health,
    pub drained: bool,
    /// Whether the region has a check at all (without one it is always up).
    pub checked: bool,
    pub reason: String,
    pub since: SystemTime,
    pub last_probe: Option<ProbeResult>,
    pub probes: u64,
    pub error_rate: f64,
    pub slow_rate: f64,
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

/// Every region up (or drained, as configured) before any probe.
pub fn initial_health(zones: &[ZoneConfig]) -> HealthMap {
    let now = SystemTime::now();
    let regions = zones.iter().flat_map(|zone| {
        zone.regions.iter().map(move |region| {
            let key = RegionKey {
                zone: zone.origin.to_string(),
                region: region.name.clone(),
            };
            let reason = match (&region.check, region.drained) {
                (_, true) => "drained in the zone file",
                (Some(_), false) => "not probed yet",
                (None, false) => "no check: always up",
            };
            let status = RegionStatus {
                health: Health::Up,
                drained: region.drained,
                checked: region.check.is_some(),
                reason: reason.into(),
                since: now,
                last_probe: None,
                probes: 0,
                error_rate: 0.0,
                slow_rate: 0.0,
            };
            (key, status)
        })
    });
    regions.collect()
}

/// What the publisher is told.
pub enum Event {
    Probed(ProbeReport),
    /// The operator's switch; `done` receives the new state, or `None` for an unknown region,
    /// once the snapshot that applies it is published.
    SetDrained {
        key: RegionKey,
        drained: bool,
        done: oneshot::Sender<Option<State>>,
    },
}

pub struct ProbeReport {
    pub key: RegionKey,
    pub result: ProbeResult,
    pub health: Health,
    pub transition: Option<Transition>,
    pub error_rate: f64,
    pub slow_rate: f64,
}

/// Owns the health map; publishes routing snapshots and health for the admin API.
pub struct Publisher {
    plan: Arc<Plan>,
    health: HealthMap,
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    metrics: Arc<Metrics>,
    generation: u64,
}

impl Publisher {
    pub fn new(plan: Arc<Plan>, health: HealthMap, metrics: Arc<Metrics>) -> Publisher {
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::build(&plan, &health)));
        let board = Arc::new(ArcSwap::from_pointee(health.clone()));
        for (key, status) in &health {
            metrics.set_region_state(&key.zone, &key.region, status.state());
        }
        metrics.set_generation(1);
        Publisher {
            plan,
            health,
            table,
            board,
            metrics,
            generation: 1,
        }
    }

    /// The routing snapshot that queries read.
    pub fn table(&self) -> Arc<ArcSwap<RoutingTable>> {
        Arc::clone(&self.table)
    }

    /// The health of every region, for the admin API.
    pub fn board(&self) -> Arc<ArcSwap<HealthMap>> {
        Arc::clone(&self.board)
    }

    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Probed(report) => self.probed(report),
            Event::SetDrained { key, drained, done } => {
                let state = self.set_drained(&key, drained);
                let _ = done.send(state);
            }
        }
    }

    fn probed(&mut self, report: ProbeReport) {
        let key = report.key;
        self.metrics
            .observe_probe(&key.zone, &key.region, report.result.latency);
        let Some(status) = self.health.get_mut(&key) else {
            return;
        };
        let before = status.state();
        status.health = report.health;
        status.last_probe = Some(report.result);
        status.probes += 1;
        status.error_rate = report.error_rate;
        status.slow_rate = report.slow_rate;
        if let Some(transition) = report.transition {
            status.reason = transition.reason;
            status.since = SystemTime::now();
        }
        self.changed(&key, before);
    }

    fn set_drained(&mut self, key: &RegionKey, drained: bool) -> Option<State> {
        let status = self.health.get_mut(key)?;
        let before = status.state();
        if status.drained != drained {
            status.drained = drained;
            status.since = SystemTime::now();
            status.reason = if drained {
                "drained by the operator".into()
            } else {
                format!(
                    "undrained by the operator; probes say {}",
                    status.health.as_str()
                )
            };
        }
        let after = status.state();
        self.changed(key, before);
        Some(after)
    }

    /// Publishes the health board, and a new routing snapshot when the region's state changed.
    fn changed(&mut self, key: &RegionKey, before: State) {
        let Some(status) = self.health.get(key) else {
            return;
        };
        let after = status.state();
        if after != before {
            info!(zone = %key.zone, region = %key.region, state = after.as_str(),
                "{} {}: {}", key.region, after.as_str(), status.reason);
            self.metrics.count_transition(&key.zone, &key.region, after);
            self.metrics.set_region_state(&key.zone, &key.region, after);
            let table = RoutingTable::build(&self.plan, &self.health);
            for service in table.fail_open_services() {
                warn!(service = %service, "{service}: every region is down: answering as if all were up (fail open)");
            }
            self.table.store(Arc::new(table));
            self.generation += 1;
            self.metrics.set_generation(self.generation);
        }
        self.board.store(Arc::new(self.health.clone()));
    }
}

/// The running prober tasks, stopped when dropped.
pub struct Probers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Probers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Probers {
    /// Starts one task per region check. Fails only if an HTTP client cannot be built.
    pub fn start(
        zones: &[ZoneConfig],
        events: &mpsc::Sender<Event>,
    ) -> Result<Probers, reqwest::Error> {
        let mut tasks = Vec::new();
        for zone in zones {
            for region in &zone.regions {
                let Some(check) = &region.check else { continue };
                let key = RegionKey {
                    zone: zone.origin.to_string(),
                    region: region.name.clone(),
                };
                let probe = Probe::new(check.clone())?;
                tasks.push(tokio::spawn(probe_loop(
                    key,
                    check.clone(),
                    probe,
                    events.clone(),
                )));
            }
        }
        Ok(Probers { tasks })
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

async fn probe_loop(key: RegionKey, check: Check, probe: Probe, events: mpsc::Sender<Event>) {
    let mut tracker = Tracker::new(check.thresholds);
    let first = Instant::now() + jitter(&key, check.interval);
    let mut ticks = tokio::time::interval_at(first, check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = probe.run().await;
        let transition = tracker.observe(&result);
        let report = ProbeReport {
            key: key.clone(),
            result,
            health: tracker.health(),
            transition,
            error_rate: tracker.error_rate(),
            slow_rate: tracker.slow_rate(),
        };
        if events.send(Event::Probed(report)).await.is_err() {
            return;
        }
    }
}

/// A stable offset within the interval, so that checks do not all fire together.
fn jitter(key: &RegionKey, interval: Duration) -> Duration {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(hasher.finish() % millis)
}

/// reqwest is built without a default TLS crypto provider; use ring's, once per process.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
