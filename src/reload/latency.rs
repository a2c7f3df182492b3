//! The latency table's reloader: a replaced table (or SIGHUP) is read and checked here, then
//! handed to the publisher, which compiles it into the latency services' places. A table that
//! does not read, or names a region no zone serves, is refused and the one in force stays.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{FileStamp, FileWatch, stamp};
use crate::{latency::LatencyTable, metrics::Metrics, publish::Event};

pub struct LatencyReloader {
    path: PathBuf,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    watch: FileWatch,
    loaded: Option<FileStamp>,
}

impl LatencyReloader {
    /// Starts watching the table at `path`, the one in force.
    pub fn start(
        path: PathBuf,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<LatencyReloader> {
        Ok(LatencyReloader {
            watch: FileWatch::start(std::slice::from_ref(&path))?,
            loaded: stamp(&path),
            path,
            events,
            metrics,
        })
    }

    /// Reloads on every change to the table and on SIGHUP, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while let Some(why) = self.watch.next(&shutdown, "latency table changed").await? {
            self.reload(why).await;
        }
        Ok(())
    }

    async fn reload(&mut self, why: &'static str) {
        let now = stamp(&self.path);
        if now == self.loaded && why != "SIGHUP" {
            return;
        }
        let path = self.path.clone();
        let table = match tokio::task::spawn_blocking(move || LatencyTable::read(&path)).await {
            Ok(Ok(table)) => table,
            Ok(Err(e)) => return self.refuse(why, &e.to_string()),
            Err(e) => return self.refuse(why, &e.to_string()),
        };
        let summary = table.summary.clone();
        let (done, compiled) = oneshot::channel();
        let table = Arc::new(table);
        if self
            .events
            .send(Event::Latency { table, done })
            .await
            .is_err()
        {
            return; // The publisher has stopped: the server is stopping.
        }
        match compiled.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return self.refuse(why, &reason),
            Err(_) => return self.refuse(why, "the compilation of the new table stopped"),
        }
        // Logged once queries read the new table, so the line can be waited for.
        info!(
            reason = why,
            "latency table reloaded ({why}): {}, {} rows, {} networks, {} regions, sha256 {}",
            summary.file.display(),
            summary.rows,
            summary.networks,
            summary.regions,
            summary.sha256
        );
        crate::memory::release_freed_memory();
        self.loaded = now;
        self.metrics.count_latency_reload(true);
    }

    fn refuse(&mut self, why: &str, reason: &str) {
        error!(
            reason = why,
            "latency table reload ({why}) refused, the table in force keeps serving: {reason}"
        );
        self.metrics.count_latency_reload(false);
    }
}
