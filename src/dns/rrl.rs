//! Response rate limiting (RRL), as Knot, NSD and BIND do it: a source that claims to be one
//! network is sent at most `rate` responses per second of one class for one name. Above that,
//! responses are dropped, except every `slip`-th, which goes out truncated (TC, no records), so
//! a real resolver behind that address retries over TCP while a forged address is no longer a
//! reflector: an attacker spoofing a victim's address gains nothing from us.
//!
//! A response is counted for the client network it answers for too (the ECS address's /24 or
//! /56): a big resolver asks our name from a few networks of its own once per TTL for each of
//! its clients' networks, and each of those is a different response, which the rate must not
//! hold back. What bounds a flood of forged queries whose ECS changes at every query is the
//! source's byte budget: what it is sent stays within [`AMPLIFICATION`] times what it sent
//! (past a burst of [`BURST_BYTES`]), so a forged source is never a reflector that amplifies.
//!
//! Each UDP worker owns its [`RateLimiter`], so the query path writes no shared memory; as the
//! kernel spreads a network's datagrams over the workers by source port, each worker allows
//! its share of the rate. The tables are fixed in size and set-associative: a flood from forged
//! random sources evicts the least limited entries, never the network being limited.
//! This module only decides; it neither sends nor parses.

use std::{
    hash::BuildHasher,
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::network_of;
use crate::counter::QueryCounter;

/// Entries per set: one set of four fills one 64-byte cache line.
const WAYS: usize = 4;
/// Sets per worker (4 * 16,384 entries, 1 MiB, touched only as networks come).
const SETS: usize = 16_384;
/// A network may send a second's worth of responses at once before it is limited.
const BURST: Duration = Duration::from_secs(1);
/// Limiting is logged at most this often per worker, with a count of what was not logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// A source network may be sent at most this many times the bytes it sent us.
pub const AMPLIFICATION: i64 = 2;
/// Past its queries' allowance, a source network may be sent this many bytes at once.
pub const BURST_BYTES: i64 = 64 * 1024;
/// Sets of the byte budgets per worker (4 * 4,096 source networks).
const BUDGET_SETS: usize = 4_096;

/// What the operator asks for.
#[derive(Debug, Clone)]
pub struct RrlSettings {
    /// Responses per second of one class, for one name, to one client network; 0 turns RRL off.
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated; 0 drops them all, 1 truncates all.
    pub slip: u32,
    /// Sources never limited (monitoring, one's own resolvers).
    pub exempt: Vec<IpNet>,
}

/// The kinds of response limited apart: an attack with random names (NXDOMAIN) does not eat a
/// resolver's allowance of real answers. NXDOMAIN is counted per zone, errors per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseClass {
    /// An answer or a referral.
    Positive,
    NoData,
    NxDomain,
    /// REFUSED, FORMERR, NOTIMP, SERVFAIL, BADVERS.
    Error,
}

impl ResponseClass {
    fn describe(self) -> &'static str {
        match self {
            ResponseClass::Positive => "answers",
            ResponseClass::NoData => "NODATA",
            ResponseClass::NxDomain => "NXDOMAIN",
            ResponseClass::Error => "errors",
        }
    }
}

/// What one response is counted as: its class, the name it is counted for, and the client
/// network it answers for (an ECS address's /24 or /56, when the query gave one).
#[derive(Debug, Clone, Copy)]
pub struct RateKey<'a> {
    pub class: ResponseClass,
    pub name: &'a [u8],
    pub client: Option<[u8; 8]>,
}

impl RateKey<'_> {
    /// An error response: counted per network only.
    pub fn error() -> RateKey<'static> {
        RateKey {
            class: ResponseClass::Error,
            name: &[],
            client: None,
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated: header, question and OPT, with TC.
    Slip,
    Drop,
}

/// One worker's table of recent responses per (network, class, name).
pub struct RateLimiter {
    sets: Box<[[Entry; WAYS]]>,
    /// Per source network, the bytes it may still be sent.
    budgets: Box<[[Budget; WAYS]]>,
    /// The budget the response being answered is charged to, once its size is known.
    pending: Option<(usize, usize)>,
    hasher: foldhash::fast::RandomState,
    /// Nanoseconds one response costs a key at this worker's share of the rate.
    interval: u64,
    slip: u32,
    limited_since_slip: u32,
    exempt: Box<[IpNet]>,
    epoch: Instant,
    /// Nanoseconds since `epoch`, as of the batch being answered.
    now: u64,
    counters: RrlCounters,
    log: LimitLog,
}

/// Responses RRL did not send whole.
#[derive(Clone)]
pub struct RrlCounters {
    pub dropped: QueryCounter,
    pub slipped: QueryCounter,
}

/// A key's generic cell rate (GCRA): `tag` names the key, `due` is when its allowance is spent.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    tag: u64,
    due: u64,
}

/// A source network's bytes: `credit` grows by [`AMPLIFICATION`] times each query's size, up
/// to [`BURST_BYTES`], and shrinks by each response's. `tag` 0 is an empty entry.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    tag: u64,
    credit: i64,
}

impl RateLimiter {
    /// A limiter for one of `workers` workers; `None` when RRL is off.
    pub fn new(
        settings: &RrlSettings,
        workers: usize,
        counters: RrlCounters,
    ) -> Option<RateLimiter> {
        if settings.rate == 0 {
            return None;
        }
        Some(RateLimiter {
            sets: zeroed_sets(SETS),
            budgets: zeroed_sets(BUDGET_SETS),
            pending: None,
            hasher: foldhash::fast::RandomState::default(),
            interval: (nanos(Duration::from_secs(1)) * workers.max(1) as u64
                / u64::from(settings.rate))
            .max(1),
            slip: settings.slip,
            limited_since_slip: 0,
            exempt: settings.exempt.clone().into_boxed_slice(),
            epoch: Instant::now(),
            now: 0,
            counters,
            log: LimitLog::default(),
        })
    }

    /// The time of the batch about to be answered: one clock read per batch, not per packet.
    pub fn set_now(&mut self, now: Instant) {
        self.now = nanos(now.saturating_duration_since(self.epoch));
    }

    /// Whether the response `key` to a query of `asked` bytes from `source` goes out, counting
    /// it if so. The response's size is charged to the source by [`RateLimiter::sent`].
    pub fn check(&mut self, source: IpAddr, key: RateKey<'_>, asked: usize) -> Verdict {
        let source = source.to_canonical();
        self.pending = None;
        if self.exempt.iter().any(|net| net.contains(&source)) {
            return Verdict::Send;
        }
        let network = network_of(source);
        let within_budget = self.credit(network, asked);
        if within_budget && self.within_rate(network, key) {
            return Verdict::Send;
        }
        self.log.limited(self.now, source, key.class);
        self.limited_since_slip += 1;
        if self.slip > 0 && self.limited_since_slip >= self.slip {
            self.limited_since_slip = 0;
            self.counters.slipped.inc();
            Verdict::Slip
        } else {
            self.counters.dropped.inc();
            Verdict::Drop
        }
    }

    /// Charges a response of `bytes` that goes out to the source last checked.
    pub fn sent(&mut self, bytes: usize) {
        if let Some((set, way)) = self.pending.take() {
            let budget = &mut self.budgets[set][way];
            budget.credit -= i64::try_from(bytes).unwrap_or(i64::MAX);
        }
    }

    /// Adds a query of `asked` bytes to the budget of `network`: whether it may be sent more.
    fn credit(&mut self, network: [u8; 8], asked: usize) -> bool {
        let tag = self.hasher.hash_one(network) | 1;
        let index = (tag >> 32) as usize % BUDGET_SETS;
        let set = &mut self.budgets[index];
        let way = match set.iter().position(|b| b.tag == tag) {
            Some(way) => way,
            None => {
                // The fullest budget is the one that matters least: a source being limited
                // keeps its entry.
                let (way, _) = set
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, b)| if b.tag == 0 { i64::MAX } else { b.credit })
                    .expect("a set has WAYS entries");
                set[way] = Budget {
                    tag,
                    credit: BURST_BYTES,
                };
                way
            }
        };
        let budget = &mut set[way];
        let asked = i64::try_from(asked).unwrap_or(i64::MAX);
        budget.credit = budget
            .credit
            .saturating_add(AMPLIFICATION.saturating_mul(asked))
            .min(BURST_BYTES);
        self.pending = Some((index, way));
        budget.credit > 0
    }

    /// Whether `key` to `network` is within the rate, counting it if so.
    fn within_rate(&mut self, network: [u8; 8], key: RateKey<'_>) -> bool {
        let tag = self
            .hasher
            .hash_one((network, key.class, key.name, key.client))
            | 1;
        let now = self.now;
        let set = &mut self.sets[(tag >> 32) as usize % SETS];
        let entry = match set.iter().position(|e| e.tag == tag) {
            Some(way) => &mut set[way],
            None => {
                // The entry whose allowance is least spent is the one that matters least.
                let oldest = set.iter_mut().min_by_key(|e| e.due);
                let entry = oldest.expect("a set has WAYS entries");
                *entry = Entry { tag, due: now };
                entry
            }
        };
        let due = entry.due.max(now);
        if due - now < nanos(BURST) {
            entry.due = due + self.interval;
            return true;
        }
        false
    }
}

/// A table of `sets` sets, all entries empty, in memory the system hands out zeroed: pages no
/// network has touched cost nothing.
fn zeroed_sets<T: Zeroed>(sets: usize) -> Box<[[T; WAYS]]> {
    // SAFETY: `Zeroed` types are plain integers, for which all zeroes is a valid (empty) value.
    unsafe { Box::new_zeroed_slice(sets).assume_init() }
}

/// Entries whose all-zero bytes are a valid empty entry.
trait Zeroed {}
impl Zeroed for Entry {}
impl Zeroed for Budget {}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Says that responses are being limited, at most once per [`LOG_EVERY`].
#[derive(Default)]
struct LimitLog {
    last: Option<u64>,
    unlogged: u64,
}

impl LimitLog {
    fn limited(&mut self, now: u64, source: IpAddr, class: ResponseClass) {
        if self.last.is_some_and(|last| now - last < nanos(LOG_EVERY)) {
            self.unlogged += 1;
            return;
        }
        self.last = Some(now);
        let prefix = if source.is_ipv4() { 24 } else { 56 };
        let network = IpNet::new(source, prefix).map(|net| net.trunc());
        let network = network.unwrap_or_else(|_| IpNet::from(source));
        tracing::info!(
            "response rate limit: {} to {network} dropped or truncated ({} more limited \
             responses in the last {}s)",
            class.describe(),
            std::mem::take(&mut self.unlogged),
            LOG_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32, workers: usize) -> RateLimiter {
        let settings = RrlSettings {
            rate,
            slip,
            exempt: vec!["192.0.2.128/25".parse().expect("net")],
        };
        let counters = RrlCounters {
            dropped: QueryCounter::default(),
            slipped: QueryCounter::default(),
        };
        RateLimiter::new(&settings, workers, counters).expect("on")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn key(class: ResponseClass, name: &[u8]) -> RateKey<'_> {
        RateKey {
            class,
            name,
            client: None,
        }
    }

    /// An answer for the client network numbered `n`.
    fn for_client(n: u32) -> RateKey<'static> {
        let mut network = [0; 8];
        network[..4].copy_from_slice(&n.to_be_bytes());
        RateKey {
            client: Some(network),
            ..key(ResponseClass::Positive, b"\x03api")
        }
    }

    /// The verdict on a response of 60 bytes to a query of 50, charged as it goes out.
    fn answered(limiter: &mut RateLimiter, source: &str, key: RateKey<'_>) -> Verdict {
        let verdict = limiter.check(ip(source), key, 50);
        limiter.sent(60);
        verdict
    }

    /// How many of `n` responses at the current time are sent whole.
    fn sent(limiter: &mut RateLimiter, source: &str, class: ResponseClass, n: usize) -> usize {
        (0..n)
            .filter(|_| answered(limiter, source, key(class, b"\x03api")) == Verdict::Send)
            .count()
    }

    #[test]
    fn a_burst_of_one_seconds_rate_is_sent_then_the_rate() {
        let mut limiter = limiter(100, 2, 1);
        let start = Instant::now();
        limiter.set_now(start);
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 300),
            100
        );
        limiter.set_now(start + Duration::from_millis(500));
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 300),
            50
        );
    }

    #[test]
    fn each_worker_allows_its_share() {
        let mut limiter = limiter(100, 2, 4);
        limiter.set_now(Instant::now());
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 300),
            25
        );
    }

    #[test]
    fn the_network_class_and_name_are_limited_apart() {
        let mut limiter = limiter(10, 2, 1);
        limiter.set_now(Instant::now());
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 50),
            10
        );
        // The same /24 shares the allowance; the next /24 and another class do not.
        assert_eq!(
            sent(&mut limiter, "198.51.100.200", ResponseClass::Positive, 50),
            0
        );
        assert_eq!(
            sent(&mut limiter, "198.51.101.7", ResponseClass::Positive, 50),
            10
        );
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::NxDomain, 50),
            10
        );
        let other_name = answered(
            &mut limiter,
            "198.51.100.7",
            key(ResponseClass::Positive, b"\x03www"),
        );
        assert_eq!(other_name, Verdict::Send);
        // An IPv6 /56 is one network.
        assert_eq!(
            sent(&mut limiter, "2001:db8:0:1::1", ResponseClass::Error, 50),
            10
        );
        assert_eq!(
            sent(&mut limiter, "2001:db8:0:2::1", ResponseClass::Error, 50),
            0
        );
    }

    #[test]
    fn every_slip_th_limited_response_is_truncated() {
        let mut limiter = limiter(1, 3, 1);
        limiter.set_now(Instant::now());
        let verdicts: Vec<Verdict> = (0..7)
            .map(|_| {
                answered(
                    &mut limiter,
                    "198.51.100.7",
                    key(ResponseClass::Positive, b""),
                )
            })
            .collect();
        use Verdict::{Drop, Send, Slip};
        assert_eq!(verdicts, [Send, Drop, Drop, Slip, Drop, Drop, Slip]);
        assert_eq!(limiter.counters.slipped.get(), 2);
        assert_eq!(limiter.counters.dropped.get(), 4);
    }

    #[test]
    fn a_resolver_asking_for_each_of_its_clients_networks_is_not_held_back() {
        let mut limiter = limiter(10, 2, 1);
        limiter.set_now(Instant::now());
        let client = for_client;
        let whole = (0..5_000)
            .filter(|&n| answered(&mut limiter, "198.51.100.7", client(n)) == Verdict::Send)
            .count();
        assert_eq!(whole, 5_000, "5,000 client networks, each asked once");
        // One client network asked again and again is limited as ever.
        let one = (0..50)
            .filter(|_| answered(&mut limiter, "198.51.100.7", client(7)) == Verdict::Send)
            .count();
        assert_eq!(one, 9, "the rate of 10, one spent already");
    }

    #[test]
    fn a_source_is_sent_at_most_twice_its_bytes_past_a_burst() {
        let mut flooded = limiter(1_000_000, 1, 1);
        flooded.set_now(Instant::now());
        let (mut asked, mut sent) = (0, 0);
        for n in 0..20_000u32 {
            let key = for_client(n);
            // Queries of 80 bytes, answers of 300 (signed); a slip is the query's size.
            let verdict = flooded.check(ip("198.51.100.7"), key, 80);
            let bytes = match verdict {
                Verdict::Send => 300,
                Verdict::Slip => 80,
                Verdict::Drop => 0,
            };
            flooded.sent(bytes);
            asked += 80;
            sent += bytes;
        }
        let burst = usize::try_from(BURST_BYTES).expect("burst");
        // A response goes out while any credit is left: one may overdraw it.
        assert!(sent <= 2 * asked + burst + 300, "sent {sent} for {asked}");
        assert!(sent >= 2 * asked - 300, "and no less: {sent} for {asked}");
        // Answers smaller than twice their queries are never held back for their bytes.
        let mut small = limiter(1_000_000, 1, 1);
        small.set_now(Instant::now());
        for n in 0..20_000u32 {
            let key = for_client(n);
            assert_eq!(small.check(ip("198.51.100.7"), key, 80), Verdict::Send);
            small.sent(110);
        }
    }

    #[test]
    fn exempt_sources_are_never_limited() {
        let mut limiter = limiter(1, 0, 1);
        limiter.set_now(Instant::now());
        assert_eq!(
            sent(&mut limiter, "192.0.2.200", ResponseClass::Positive, 50),
            50
        );
        assert_eq!(
            sent(&mut limiter, "192.0.2.100", ResponseClass::Positive, 50),
            1
        );
    }

    #[test]
    fn a_flood_of_forged_sources_does_not_free_a_limited_network() {
        let mut limiter = limiter(10, 0, 1);
        limiter.set_now(Instant::now());
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 20),
            10
        );
        // Ten times as many one-off sources as the table has entries.
        for n in 0..(SETS * WAYS * 10) as u32 {
            let source = IpAddr::from((0x0A00_0000 + (n << 8)).to_be_bytes());
            limiter.check(source, key(ResponseClass::Positive, b"\x03api"), 50);
        }
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 20),
            0
        );
    }
}
