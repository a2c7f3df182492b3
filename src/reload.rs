//! Hot reload: watches the zone directory (and SIGHUP), re-reads every zone file, and hands a
//! new valid configuration to the publisher, which swaps it in atomically.
//!
//! A file that fails validation is logged as `FILE:LINE:COL: reason` and counted, and its last
//! good version keeps serving; a file removed stops its zone, one added starts it. This module
//! owns the prober tasks, so checks follow the configuration: unchanged ones keep running.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info};

use crate::{
    config::{self, ZoneConfig},
    health::{Event, Probers},
    metrics::Metrics,
};

/// Changes closer together than this are taken as one (an editor's write, rename and chmod).
const DEBOUNCE: Duration = Duration::from_millis(100);

pub struct Reloader {
    dir: PathBuf,
    /// Watches `dir`; it stops watching when dropped.
    _watcher: Debouncer<RecommendedWatcher, RecommendedCache>,
    changes: mpsc::Receiver<()>,
    /// The last good configuration of every zone file, by path.
    files: BTreeMap<PathBuf, ZoneConfig>,
    probers: Probers,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Watches `dir` and starts the probers of `zones`, the configuration loaded at start.
    /// Watching starts here, before any query is answered, so no change can slip by.
    pub fn start(
        dir: &Path,
        zones: Vec<ZoneConfig>,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Reloader> {
        let (changed, changes) = mpsc::channel::<()>(1);
        let on_events = move |result: DebounceEventResult| {
            // Reading the files is an event too (access): only changes count.
            let changes_files = result.is_ok_and(|events| {
                events
                    .iter()
                    .any(|e| !matches!(e.event.kind, EventKind::Access(_)))
            });
            if changes_files {
                // A full channel means a reload is already pending: it will see this too.
                let _ = changed.try_send(());
            }
        };
        let mut watcher = new_debouncer(DEBOUNCE, None, on_events)?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        let mut probers = Probers::default();
        probers.reconcile(&zones, &events)?;
        let files = zones.into_iter().map(|z| (z.source.clone(), z)).collect();
        Ok(Reloader {
            dir: dir.to_owned(),
            _watcher: watcher,
            changes,
            files,
            probers,
            events,
            metrics,
        })
    }

    pub fn checks(&self) -> usize {
        self.probers.len()
    }

    /// Reloads on every change under the zone directory and on SIGHUP, until the process ends.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            let why = tokio::select! {
                Some(()) = self.changes.recv() => "zone files changed",
                Some(()) = hangup.recv() => "SIGHUP",
                else => return Ok(()),
            };
            self.reload(why).await;
        }
    }

    async fn reload(&mut self, why: &str) {
        let (next, failed) = self.read_files();
        self.metrics.count_reload(failed == 0);
        if next == self.files {
            if why == "SIGHUP" {
                info!("reload (SIGHUP): configuration unchanged");
            }
            return;
        }
        let zones: Vec<ZoneConfig> = next.values().cloned().collect();
        if let Err(e) = self.probers.reconcile(&zones, &self.events) {
            error!("reload ({why}) not applied: cannot set up the health checks: {e}");
            return;
        }
        if self.events.send(Event::Reload(zones)).await.is_err() {
            return;
        }
        let origins: Vec<String> = next.values().map(|z| z.origin.to_string()).collect();
        info!(
            reason = why,
            zones = next.len(),
            failed_files = failed,
            "reloaded ({why}): zones [{}], {} health checks{}",
            origins.join(", "),
            self.probers.len(),
            if failed > 0 {
                format!(", {failed} file(s) kept at their last good version")
            } else {
                String::new()
            }
        );
        self.files = next;
    }

    /// Every zone file as it is now, or at its last good version where it does not validate;
    /// and how many files failed.
    fn read_files(&self) -> (BTreeMap<PathBuf, ZoneConfig>, usize) {
        let paths = match config::zone_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                error!("{e}");
                return (self.files.clone(), 1);
            }
        };
        let mut next = BTreeMap::new();
        let mut failed = 0;
        for path in paths {
            match config::load_file(&path) {
                Ok(zone) => {
                    next.insert(path, zone);
                }
                Err(errors) => {
                    failed += 1;
                    for e in &errors {
                        log_config_error(e);
                    }
                    if let Some(last_good) = self.files.get(&path) {
                        next.insert(path, last_good.clone());
                    }
                }
            }
        }
        failed += self.drop_duplicate_origins(&mut next);
        (next, failed)
    }

    /// A file that now claims another file's zone is kept at its last good version (or left
    /// out if it had none).
    fn drop_duplicate_origins(&self, next: &mut BTreeMap<PathBuf, ZoneConfig>) -> usize {
        let zones: Vec<ZoneConfig> = next.values().cloned().collect();
        let mut errors = Vec::new();
        config::check_distinct_origins(&zones, &mut errors);
        for e in &errors {
            log_config_error(e);
            let changed_origin = |last_good: &ZoneConfig| {
                next.get(&e.path)
                    .is_some_and(|now| now.origin != last_good.origin)
            };
            match self.files.get(&e.path) {
                Some(last_good) if changed_origin(last_good) => {
                    next.insert(e.path.clone(), last_good.clone());
                }
                _ => {
                    next.remove(&e.path);
                }
            }
        }
        errors.len()
    }
}

/// One line per error, with its position as fields for log shippers.
fn log_config_error(e: &config::ConfigError) {
    let (line, column) = e.position.unwrap_or_default();
    error!(file = %e.path.display(), line, column, "{e}");
}
