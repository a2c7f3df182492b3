//! What the status page draws over time: every [`SAMPLE_EVERY`], each region's answers (as
//! first choice) and its last probe's latency, and every minute its answers by client
//! continent, kept for [`KEPT`] samples (15 minutes).
//!
//! The sampler task reads the routing table's counters and the health board; it only keeps the
//! record, published whole through arc-swap for the admin API. A sample is compact (12 bytes a
//! region, the regions' names shared by every sample while they stay the same, continents only
//! where there were answers), so 15 minutes of a 1,000-region service take about a megabyte.
//! Rates and shares are computed from the record by pure functions ([`History::rates`],
//! [`shares`]); nothing here touches the query path beyond reading its counters.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
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
/// Answers by continent are sampled every this many samples (a minute).
const CONTINENTS_EVERY: u64 = 6;

/// Answers of one region to clients of one continent slot, since the counters were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    region: u32,
    slot: u8,
    answers: u64,
}

/// Every region at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time: SystemTime,
    /// Sorted; shared by the samples taken while the regions stay the same.
    regions: Arc<[RegionKey]>,
    /// Per region: answers with it first, since its counters were made.
    answers: Box<[u64]>,
    /// Per region: the last probe's latency in milliseconds, NaN when there is none.
    probe_ms: Box<[f32]>,
    /// Per region: its smoothed load, NaN while unknown.
    load: Box<[f32]>,
    /// Answers by region and continent slot, cells above zero; taken every minute only.
    continents: Option<Box<[Cell]>>,
}

impl Sample {
    pub fn regions(&self) -> &[RegionKey] {
        &self.regions
    }

    fn index(&self, key: &RegionKey) -> Option<usize> {
        self.regions.binary_search(key).ok()
    }
}

/// Every region now, with its answers by continent when `continents` says so. A region that
/// several services answer with counts the answers of all. `regions` is the last sample's list,
/// shared when it is still the same.
pub fn sample(
    table: &RoutingTable,
    board: &HealthMap,
    time: SystemTime,
    regions: Option<&Arc<[RegionKey]>>,
    continents: bool,
) -> Sample {
    let services: Vec<_> = table.zones().iter().flat_map(|z| z.services()).collect();
    let keys: BTreeSet<&RegionKey> = services
        .iter()
        .flat_map(|s| s.plan.regions.iter().map(|r| &r.key))
        .collect();
    let regions = match regions {
        Some(known) if known.iter().eq(keys.iter().copied()) => Arc::clone(known),
        _ => keys.into_iter().cloned().collect(),
    };
    let mut answers = vec![0u64; regions.len()];
    let mut cells: BTreeMap<(u32, u8), u64> = BTreeMap::new();
    for service in &services {
        let counts = service.plan.shares.counts();
        for (region, counts) in service.plan.regions.iter().zip(counts) {
            let Ok(index) = regions.binary_search(&region.key) else {
                continue;
            };
            answers[index] += counts.iter().sum::<u64>();
            if continents {
                let used = counts.iter().enumerate().filter(|(_, n)| **n > 0);
                for (slot, n) in used {
                    *cells.entry((index as u32, slot as u8)).or_default() += n;
                }
            }
        }
    }
    let probe_ms = regions
        .iter()
        .map(|key| {
            let probe = board.get(key).and_then(|s| s.last_probe.as_ref());
            probe.map_or(f32::NAN, |p| p.latency.as_secs_f32() * 1000.0)
        })
        .collect();
    let load = regions
        .iter()
        .map(|key| {
            let load = board.get(key).and_then(|s| s.load);
            load.map_or(f32::NAN, |l| l as f32)
        })
        .collect();
    let continents = continents.then(|| {
        let cells = cells.into_iter();
        cells
            .map(|((region, slot), answers)| Cell {
                region,
                slot,
                answers,
            })
            .collect()
    });
    Sample {
        time,
        regions,
        answers: answers.into(),
        probe_ms,
        load,
        continents,
    }
}

#[cfg(test)]
impl Sample {
    /// Regions of llm.example.com. at `seconds`, with answers per continent slot.
    pub(crate) fn of_answers(seconds: u64, answers: &[(&str, usize, u64)]) -> Sample {
        let key = |region: &str| RegionKey {
            zone: "llm.example.com.".into(),
            region: region.into(),
        };
        let regions: BTreeSet<RegionKey> = answers.iter().map(|(r, _, _)| key(r)).collect();
        let regions: Arc<[RegionKey]> = regions.into_iter().collect();
        let index = |region: &str| regions.binary_search(&key(region)).unwrap_or(0);
        let mut totals = vec![0; regions.len()];
        let mut cells: Vec<Cell> = Vec::new();
        for &(region, slot, n) in answers {
            totals[index(region)] += n;
            cells.push(Cell {
                region: index(region) as u32,
                slot: slot as u8,
                answers: n,
            });
        }
        Sample {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            probe_ms: vec![f32::NAN; regions.len()].into(),
            load: vec![f32::NAN; regions.len()].into(),
            regions,
            answers: totals.into(),
            continents: Some(cells.into()),
        }
    }
}

/// The last [`KEPT`] samples, oldest first. Shared, so that publishing a copy every
/// [`SAMPLE_EVERY`] copies no sample.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Arc<Sample>>,
    taken: u64,
}

/// One point of a region's sparklines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub time: SystemTime,
    pub answers_per_second: f64,
    pub probe_ms: Option<f64>,
    /// The region's smoothed load, when known.
    pub load: Option<f64>,
}

impl History {
    /// Samples the table and board now and keeps the sample.
    pub fn take(&mut self, table: &RoutingTable, board: &HealthMap, time: SystemTime) {
        let continents = self.taken.is_multiple_of(CONTINENTS_EVERY);
        let regions = self.samples.back().map(|s| &s.regions);
        let sample = sample(table, board, time, regions, continents);
        self.record(sample);
    }

    pub(crate) fn record(&mut self, sample: Sample) {
        if self.samples.len() == KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(Arc::new(sample));
        self.taken += 1;
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().map(|s| &**s)
    }

    /// `key`'s answers per second between samples, and its probe latency at each, oldest
    /// first; `now`, when given, is the last point.
    pub fn rates(&self, key: &RegionKey, now: Option<&Sample>) -> Vec<Rate> {
        let samples: Vec<&Sample> = self.samples().chain(now).collect();
        let points = samples.iter().zip(samples.iter().skip(1));
        points
            .map(|(before, after)| {
                let answers = |s: &Sample| s.index(key).map_or(0, |i| s.answers[i]);
                let seconds = after
                    .time
                    .duration_since(before.time)
                    .unwrap_or_default()
                    .as_secs_f64();
                let answered = grown(answers(before), answers(after));
                let probe = after.index(key).map(|i| after.probe_ms[i]);
                let load = after.index(key).map(|i| after.load[i]);
                Rate {
                    time: after.time,
                    answers_per_second: if seconds > 0.0 {
                        answered as f64 / seconds
                    } else {
                        0.0
                    },
                    probe_ms: probe.filter(|ms| !ms.is_nan()).map(f64::from),
                    load: load.filter(|l| !l.is_nan()).map(f64::from),
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

/// Answers per region and client continent slot between the oldest sample with continents and
/// `now` (which must have them).
pub fn shares(history: &History, now: &Sample) -> BTreeMap<RegionKey, [u64; CONTINENT_SLOTS]> {
    let cells = |s: &Sample| -> BTreeMap<(RegionKey, u8), u64> {
        let cells = s.continents.as_deref().unwrap_or_default().iter();
        cells
            .filter_map(|c| {
                Some((
                    (s.regions.get(c.region as usize)?.clone(), c.slot),
                    c.answers,
                ))
            })
            .collect()
    };
    let oldest = history.samples().find(|s| s.continents.is_some());
    let before = oldest.map(cells).unwrap_or_default();
    let mut shares: BTreeMap<RegionKey, [u64; CONTINENT_SLOTS]> = BTreeMap::new();
    for ((key, slot), answers) in cells(now) {
        let was = before.get(&(key.clone(), slot)).copied().unwrap_or(0);
        if let Some(cell) = shares.entry(key).or_default().get_mut(usize::from(slot)) {
            *cell = grown(was, answers);
        }
    }
    shares
}

/// A record holding one sample taken now. Taken before DNS answers, it is the baseline every
/// answer since the start is counted from (a first sample taken later would lose the answers
/// given before it from the shares).
pub fn started(table: &RoutingTable, board: &HealthMap) -> History {
    let mut record = History::default();
    record.take(table, board, SystemTime::now());
    record
}

/// Samples every [`SAMPLE_EVERY`] after the record `history` starts with until `shutdown`,
/// publishing the record into `history`.
pub async fn run(
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    history: Arc<ArcSwap<History>>,
    shutdown: CancellationToken,
) -> Result<(), Infallible> {
    let mut record = History::clone(&history.load());
    let first = tokio::time::Instant::now() + SAMPLE_EVERY;
    let mut ticks = tokio::time::interval_at(first, SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        record.take(&table.load(), &board.load(), SystemTime::now());
        history.store(Arc::new(record.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUROPE: u8 = 3;

    fn key(region: &str) -> RegionKey {
        RegionKey {
            zone: "llm.example.com.".into(),
            region: region.into(),
        }
    }

    /// eu-west at `seconds` with `answers`, all from Europe, and a probe of `probe_ms`.
    fn at(seconds: u64, answers: u64, probe_ms: f32) -> Sample {
        Sample {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            regions: Arc::from(vec![key("eu-west")]),
            answers: Box::new([answers]),
            probe_ms: Box::new([probe_ms]),
            load: Box::new([f32::NAN]),
            continents: Some(Box::new([Cell {
                region: 0,
                slot: EUROPE,
                answers,
            }])),
        }
    }

    #[test]
    fn rates_are_answers_per_second_between_samples_and_survive_a_reset() {
        let mut history = History::default();
        for (t, n, ms) in [(0, 0, 10.0), (10, 500, 12.0), (20, 1500, 30.0)] {
            history.record(at(t, n, ms));
        }
        let now = at(30, 200, f32::NAN);
        let rates = history.rates(&key("eu-west"), Some(&now));
        let per_second: Vec<f64> = rates.iter().map(|r| r.answers_per_second).collect();
        assert_eq!(
            per_second,
            [50.0, 100.0, 20.0],
            "the last one restarted from zero"
        );
        assert_eq!(rates[1].probe_ms, Some(30.0));
        assert_eq!(rates[2].probe_ms, None, "not probed");
        let elsewhere = history.rates(&key("us-east"), None);
        assert!(
            elsewhere
                .iter()
                .all(|r| r.answers_per_second == 0.0 && r.probe_ms.is_none())
        );
    }

    #[test]
    fn the_record_is_bounded_and_shares_count_from_its_oldest_sample_with_continents() {
        let mut history = History::default();
        for t in 0..(KEPT as u64 + 10) {
            let mut sample = at(t * 10, t * 100, 1.0);
            if t % 6 != 0 {
                sample.continents = None;
            }
            history.record(sample);
        }
        assert_eq!(history.samples().count(), KEPT);
        let now = at(2000, 20_000, 1.0);
        let shares = shares(&history, &now);
        // The oldest kept is sample 10; the first with continents after it, sample 12.
        assert_eq!(shares[&key("eu-west")][usize::from(EUROPE)], 20_000 - 1_200);
    }
}
