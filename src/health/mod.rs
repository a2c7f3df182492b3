//! Region health probing: one prober task per region check runs a [`Probe`] on its interval,
//! feeds its own [`Tracker`] (fall and rise, error and slow rates) and reports every result
//! with the region's health to the publisher ([`crate::publish`]).
//!
//! The prober tasks belong to [`Probers`], which starts and stops them as the configuration
//! changes and reports a prober that died. This module decides a region's health from probe
//! results; it never builds routing tables or touches the query path.

pub mod load_report;
mod probe;
mod tracker;

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Once,
    time::Duration,
};

use tokio::{
    sync::mpsc,
    task::{AbortHandle, Id, JoinSet},
    time::{Instant, MissedTickBehavior},
};

use load_report::LoadMeter;
pub use probe::{MAX_BODY, Probe, describe as describe_http_error, user_agent};
pub use tracker::{Health, Outcome, ProbeResult, Tracker, Transition};

use crate::{
    config::{Check, CheckTarget, ZoneConfig},
    region::RegionKey,
};

/// One probe's outcome and the region's health after it.
pub struct ProbeReport {
    pub key: RegionKey,
    pub result: ProbeResult,
    pub health: Health,
    pub transition: Option<Transition>,
    pub error_rate: f64,
    pub slow_rate: f64,
    /// The region's smoothed load, when its check reads one and it is known.
    pub load: Option<f64>,
}

/// The running prober tasks, one per region check. Dropping it stops them all.
pub struct Probers {
    tasks: JoinSet<()>,
    running: BTreeMap<RegionKey, (Check, AbortHandle)>,
    /// Which region each task probes, to name a prober that dies.
    keys: BTreeMap<Id, RegionKey>,
    reports: mpsc::Sender<ProbeReport>,
    user_agent: String,
}

impl Probers {
    /// No probers yet; those started later send their reports to `reports`, and name
    /// `instance` in their `User-Agent`.
    pub fn new(reports: mpsc::Sender<ProbeReport>, instance: &str) -> Probers {
        Probers {
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
            keys: BTreeMap::new(),
            reports,
            user_agent: probe::user_agent(instance),
        }
    }

    /// Runs exactly the checks of `zones`: a task whose check is unchanged keeps running, others
    /// stop, new ones start. Fails only if an HTTP client cannot be built.
    pub fn reconcile(&mut self, zones: &[ZoneConfig]) -> Result<(), reqwest::Error> {
        let wanted = checks(zones);
        self.running.retain(|key, (check, task)| {
            let keep = wanted.get(key) == Some(check);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let probe = Probe::new(check.clone(), &self.user_agent)?;
            let task = probe_loop(key.clone(), check.clone(), probe, self.reports.clone());
            let handle = self.tasks.spawn(task);
            self.keys.insert(handle.id(), key.clone());
            self.running.insert(key, (check, handle));
        }
        Ok(())
    }

    /// Waits until a prober ends on its own, which only a panic makes it do, and says which
    /// and why. Probers stopped by [`Probers::reconcile`] are not failures.
    pub async fn failure(&mut self) -> String {
        loop {
            let Some(ended) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, why) = match ended {
                Err(error) if error.is_cancelled() => {
                    self.keys.remove(&error.id());
                    continue;
                }
                Err(error) => (error.id(), panic_message(error.into_panic())),
                Ok((id, ())) => (id, "its report channel closed".to_owned()),
            };
            let key = self.keys.remove(&id);
            let region = key.map_or("?".into(), |k| format!("{} {}", k.zone, k.region));
            return format!("the prober of {region} stopped: {why}");
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// The check of every region that has one.
fn checks(zones: &[ZoneConfig]) -> BTreeMap<RegionKey, Check> {
    let regions = zones.iter().flat_map(ZoneConfig::keyed_regions);
    regions
        .filter_map(|(key, region)| Some((key, region.check.clone()?)))
        .collect()
}

/// The text of a panic's payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => format!("panicked: {text}"),
        Err(payload) => match payload.downcast::<&str>() {
            Ok(text) => format!("panicked: {text}"),
            Err(_) => "panicked".to_owned(),
        },
    }
}

/// What probes a region once: [`Probe`] (HTTP or TCP) in the server; tests script their own.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send;
}

impl Prober for Probe {
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send {
        self.run()
    }
}

/// Probes one region every `check.interval` (after a stable offset) and reports each result
/// with the region's health, until the publisher is gone.
pub async fn probe_loop<P: Prober>(
    key: RegionKey,
    check: Check,
    probe: P,
    reports: mpsc::Sender<ProbeReport>,
) {
    hooks::prober().await;
    let mut tracker = Tracker::new(check.thresholds);
    let mut meter = LoadMeter::new(check.thresholds.window);
    let reads_load = matches!(&check.target, CheckTarget::Http(http) if http.load.is_some());
    let first = Instant::now() + jitter(&key, check.interval);
    let mut ticks = tokio::time::interval_at(first, check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = probe.probe().await;
        let transition = tracker.observe(&result);
        if reads_load {
            meter.observe(result.load.as_ref().and_then(|r| r.as_ref().ok()).copied());
        }
        let report = ProbeReport {
            load: meter.load(),
            key: key.clone(),
            result,
            health: tracker.health(),
            transition,
            error_rate: tracker.error_rate(),
            slow_rate: tracker.slow_rate(),
        };
        if reports.send(report).await.is_err() {
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

/// Faults a test can inject into the real binary (feature `test-hooks`, which only the test
/// build enables): `REGIONDNS_TEST_PANIC=prober` makes every prober panic.
mod hooks {
    #[cfg(feature = "test-hooks")]
    pub async fn prober() {
        if std::env::var("REGIONDNS_TEST_PANIC").as_deref() == Ok("prober") {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            panic!("injected by REGIONDNS_TEST_PANIC");
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    pub async fn prober() {}
}
