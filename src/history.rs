//! What the status page draws over time: every [`SAMPLE_EVERY`], each region's answers (as
//! first choice, by client continent) and its last probe's latency, kept for [`KEPT`] samples
//! (15 minutes).
//!
//! The sampler task reads the routing table's counters and the health board; it only keeps the
//! record, published whole through arc-swap for the admin API. Rates and shares are computed
//! from the record by pure functions ([`History::rates`], [`shares`]); nothing here touches the
//! query path beyond reading its counters.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::CONTINENT_SLOTS, publish::HealthMap, region::RegionKey, routing::RoutingTable,
};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: 15 minutes' worth.
pub const KEPT: usize = 90;

/// One region at one moment: counters since they were made, and the last probe.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RegionSample {
    /// Answers with the region first, by client continent slot.
    pub answers: [u64; CONTINENT_SLOTS],
    pub probe_ms: Option<f64>,
}

impl RegionSample {
    pub fn total(&self) -> u64 {
        self.answers.iter().sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time: SystemTime,
    pub regions: BTreeMap<RegionKey, RegionSample>,
}

/// Every region now: a region that several services answer with counts the answers of all.
pub fn sample(table: &RoutingTable, board: &HealthMap, time: SystemTime) -> Sample {
    let mut regions: BTreeMap<RegionKey, RegionSample> = BTreeMap::new();
    let services = table.zones().iter().flat_map(|zone| zone.services());
    for service in services {
        let counts = service.plan.shares.counts();
        for (region, counts) in service.plan.regions.iter().zip(counts) {
            let entry = regions.entry(region.key.clone()).or_default();
            for (sum, count) in entry.answers.iter_mut().zip(counts) {
                *sum += count;
            }
        }
    }
    for (key, entry) in regions.iter_mut() {
        let probe = board.get(key).and_then(|s| s.last_probe.as_ref());
        entry.probe_ms = probe.map(|p| p.latency.as_secs_f64() * 1000.0);
    }
    Sample { time, regions }
}

/// The last [`KEPT`] samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// One point of a region's sparklines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub time: SystemTime,
    pub answers_per_second: f64,
    pub probe_ms: Option<f64>,
}

impl History {
    pub fn record(&mut self, sample: Sample) {
        if self.samples.len() == KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// `key`'s answers per second between samples, and its probe latency at each, oldest first.
    pub fn rates(&self, key: &RegionKey) -> Vec<Rate> {
        let points = self.samples.iter().zip(self.samples.iter().skip(1));
        points
            .map(|(before, after)| {
                let (was, is) = (before.regions.get(key), after.regions.get(key));
                let seconds = after
                    .time
                    .duration_since(before.time)
                    .unwrap_or_default()
                    .as_secs_f64();
                let answered = grown(
                    was.map_or(0, RegionSample::total),
                    is.map_or(0, RegionSample::total),
                );
                Rate {
                    time: after.time,
                    answers_per_second: if seconds > 0.0 {
                        answered as f64 / seconds
                    } else {
                        0.0
                    },
                    probe_ms: is.and_then(|s| s.probe_ms),
                }
            })
            .collect()
    }
}

/// How much a counter grew; a counter made anew (a reload that changed the service) restarted
/// from zero.
fn grown(before: u64, after: u64) -> u64 {
    after.checked_sub(before).unwrap_or(after)
}

/// Answers per region and client continent slot between the oldest sample and `now`.
pub fn shares(history: &History, now: &Sample) -> BTreeMap<RegionKey, [u64; CONTINENT_SLOTS]> {
    let oldest = history.samples.front();
    now.regions
        .iter()
        .map(|(key, sample)| {
            let before = oldest
                .and_then(|s| s.regions.get(key))
                .copied()
                .unwrap_or_default();
            let answers =
                std::array::from_fn(|slot| grown(before.answers[slot], sample.answers[slot]));
            (key.clone(), answers)
        })
        .collect()
}

/// Samples every [`SAMPLE_EVERY`] until `shutdown`, publishing the record into `history`.
pub async fn run(
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    history: Arc<ArcSwap<History>>,
    shutdown: CancellationToken,
) -> Result<(), Infallible> {
    let mut record = History::default();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        record.record(sample(&table.load(), &board.load(), SystemTime::now()));
        history.store(Arc::new(record.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(region: &str) -> RegionKey {
        RegionKey {
            zone: "llm.example.com.".into(),
            region: region.into(),
        }
    }

    fn at(seconds: u64, answers: u64, probe_ms: f64) -> Sample {
        let mut counts = [0; CONTINENT_SLOTS];
        counts[3] = answers;
        let region = RegionSample {
            answers: counts,
            probe_ms: Some(probe_ms),
        };
        Sample {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            regions: BTreeMap::from([(key("eu-west"), region)]),
        }
    }

    #[test]
    fn rates_are_answers_per_second_between_samples_and_survive_a_reset() {
        let mut history = History::default();
        for (t, n, ms) in [
            (0, 0, 10.0),
            (10, 500, 12.0),
            (20, 1500, 30.0),
            (30, 200, 11.0),
        ] {
            history.record(at(t, n, ms));
        }
        let rates = history.rates(&key("eu-west"));
        let per_second: Vec<f64> = rates.iter().map(|r| r.answers_per_second).collect();
        assert_eq!(
            per_second,
            [50.0, 100.0, 20.0],
            "the last one restarted from zero"
        );
        assert_eq!(rates[1].probe_ms, Some(30.0));
        assert!(
            history
                .rates(&key("us-east"))
                .iter()
                .all(|r| r.answers_per_second == 0.0)
        );
    }

    #[test]
    fn the_record_is_bounded_and_shares_count_from_its_oldest_sample() {
        let mut history = History::default();
        for t in 0..(KEPT as u64 + 10) {
            history.record(at(t * 10, t * 100, 1.0));
        }
        assert_eq!(history.samples().count(), KEPT);
        let now = at(2000, 20_000, 1.0);
        let shares = shares(&history, &now);
        assert_eq!(
            shares[&key("eu-west")][3],
            20_000 - 1_000,
            "since sample 10"
        );
    }
}
