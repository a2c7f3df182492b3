//! Hot reload: watches the zone directory, the GeoIP files and the latency table (and SIGHUP),
//! re-reads them, and hands what is new and valid to the publisher: a zone configuration, GeoIP
//! databases ([`GeoipReloader`]) or a latency table ([`LatencyReloader`]), which it compiles into the routing
//! plan.
//!
//! A file that fails validation is logged as `FILE:LINE:COL: reason` and counted, and its last
//! good version keeps serving; a file removed stops its zone, one added starts it. A GeoIP file
//! that cannot be opened, or that locates none of the well-known sample addresses when the one
//! serving does, is refused the same way, and so is a latency table that does not read. This
//! module owns the prober tasks, so checks follow the configuration: unchanged ones keep
//! running.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::{
    config::{self, ZoneConfig},
    health::Probers,
    metrics::Metrics,
    publish::Event,
};

mod geoip;
mod latency;

pub use geoip::GeoipReloader;
pub use latency::LatencyReloader;

/// Changes closer together than this are taken as one (an editor's write, rename and chmod).
const DEBOUNCE: Duration = Duration::from_millis(100);

pub struct Reloader {
    dir: PathBuf,
    /// Watches `dir`; it stops watching when dropped.
    _watcher: Debouncer<RecommendedWatcher, RecommendedCache>,
    changes: mpsc::Receiver<()>,
    /// The last good configuration of every zone file, by path.
    files: BTreeMap<PathBuf, ZoneConfig>,
    /// The catalog zone's name, when one is made of the transferred zones.
    catalog: Option<Name>,
    /// The version on disk each of `files` was read from, where that version validated.
    read_from: BTreeMap<PathBuf, FileStamp>,
    /// A line for each zone file that does not validate now (for `/healthz`).
    unloaded: Arc<ArcSwap<Vec<String>>>,
    max_file_size: u64,
    probers: Probers,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    /// When the files were last read, and so signed zones last signed.
    last_read: Instant,
    /// SIGHUP, caught from start: before the task first runs, its default would end the
    /// process.
    hangup: Signal,
}

impl Reloader {
    /// Watches `dir` and starts the probers of `zones`, the configuration loaded at start.
    /// Watching starts here, before any query is answered, so no change can slip by.
    pub fn start(
        dir: &Path,
        zones: Vec<ZoneConfig>,
        max_file_size: u64,
        unloaded: Arc<ArcSwap<Vec<String>>>,
        events: mpsc::Sender<Event>,
        mut probers: Probers,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Reloader> {
        let (watcher, changes) = watch(&[dir.to_owned()], |_| true)?;
        let hangup = signal(SignalKind::hangup())?;
        probers.reconcile(&zones)?;
        let files = zones.into_iter().map(|z| (z.source.clone(), z)).collect();
        Ok(Reloader {
            dir: dir.to_owned(),
            _watcher: watcher,
            changes,
            files,
            catalog: None,
            // Empty: what start-up read was not stamped, so the first reload reads it all.
            read_from: BTreeMap::new(),
            unloaded,
            max_file_size,
            probers,
            events,
            metrics,
            last_read: Instant::now(),
            hangup,
        })
    }

    /// Makes the catalog zone `catalog` (if named) of the transferred zones at every reload.
    pub fn with_catalog(self, catalog: Option<Name>) -> Reloader {
        Reloader { catalog, ..self }
    }

    fn signatures_due(&self) -> Option<Instant> {
        signatures_due(self.files.values(), self.last_read)
    }

    pub fn checks(&self) -> usize {
        self.probers.len()
    }

    /// Reloads on every change under the zone directory and on SIGHUP until `shutdown`; the
    /// probers stop with it. Fails when a prober dies.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let due = self.signatures_due();
            let signatures_due = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                // Reading the files again signs every signed zone again.
                () = signatures_due => "DNSSEC signatures due",
                () = shutdown.cancelled() => return Ok(()),
                failure = self.probers.failure() => anyhow::bail!(failure),
                Some(()) = self.changes.recv() => "zone files changed",
                Some(()) = self.hangup.recv() => "SIGHUP",
                else => anyhow::bail!("the zone directory watcher stopped"),
            };
            self.reload(why).await;
        }
    }

    async fn reload(&mut self, why: &str) {
        self.last_read = Instant::now();
        self.read_and_apply(why).await;
        // Parsing's garbage and the configuration replaced (or the new one, when nothing
        // changed) are freed by now.
        crate::memory::release_freed_memory();
    }

    async fn read_and_apply(&mut self, why: &str) {
        // Parsing a large zone takes tens of milliseconds: the runtime thread's other tasks
        // (probes whose latency is being timed, the admin API) move to another thread meanwhile.
        let Reading {
            zones: next,
            read_from,
            problems,
            read,
            unchanged,
        } = tokio::task::block_in_place(|| self.read_files(why));
        for line in problems.iter().filter(|_| why == "DNSSEC signatures due") {
            error!("DNSSEC signatures not renewed: {line}; its old ones expire unless it is fixed");
        }
        let failed = problems.len();
        self.metrics.count_reload(failed == 0);
        self.unloaded.store(Arc::new(problems));
        if next == self.files {
            self.read_from = read_from;
            if why == "SIGHUP" {
                info!("reload (SIGHUP): configuration unchanged");
            }
            return;
        }
        let zones: Vec<ZoneConfig> = next.values().cloned().collect();
        let zones = match crate::catalog::served(zones, self.catalog.as_ref()) {
            Ok(zones) => zones,
            Err(e) => {
                error!("reload ({why}) not applied: {e}");
                return;
            }
        };
        if let Err(e) = self.probers.reconcile(&zones) {
            error!("reload ({why}) not applied: cannot set up the health checks: {e}");
            return;
        }
        // Logged once queries are answered from it, so the line can be waited for.
        let (done, published) = oneshot::channel();
        let reload = Event::Reload { zones, done };
        if self.events.send(reload).await.is_err() {
            return;
        }
        match published.await {
            Ok(Ok(())) => {}
            // The publisher said why; the files are read again at the next change.
            Ok(Err(_)) | Err(_) => return,
        }
        let origins: Vec<String> = next.values().map(|z| z.origin.to_string()).collect();
        info!(
            reason = why,
            zones = next.len(),
            failed_files = failed,
            "reloaded ({why}): zones [{}], {} health checks; zone files: {read} read, {unchanged} unchanged{}",
            origins.join(", "),
            self.probers.len(),
            if failed > 0 {
                format!(", {failed} file(s) kept at their last good version")
            } else {
                String::new()
            }
        );
        self.files = next;
        self.read_from = read_from;
    }

    /// Every zone file as it is now, or at its last good version where it does not validate;
    /// and a line for each file that did not validate (its first error, and what is served).
    fn read_files(&self, why: &str) -> Reading {
        let paths = match config::zone_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                error!("{e}");
                return Reading {
                    zones: self.files.clone(),
                    read_from: self.read_from.clone(),
                    problems: vec![e.to_string()],
                    read: 0,
                    unchanged: self.files.len(),
                };
            }
        };
        let mut reading = Reading::default();
        let mut changed = Vec::new();
        for path in paths {
            let now = stamp(&path);
            match (self.files.get(&path), now) {
                (Some(zone), Some(now)) if self.unchanged(&path, &now, zone, why) => {
                    reading.unchanged += 1;
                    reading.accept(path, zone.clone(), Some(now));
                }
                (_, now) => changed.push((path, now)),
            }
        }
        let paths: Vec<PathBuf> = changed.iter().map(|(path, _)| path.clone()).collect();
        reading.read = paths.len();
        let loaded = config::load_files(&paths, self.max_file_size);
        for ((path, now), loaded) in changed.into_iter().zip(loaded) {
            match loaded {
                Ok(zone) => reading.accept(path, zone, now),
                Err(errors) => {
                    for e in &errors {
                        log_config_error(e);
                    }
                    let kept = self.files.get(&path);
                    reading.problems.push(problem(&errors, kept.is_some()));
                    if let Some(last_good) = kept {
                        reading.zones.insert(path, last_good.clone());
                    }
                }
            }
        }
        self.drop_duplicate_origins(&mut reading);
        reading
    }

    /// Whether `path` is still the version its last good configuration `zone` was read from,
    /// so that a change elsewhere in the directory need not read it again. SIGHUP and
    /// re-signing read every file, and a signed zone is always read: its key files sit
    /// beside it and may have changed on their own.
    fn unchanged(&self, path: &Path, now: &FileStamp, zone: &ZoneConfig, why: &str) -> bool {
        why == "zone files changed"
            && zone.dnssec.is_none()
            && self.read_from.get(path) == Some(now)
    }

    /// A file that now claims another file's zone is kept at its last good version (or left
    /// out if it had none), and read again next time.
    fn drop_duplicate_origins(&self, reading: &mut Reading) {
        let next = &mut reading.zones;
        let zones: Vec<ZoneConfig> = next.values().cloned().collect();
        let mut errors = Vec::new();
        config::check_distinct_origins(&zones, &mut errors);
        for e in &errors {
            log_config_error(e);
            reading.read_from.remove(&e.path);
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
        reading
            .problems
            .extend(errors.iter().map(ToString::to_string));
    }
}

/// What one reload read of the zone directory.
#[derive(Default)]
struct Reading {
    /// Every zone file's configuration, as `Reloader::files` will be.
    zones: BTreeMap<PathBuf, ZoneConfig>,
    /// The version on disk each of `zones` was read from, where that version validated.
    read_from: BTreeMap<PathBuf, FileStamp>,
    /// A line for each file that did not validate.
    problems: Vec<String>,
    /// How many files were read, and how many not, being as they were.
    read: usize,
    unchanged: usize,
}

impl Reading {
    fn accept(&mut self, path: PathBuf, zone: ZoneConfig, read_from: Option<FileStamp>) {
        if let Some(stamp) = read_from {
            self.read_from.insert(path.clone(), stamp);
        }
        self.zones.insert(path, zone);
    }
}

/// A file's first error, and whether its last good version is served instead.
fn problem(errors: &[config::ConfigError], kept: bool) -> String {
    let first = errors.first().map(ToString::to_string).unwrap_or_default();
    let more = match errors.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let served = if kept {
        "its last good version is served"
    } else {
        "not served"
    };
    format!("{first}{more}; {served}")
}

/// One line per error, with its position as fields for log shippers.
fn log_config_error(e: &config::ConfigError) {
    let (line, column) = e.position.unwrap_or_default();
    error!(file = %e.path.display(), line, column, "{e}");
}

pub(crate) type Watcher = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Watches `dirs` (not below them); each change to a path that `wanted` accepts sends one
/// wake-up. Reading a file is an event too (access): only changes count.
pub(crate) fn watch(
    dirs: &[PathBuf],
    wanted: impl Fn(&Path) -> bool + Send + 'static,
) -> notify::Result<(Watcher, mpsc::Receiver<()>)> {
    let (changed, changes) = mpsc::channel::<()>(1);
    let on_events = move |result: DebounceEventResult| {
        let changes_files = result.is_ok_and(|events| {
            events.iter().any(|e| {
                !matches!(e.event.kind, EventKind::Access(_))
                    && e.event.paths.iter().any(|p| wanted(p))
            })
        });
        if changes_files {
            // A full channel means a reload is already pending: it will see this too.
            let _ = changed.try_send(());
        }
    };
    let mut watcher = new_debouncer(DEBOUNCE, None, on_events)?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok((watcher, changes))
}

/// Watches the directories of `paths` for changes to those files (a replacement by rename
/// included).
pub(crate) fn watch_files(paths: &[PathBuf]) -> notify::Result<(Watcher, mpsc::Receiver<()>)> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let names: Vec<std::ffi::OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .collect();
    watch(&dirs, move |changed| {
        changed
            .file_name()
            .is_some_and(|name| names.iter().any(|n| n == name))
    })
}

/// Files watched for replacement, and SIGHUP: what wakes the GeoIP and latency reloaders.
pub(crate) struct FileWatch {
    /// Watches the files' directories; it stops watching when dropped.
    _watcher: Watcher,
    changes: mpsc::Receiver<()>,
    /// SIGHUP, caught from start (as the zone reloader's).
    hangup: Signal,
}

impl FileWatch {
    pub(crate) fn start(paths: &[PathBuf]) -> anyhow::Result<FileWatch> {
        let (watcher, changes) = watch_files(paths)?;
        Ok(FileWatch {
            _watcher: watcher,
            changes,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Why to reload next: `changed` when a file changed, or SIGHUP; `None` at `shutdown`.
    pub(crate) async fn next(
        &mut self,
        shutdown: &CancellationToken,
        changed: &'static str,
    ) -> anyhow::Result<Option<&'static str>> {
        Ok(Some(tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            Some(()) = self.changes.recv() => changed,
            Some(()) = self.hangup.recv() => "SIGHUP",
            else => anyhow::bail!("the watcher of {changed} stopped"),
        }))
    }
}

/// Which version of a file is on disk: a file replaced by rename has a new inode, one
/// rewritten in place a new size or modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    inode: u64,
    len: u64,
    modified: i64,
    modified_nanos: i64,
}

pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.mtime(),
        modified_nanos: meta.mtime_nsec(),
    })
}

/// When signed zones must be signed again, `last_read` being when they were last signed: the
/// shortest `refresh` among them later; `None` when no zone is signed.
fn signatures_due<'a>(
    zones: impl Iterator<Item = &'a ZoneConfig>,
    last_read: Instant,
) -> Option<Instant> {
    let signed = zones.filter_map(|zone| zone.dnssec.as_ref());
    signed.map(|signing| last_read + signing.refresh).min()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dnssec::{KeyAlgorithm, generate};

    #[test]
    fn signed_zones_are_signed_again_after_the_shortest_refresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(KeyAlgorithm::EcdsaP256, &dir.path().join("k.pem")).expect("key");
        let zone = |origin: &str, dnssec: &str| {
            let text = format!(
                "origin: {origin}\nsoa: {{ primary: ns1.example.net., contact: h.example.net. }}\nns: [ns1.example.net.]\n{dnssec}"
            );
            config::parse(&dir.path().join("t.yaml"), &text, 1).expect("valid")
        };
        let unsigned = zone("a.example.", "");
        let weekly = zone("b.example.", "dnssec: { key: k.pem, refresh: 5d }\n");
        let daily = zone(
            "c.example.",
            "dnssec: { key: k.pem, validity: 3d, refresh: 1d }\n",
        );
        let read = Instant::now();
        assert_eq!(signatures_due([&unsigned].into_iter(), read), None);
        let all = [&unsigned, &weekly, &daily];
        let day = Duration::from_secs(86_400);
        assert_eq!(signatures_due(all.into_iter(), read), Some(read + day));
    }
}
