//! Counters the query path adds to without two cores ever writing the same cache line.
//!
//! A [`QueryCounter`] is a Prometheus counter whose value is split into shards, each in a
//! cache line of its own: a thread adds to its shard, and a scrape of `/metrics` sums them. A
//! UDP worker claims the shard of its index ([`claim_shard`]), so workers never share one;
//! other threads (TCP, tests) are given shards round-robin. This module only counts: which
//! counters exist and what they are called is [`crate::metrics`]'s business.

use std::{
    cell::Cell,
    sync::{
        LazyLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use crossbeam_utils::CachePadded;
use prometheus_client::metrics::counter::{Atomic, Counter};

/// A counter incremented on the query path.
pub type QueryCounter = Counter<u64, PerThread>;

/// Shards per counter: the cores, as a power of two, at most 16 (a counter then takes 2 KB).
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.next_power_of_two().min(16)
});

/// The next shard given to a thread that did not claim one.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread adds to shard `index` (modulo the shard count) from now on.
pub fn claim_shard(index: usize) {
    SHARD.set(Some(index));
}

fn current_shard() -> usize {
    SHARD.get().unwrap_or_else(|| {
        let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
        SHARD.set(Some(index));
        index
    })
}

/// The atomic behind a [`QueryCounter`]: one `u64` per shard, each padded to a cache line.
#[derive(Debug)]
pub struct PerThread {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for PerThread {
    fn default() -> PerThread {
        PerThread {
            shards: (0..*SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl PerThread {
    fn shard(&self) -> &AtomicU64 {
        // The shard count is a power of two.
        &self.shards[current_shard() & (self.shards.len() - 1)]
    }
}

impl Atomic<u64> for PerThread {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.shard().fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// A table of counters (e.g. answers by region and client continent) that the query path adds
/// to: each shard is a block of its own, starting on a cache line of its own, so a thread only
/// writes its block; reading sums the blocks. Far smaller than a [`QueryCounter`] per cell.
#[derive(Debug)]
pub struct CounterTable {
    cells: Box<[AtomicU64]>,
    len: usize,
    /// Cells from one shard's block to the next: `len` rounded up to whole cache lines.
    stride: usize,
}

/// `u64`s per 128 bytes, the line size crossbeam pads to (two lines on x86-64).
const PER_LINE: usize = 16;

impl CounterTable {
    pub fn new(len: usize) -> CounterTable {
        let stride = len.div_ceil(PER_LINE) * PER_LINE;
        CounterTable {
            cells: (0..stride * *SHARDS).map(|_| AtomicU64::new(0)).collect(),
            len,
            stride,
        }
    }

    /// Adds one to `cell`; a cell beyond the table is ignored.
    pub fn inc(&self, cell: usize) {
        if cell < self.len {
            let shard = current_shard() & (*SHARDS - 1);
            if let Some(counter) = self.cells.get(shard * self.stride + cell) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every cell's count, summed over the shards.
    pub fn sums(&self) -> Vec<u64> {
        let mut sums = vec![0; self.len];
        for block in self.cells.chunks(self.stride) {
            for (sum, cell) in sums.iter_mut().zip(block) {
                *sum += cell.load(Ordering::Relaxed);
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_counts_per_cell_over_every_thread() {
        let table = CounterTable::new(5);
        std::thread::scope(|scope| {
            for worker in 0..4 {
                let table = &table;
                scope.spawn(move || {
                    claim_shard(worker);
                    for cell in 0..5 {
                        for _ in 0..=cell {
                            table.inc(cell);
                        }
                    }
                    table.inc(5);
                });
            }
        });
        assert_eq!(table.sums(), [4, 8, 12, 16, 20]);
    }

    #[test]
    fn threads_add_to_their_own_shards_and_the_sum_is_the_count() {
        let counter = QueryCounter::default();
        std::thread::scope(|scope| {
            for worker in 0..4 {
                let counter = &counter;
                scope.spawn(move || {
                    claim_shard(worker);
                    for _ in 0..1000 {
                        counter.inc();
                    }
                });
            }
        });
        counter.inc();
        assert_eq!(counter.get(), 4001);
    }

    #[test]
    fn claimed_shards_differ_up_to_the_shard_count() {
        let counter = QueryCounter::default();
        let shards = *SHARDS;
        std::thread::scope(|scope| {
            for worker in 0..shards {
                let counter = &counter;
                scope.spawn(move || {
                    claim_shard(worker);
                    counter.inc_by(worker as u64 + 1);
                });
            }
        });
        let values: Vec<u64> = counter
            .inner()
            .shards
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let expected: Vec<u64> = (1..=shards as u64).collect();
        assert_eq!(values, expected);
    }
}
