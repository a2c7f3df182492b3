//! Response rate limiting (RRL), as Knot, NSD and BIND do it: a source that claims to be one
//! network is sent at most `rate` responses per second of one class for one name. Above that,
//! responses are dropped, except every `slip`-th, which goes out truncated (TC, no records), so
//! a real resolver behind that address retries over TCP while a forged address is no longer a
//! reflector: an attacker spoofing a victim's address gains nothing from us.
//!
//! Each UDP worker owns its [`RateLimiter`], so the query path writes no shared memory; as the
//! kernel spreads a network's datagrams over the workers by source port, each worker allows
//! its share of the rate. The table is fixed in size and set-associative: a flood from forged
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
            sets: zeroed_sets(),
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

    /// Whether the response of `class` for `name` to `source` goes out, counting it if so.
    pub fn check(&mut self, source: IpAddr, class: ResponseClass, name: &[u8]) -> Verdict {
        let source = source.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&source)) {
            return Verdict::Send;
        }
        let tag = self.hasher.hash_one((network_of(source), class, name)) | 1;
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
            return Verdict::Send;
        }
        self.log.limited(now, source, class);
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
}

/// The table, all entries empty, in memory the system hands out zeroed: pages no network has
/// touched cost nothing.
fn zeroed_sets() -> Box<[[Entry; WAYS]]> {
    // SAFETY: an Entry is two integers; all zeroes is a valid (empty) one.
    unsafe { Box::new_zeroed_slice(SETS).assume_init() }
}

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

    /// How many of `n` responses at the current time are sent whole.
    fn sent(limiter: &mut RateLimiter, source: &str, class: ResponseClass, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.check(ip(source), class, b"\x03api") == Verdict::Send)
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
        let other_name = limiter.check(ip("198.51.100.7"), ResponseClass::Positive, b"\x03www");
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
            .map(|_| limiter.check(ip("198.51.100.7"), ResponseClass::Positive, b""))
            .collect();
        use Verdict::{Drop, Send, Slip};
        assert_eq!(verdicts, [Send, Drop, Drop, Slip, Drop, Drop, Slip]);
        assert_eq!(limiter.counters.slipped.get(), 2);
        assert_eq!(limiter.counters.dropped.get(), 4);
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
            limiter.check(source, ResponseClass::Positive, b"\x03api");
        }
        assert_eq!(
            sent(&mut limiter, "198.51.100.7", ResponseClass::Positive, 20),
            0
        );
    }
}
