//! Region health: probes every region that has a check, decides its state, and publishes a new
//! routing snapshot whenever a state changes.
//!
//! Data flows one way: one prober task per check runs a [`Probe`] and feeds its own [`Tracker`];
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
    /// A new configuration: every zone, validated. Regions whose check did not change keep
    /// their health.
    Reload(Vec<ZoneConfig>),
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
    /// What each region's health depends on in the configuration, to carry it over reloads.
    settings: BTreeMap<RegionKey, RegionSettings>,
    health: HealthMap,
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    metrics: Arc<Metrics>,
    generation: u64,
}

/// A region's health-related configuration.
#[derive(Debug, Clone, PartialEq)]
struct RegionSettings {
    check: Option<Check>,
    drained: bool,
}

fn region_settings(zones: &[ZoneConfig]) -> BTreeMap<RegionKey, RegionSettings> {
    let regions = zones.iter().flat_map(|zone| {
        zone.regions.iter().map(move |region| {
            let key = RegionKey {
                zone: zone.origin.to_string(),
                region: region.name.clone(),
            };
            let settings = RegionSettings {
                check: region.check.clone(),
                drained: region.drained,
            };
            (key, settings)
        })
    });
    regions.collect()
}

impl Publisher {
    pub fn new(zones: &[ZoneConfig], metrics: Arc<Metrics>) -> Publisher {
        let plan = Arc::new(Plan::new(zones, &metrics));
        let health = initial_health(zones);
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::build(&plan, &health)));
        let board = Arc::new(ArcSwap::from_pointee(health.clone()));
        for (key, status) in &health {
            metrics.set_region_state(&key.zone, &key.region, status.state());
        }
        metrics.set_generation(1);
        Publisher {
            plan,
            settings: region_settings(zones),
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
            Event::Reload(zones) => self.reload(&zones),
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

    /// Swaps in a new configuration. A region keeps its health when its check is unchanged,
    /// and its drained flag unless the zone file changed that flag.
    fn reload(&mut self, zones: &[ZoneConfig]) {
        let settings = region_settings(zones);
        let mut health = initial_health(zones);
        for (key, status) in health.iter_mut() {
            let (Some(old), Some(before), Some(now)) = (
                self.health.get(key),
                self.settings.get(key),
                settings.get(key),
            ) else {
                continue;
            };
            if before.check == now.check {
                let drained = if before.drained == now.drained {
                    old.drained
                } else {
                    now.drained
                };
                *status = RegionStatus {
                    drained,
                    ..old.clone()
                };
            }
        }
        for key in self.health.keys().filter(|key| !health.contains_key(key)) {
            self.metrics.forget_region(&key.zone, &key.region);
        }
        for (key, status) in &health {
            self.metrics
                .set_region_state(&key.zone, &key.region, status.state());
        }
        self.plan = Arc::new(Plan::new(zones, &self.metrics));
        self.settings = settings;
        self.health = health;
        self.publish();
    }

    fn publish(&mut self) {
        let table = RoutingTable::build(&self.plan, &self.health);
        for service in table.fail_open_services() {
            warn!(service = %service, "{service}: every region is down: answering as if all were up (fail open)");
        }
        self.table.store(Arc::new(table));
        self.generation += 1;
        self.metrics.set_generation(self.generation);
        self.board.store(Arc::new(self.health.clone()));
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
            self.publish();
        } else {
            self.board.store(Arc::new(self.health.clone()));
        }
    }
}

/// The running prober tasks, one per region check, stopped when dropped.
#[derive(Default)]
pub struct Probers {
    tasks: BTreeMap<RegionKey, (Check, JoinHandle<()>)>,
}

impl Drop for Probers {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

impl Probers {
    /// Runs exactly the checks of `zones`: a task whose check is unchanged keeps running, others
    /// stop, new ones start. Fails only if an HTTP client cannot be built.
    pub fn reconcile(
        &mut self,
        zones: &[ZoneConfig],
        events: &mpsc::Sender<Event>,
    ) -> Result<(), reqwest::Error> {
        let wanted: BTreeMap<RegionKey, Check> = region_settings(zones)
            .into_iter()
            .filter_map(|(key, settings)| Some((key, settings.check?)))
            .collect();
        self.tasks.retain(|key, (check, task)| {
            let keep = wanted.get(key) == Some(check);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let probe = Probe::new(check.clone())?;
            let task = tokio::spawn(probe_loop(
                key.clone(),
                check.clone(),
                probe,
                events.clone(),
            ));
            self.tasks.insert(key, (check, task));
        }
        Ok(())
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
