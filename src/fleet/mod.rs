//! The fleet: the instances that serve one delegation (its NS set) and what they agree on.
//!
//! Each instance publishes its own [`View`] (what its probes say of every region, its drain
//! records, the hash of its zone files and the build of its GeoIP data) on its fleet listener
//! ([`http`]), and polls its peers' views. This module owns those words and the two rules that
//! make the fleet answer alike: a region is down (or degraded) only when a strict majority of
//! the fresh views say so ([`agree`]), and an operator's drain is the last one written, ordered
//! by a hybrid logical clock ([`ledger`]), kept in the state directory ([`store`]). It
//! decides nothing about answers: the publisher applies what is agreed, as it applies probes.

pub mod http;
pub mod ledger;
pub mod store;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{health::Health, region::RegionKey};

/// A view is fresh while its last probe of a region is younger than this many probe intervals.
pub const FRESH_INTERVALS: u32 = 3;

/// What one instance says: its own probes, its drain records, its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub instance: String,
    /// A hash of the zone files this instance serves (equal files, equal hash).
    pub config_hash: String,
    /// The build dates of its GeoIP databases, in lookup order.
    pub geoip_build: String,
    /// The SHA-256 of its latency table; empty without one.
    #[serde(default)]
    pub latency_table: String,
    pub regions: Vec<ProbedRegion>,
    pub drains: Vec<DrainRecord>,
    /// The instance's clock when it served the view (NTP64), so that peers see a skew before
    /// its records reach them.
    #[serde(default)]
    pub clock: Option<u64>,
}

/// One region as this instance's own probes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbedRegion {
    pub zone: String,
    pub region: String,
    pub probed: Health,
    pub reason: String,
    /// How long ago the last probe ended, when the view was served; none before the first.
    pub probe_age_ms: Option<u64>,
    /// Probes made so far: the sequence number of the last.
    pub probes: u64,
    /// The load its probes report, smoothed, when known.
    #[serde(default)]
    pub load: Option<f64>,
}

/// An operator's drain or undrain of one region, at any instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub zone: String,
    pub region: String,
    pub drained: bool,
    /// When, on the hybrid logical clock of the instance that took it: orders the records.
    #[serde(with = "hlc_text")]
    pub at: uhlc::Timestamp,
    /// The instance that took it.
    pub by: String,
}

impl DrainRecord {
    pub fn key(&self) -> RegionKey {
        RegionKey {
            zone: self.zone.clone(),
            region: self.region.clone(),
        }
    }
}

/// Timestamps as uhlc writes them (`<NTP64>/<id>`), so that `curl` shows them as text.
mod hlc_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(at: &uhlc::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(at)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<uhlc::Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| D::Error::custom(format!("timestamp '{text}': {e:?}")))
    }
}

/// The last drain record of every region: last writer wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drains(BTreeMap<RegionKey, DrainRecord>);

impl Drains {
    pub fn get(&self, key: &RegionKey) -> Option<&DrainRecord> {
        self.0.get(key)
    }

    pub fn records(&self) -> impl Iterator<Item = &DrainRecord> {
        self.0.values()
    }

    /// Puts `record` in place of the region's last, or forgets the region's record.
    fn replace(&mut self, key: &RegionKey, record: Option<DrainRecord>) {
        match record {
            Some(record) => self.0.insert(key.clone(), record),
            None => self.0.remove(key),
        };
    }

    /// Keeps `record` if it is newer than the region's last; whether it was.
    pub fn merge(&mut self, record: DrainRecord) -> bool {
        let key = record.key();
        match self.0.get(&key) {
            Some(kept) if kept.at >= record.at => false,
            _ => {
                self.0.insert(key, record);
                true
            }
        }
    }
}

impl FromIterator<DrainRecord> for Drains {
    fn from_iter<I: IntoIterator<Item = DrainRecord>>(records: I) -> Drains {
        let mut drains = Drains::default();
        for record in records {
            drains.merge(record);
        }
        drains
    }
}

/// The fleet as one instance sees it: `GET /fleet` on the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetBoard {
    pub instance: String,
    pub config_hash: String,
    pub geoip_build: String,
    /// The SHA-256 of its latency table; empty without one.
    #[serde(default)]
    pub latency_table: String,
    /// No peer's view is fresh: this instance's probes alone decide.
    pub deciding_alone: bool,
    /// Its probes see several regions down that most of the fleet sees up.
    pub vantage_impaired: bool,
    /// This instance's clock minus the median of its fresh peers', in seconds.
    #[serde(default)]
    pub clock_offset_s: Option<f64>,
    /// That offset is beyond the allowed drift: drains taken here are refused.
    #[serde(default)]
    pub clock_skewed: bool,
    pub peers: Vec<PeerSummary>,
    pub regions: Vec<RegionAgreement>,
}

/// One peer, as last fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerSummary {
    pub url: String,
    pub instance: Option<String>,
    pub reachable: bool,
    /// How long ago its view was last fetched.
    pub view_age_ms: Option<u64>,
    pub error: Option<String>,
    pub config_hash: Option<String>,
    pub config_matches: bool,
    pub geoip_build: Option<String>,
    pub geoip_matches: bool,
    #[serde(default)]
    pub latency_table: Option<String>,
    #[serde(default)]
    pub latency_matches: bool,
}

/// A region: what this instance's probes say, and what the fleet agreed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionAgreement {
    pub zone: String,
    pub region: String,
    pub probed: Health,
    pub agreed: Health,
    pub voters: usize,
    pub down: usize,
    pub degraded: usize,
}

/// What the fleet's transport hands to the publisher.
pub enum FleetEvent {
    /// A peer's view, or why it could not be fetched, at `fetched`.
    PeerView {
        peer: String,
        view: Result<View, String>,
        fetched: Instant,
    },
    /// A drain or undrain a peer took; `done` is told what became of it.
    PeerDrain {
        record: DrainRecord,
        done: tokio::sync::oneshot::Sender<ledger::Taken>,
    },
}

/// A peer's view as last fetched, or why it could not be.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub url: String,
    pub view: Option<View>,
    /// When the view was fetched.
    pub fetched: Option<Instant>,
    pub error: Option<String>,
    /// Its clock minus ours when its view arrived, in seconds.
    pub clock_offset: Option<f64>,
    /// The view's regions by key, what its probes say and how long ago: every region is
    /// agreed on at every view, so each looks up its own vote.
    votes: BTreeMap<RegionKey, Vote>,
}

impl PeerState {
    pub fn new(url: &str) -> PeerState {
        PeerState {
            url: url.to_owned(),
            view: None,
            fetched: None,
            error: None,
            clock_offset: None,
            votes: BTreeMap::new(),
        }
    }

    /// Takes a view fetched at `fetched`, when our clock read `our_clock`. A load figure out of
    /// range counts as unknown, as a probe's would; whether the view had one.
    pub fn take(&mut self, view: View, fetched: Instant, our_clock: uhlc::NTP64) -> bool {
        let mut bad_load = false;
        self.votes = view
            .regions
            .iter()
            .map(|r| {
                let key = RegionKey {
                    zone: r.zone.clone(),
                    region: r.region.clone(),
                };
                let load = r.load.filter(|figure| {
                    let valid = crate::health::load_report::checked(*figure).is_ok();
                    bad_load |= !valid;
                    valid
                });
                let vote = Vote {
                    probed: r.probed,
                    probe_age_ms: r.probe_age_ms,
                    load,
                };
                (key, vote)
            })
            .collect();
        self.clock_offset = view.clock.map(|theirs| {
            let ours = our_clock.as_secs_f64();
            uhlc::NTP64(theirs).as_secs_f64() - ours
        });
        self.view = Some(view);
        self.fetched = Some(fetched);
        self.error = None;
        bad_load
    }

    /// Counts the peer out: its view was refused, for `why`.
    pub fn refuse(&mut self, why: String) {
        self.view = None;
        self.votes.clear();
        self.clock_offset = None;
        self.error = Some(why);
    }

    pub fn reachable(&self) -> bool {
        self.error.is_none() && self.view.is_some()
    }

    /// What this peer's probes say of `key`, if its view of it is fresh at `now`: its last
    /// probe was younger than [`FRESH_INTERVALS`] intervals when the view was served, and the
    /// view was fetched since then (allowing for the polls it could have missed).
    pub fn fresh_vote(&self, key: &RegionKey, interval: Duration, now: Instant) -> Option<Vote> {
        let fetched = self.fetched?;
        let vote = self.votes.get(key)?;
        let window = interval * FRESH_INTERVALS;
        let probe_fresh = Duration::from_millis(vote.probe_age_ms?) < window;
        let fetch_fresh =
            now.saturating_duration_since(fetched) < window + http::POLL_EVERY * FRESH_INTERVALS;
        (probe_fresh && fetch_fresh).then_some(*vote)
    }
}

/// What one peer's probes say of one region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    pub probed: Health,
    pub probe_age_ms: Option<u64>,
    pub load: Option<f64>,
}

/// The median of `figures`: the fleet's load of a region from the figures known (an instance
/// that cannot read it does not count), so that every instance moves the same share of
/// clients; and the peers' clock against ours, so that one skewed peer cannot move it.
pub fn median(figures: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut figures: Vec<f64> = figures.into_iter().collect();
    figures.sort_by(f64::total_cmp);
    let middle = figures.len() / 2;
    match figures.len() {
        0 => None,
        n if n % 2 == 1 => Some(figures[middle]),
        _ => Some((figures[middle - 1] + figures[middle]) / 2.0),
    }
}

/// What the fresh views say of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    pub health: Health,
    /// Views that counted, this instance's included.
    pub voters: usize,
    pub down: usize,
    pub degraded: usize,
}

/// The fleet's health for a region from the fresh views: down when a strict majority says
/// down, degraded when a strict majority says down or degraded, else up (ties lean up, as
/// Route 53's 18% does).
pub fn agree(votes: impl IntoIterator<Item = Health>) -> Agreement {
    let (mut voters, mut down, mut degraded) = (0, 0, 0);
    for vote in votes {
        voters += 1;
        match vote {
            Health::Down => down += 1,
            Health::Degraded => degraded += 1,
            Health::Up => {}
        }
    }
    let health = if 2 * down > voters {
        Health::Down
    } else if 2 * (down + degraded) > voters {
        Health::Degraded
    } else {
        Health::Up
    };
    Agreement {
        health,
        voters,
        down,
        degraded,
    }
}

/// The instance's name: `--nsid`'s text, else the host's name.
pub fn instance_name(nsid: Option<&str>) -> String {
    nsid.map_or_else(
        || gethostname::gethostname().to_string_lossy().into_owned(),
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Degraded, Down, Up};

    #[test]
    fn a_region_is_down_only_for_a_strict_majority() {
        assert_eq!(agree([Down]).health, Down, "alone, an instance decides");
        assert_eq!(
            agree([Down, Up, Up]).health,
            Up,
            "one vantage point is not the fleet"
        );
        assert_eq!(agree([Down, Down, Up]).health, Down);
        assert_eq!(agree([Down, Up]).health, Up, "a tie leans up");
        assert_eq!(agree([Down, Degraded, Up]).health, Degraded);
        assert_eq!(agree([Degraded, Up, Up, Up]).health, Up);
        let agreement = agree([Down, Down, Degraded, Up, Up]);
        assert_eq!(
            (agreement.voters, agreement.down, agreement.degraded),
            (5, 2, 1)
        );
        assert_eq!(agreement.health, Degraded);
    }

    fn record(drained: bool, hlc: &uhlc::HLC) -> DrainRecord {
        DrainRecord {
            zone: "llm.example.com.".into(),
            region: "eu-west".into(),
            drained,
            at: hlc.new_timestamp(),
            by: "ns1".into(),
        }
    }

    #[test]
    fn the_last_drain_written_wins_whatever_the_order_it_arrives_in() {
        let (a, b) = (uhlc::HLC::default(), uhlc::HLC::default());
        let first = record(true, &a);
        b.update_with_timestamp(&first.at).expect("close clocks");
        let second = record(false, &b);
        let mut in_order = Drains::default();
        assert!(in_order.merge(first.clone()));
        assert!(in_order.merge(second.clone()));
        let mut reversed = Drains::default();
        assert!(reversed.merge(second.clone()));
        assert!(!reversed.merge(first), "an older record changes nothing");
        assert_eq!(in_order, reversed);
        assert!(!reversed.records().next().expect("kept").drained);
    }

    #[test]
    fn records_read_back_as_written() {
        let record = record(true, &uhlc::HLC::default());
        let text = serde_json::to_string(&record).expect("json");
        let back: DrainRecord = serde_json::from_str(&text).expect("read back");
        assert_eq!(back, record);
        assert!(text.contains(&record.at.to_string()), "{text}");
    }

    #[test]
    fn a_peer_view_counts_while_its_probe_is_fresh() {
        let key = RegionKey {
            zone: "llm.example.com.".into(),
            region: "eu-west".into(),
        };
        let now = Instant::now();
        let mut peer = PeerState::new("http://peer");
        let view = |age| View {
            regions: vec![ProbedRegion {
                zone: key.zone.clone(),
                region: key.region.clone(),
                probed: Down,
                reason: "refused".into(),
                probe_age_ms: Some(age),
                probes: 7,
                load: Some(0.9),
            }],
            ..View::default()
        };
        peer.take(view(2_900), now, uhlc::system_time_clock());
        let interval = Duration::from_secs(1);
        let vote = peer.fresh_vote(&key, interval, now).expect("fresh");
        assert_eq!((vote.probed, vote.load), (Down, Some(0.9)));
        let later = now + Duration::from_millis(3_800);
        assert_eq!(
            peer.fresh_vote(&key, interval, later),
            None,
            "not fetched since"
        );
        peer.take(view(3_000), now, uhlc::system_time_clock());
        assert_eq!(
            peer.fresh_vote(&key, interval, now),
            None,
            "3 intervals old"
        );
    }

    #[test]
    fn the_fleets_figure_is_the_median_of_the_known_ones() {
        assert_eq!(median([]), None);
        assert_eq!(median([0.9]), Some(0.9));
        assert_eq!(median([1.2, 0.2, 0.9]), Some(0.9));
        assert_eq!(median([1.0, 0.5]), Some(0.75));
    }
}
