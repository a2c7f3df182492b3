//! The GeoIP reloader: new databases are opened, checked against the well-known sample
//! addresses, and handed to the publisher, which compiles them into every service's places.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{FileStamp, FileWatch, stamp};
use crate::{
    geo::{self, GeoIp},
    metrics::Metrics,
    publish::Event,
};

/// Watches the GeoIP files (and SIGHUP) and hands new [`GeoIp`] databases to the publisher,
/// which compiles them into every service's places, when they change.
pub struct GeoipReloader {
    paths: Vec<PathBuf>,
    /// How many sample addresses the databases in use locate.
    located: usize,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    watch: FileWatch,
    loaded: Vec<Option<FileStamp>>,
}

impl GeoipReloader {
    /// Starts watching the directories of `paths`, the files in use, which locate `located`
    /// of the [`geo::SAMPLE`] addresses.
    pub fn start(
        paths: Vec<PathBuf>,
        located: usize,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<GeoipReloader> {
        Ok(GeoipReloader {
            watch: FileWatch::start(&paths)?,
            loaded: paths.iter().map(|p| stamp(p)).collect(),
            paths,
            located,
            events,
            metrics,
        })
    }

    /// Reloads on every change to a GeoIP file and on SIGHUP, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while let Some(why) = self.watch.next(&shutdown, "GeoIP file changed").await? {
            self.reload(why).await;
        }
        Ok(())
    }

    async fn reload(&mut self, why: &'static str) {
        let stamps: Vec<Option<FileStamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        if stamps == self.loaded && why != "SIGHUP" {
            return;
        }
        let paths = self.paths.clone();
        let opened = tokio::task::spawn_blocking(move || GeoIp::open(&paths)).await;
        let next = match opened {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => return self.refuse(why, &e.to_string()),
            Err(e) => return self.refuse(why, &e.to_string()),
        };
        let (before, after) = (self.located, next.sample_located());
        if after == 0 && before > 0 {
            return self.refuse(why, &geo::sample_warning(&next));
        }
        let described = next.describe().join(", ");
        let (done, compiled) = oneshot::channel();
        if self
            .events
            .send(Event::Geo { geo: next, done })
            .await
            .is_err()
        {
            return; // The publisher has stopped: the server is stopping.
        }
        match compiled.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.refuse(why, &e.to_string()),
            Err(_) => return self.refuse(why, "the compilation of the new databases stopped"),
        }
        // Logged once queries read the new databases, so the line can be waited for.
        info!(
            reason = why,
            "GeoIP reloaded ({why}): {described}; locates {after} of {} well-known addresses",
            geo::SAMPLE.len()
        );
        // The old file's bytes (megabytes) go back to the system, not to a malloc arena.
        crate::memory::release_freed_memory();
        self.loaded = stamps;
        self.located = after;
        self.metrics.count_geoip_reload(true);
    }

    fn refuse(&mut self, why: &str, reason: &str) {
        error!(
            reason = why,
            "GeoIP reload ({why}) refused, the databases already open keep serving: {reason}"
        );
        self.metrics.count_geoip_reload(false);
    }
}
