//! The publisher's side of the fleet: peers' views taken, the majority that decides a region's
//! health, the vantage check, and this instance's own view and fleet board.

use super::{BOARD_EVERY, Publisher, RegionStatus};
use crate::{
    config::ZoneConfig,
    fleet::{
        Agreement, FleetBoard, PeerState, PeerSummary, ProbedRegion, RegionAgreement, View, agree,
        http::OwnView,
        ledger::{DrainLedger, clock_skew},
        median,
    },
    health::Health,
    region::RegionKey,
};
use arc_swap::ArcSwap;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};
use tokio::time;
use tracing::{info, warn};

/// The publisher's side of the fleet: the clock of drains, the records, the peers' views.
pub(super) struct FleetState {
    pub(super) instance: String,
    /// The drain records and the clock that orders them.
    pub(super) ledger: DrainLedger,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) peers: BTreeMap<String, PeerState>,
    pub(super) own_view: Arc<ArcSwap<OwnView>>,
    pub(super) board: Arc<ArcSwap<FleetBoard>>,
    pub(super) config_hash: String,
    pub(super) geoip_build: String,
    /// The SHA-256 of the latency table in force; empty without one.
    pub(super) latency_table: String,
    /// Whether this instance decided alone at the last agreement (logged when it changes).
    pub(super) alone: Option<bool>,
    pub(super) impaired: bool,
    /// Whether this instance's clock was more than the allowed drift from its peers' at the
    /// last view (logged when it changes).
    pub(super) clock_skewed: bool,
}

/// A peer's clock counts while its view is this recent.
const CLOCK_VIEW_FRESH: Duration = Duration::from_secs(5);

/// "2h 0m 3s ahead of", "5s behind".
pub(super) fn clock_words(offset: f64) -> String {
    let by = humantime::format_duration(Duration::from_secs(offset.abs().round() as u64));
    let way = if offset >= 0.0 { "ahead of" } else { "behind" };
    format!("{by} {way}")
}

/// A hash of every zone file's text, by origin: equal files give equal hashes on every instance.
pub(super) fn config_hash(zones: &[ZoneConfig]) -> String {
    let mut digests: Vec<(String, u64)> = zones
        .iter()
        .map(|zone| (zone.origin.to_string(), zone.digest))
        .collect();
    digests.sort();
    let text: Vec<String> = digests
        .iter()
        .map(|(origin, digest)| format!("{origin}={digest:016x}"))
        .collect();
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(text.join(",").as_bytes())
    )
}

impl Publisher {
    pub(super) fn peer_view(&mut self, peer: String, view: Result<View, String>, fetched: Instant) {
        let refusal = view
            .as_ref()
            .ok()
            .and_then(|view| self.refusal(&peer, view));
        let Some(state) = self.fleet.peers.get_mut(&peer) else {
            return;
        };
        match (view, refusal) {
            (Ok(_), Some((label, why))) => {
                self.metrics.count_refused_view(label);
                if state.error.as_deref() != Some(why.as_str()) {
                    warn!(peer = %peer, "peer {peer}'s view refused: {why}");
                }
                state.refuse(why);
            }
            (Ok(view), None) => {
                let records = view.drains.clone();
                if state.take(view, fetched, self.fleet.ledger.now()) {
                    self.metrics.count_refused_view("load");
                }
                for record in records {
                    self.take_drain(record);
                }
            }
            (Err(error), _) => {
                if state.error.is_none() {
                    warn!(peer = %peer, "peer {peer} unreachable: {error}");
                }
                state.error = Some(error);
            }
        }
        let keys: Vec<RegionKey> = self.health.keys().cloned().collect();
        for key in &keys {
            let before = self.health.get(key).map(RegionStatus::state);
            self.reagree(key);
            if let Some(before) = before {
                self.changed(key, before);
            }
        }
        self.check_vantage();
        self.check_clock();
        self.board_due
            .get_or_insert_with(|| time::Instant::now() + BOARD_EVERY);
    }

    /// Why a view from `peer` is not taken, with its metric label: it names this instance, or
    /// a peer at another address (a view must count once).
    fn refusal(&self, peer: &str, view: &View) -> Option<(&'static str, String)> {
        let name = &view.instance;
        if *name == self.fleet.instance {
            let why =
                format!("it names this instance ('{name}'): is the peer URL this instance's own?");
            return Some(("own_instance", why));
        }
        let twin = self.fleet.peers.values().find(|other| {
            other.url != peer && other.view.as_ref().is_some_and(|v| v.instance == *name)
        })?;
        let why = format!(
            "it names '{name}', whose view comes from {} already: two peers share a name",
            twin.url
        );
        Some(("duplicate_instance", why))
    }

    /// The fresh peers' clock offsets, this instance's clock minus theirs, in seconds.
    fn clock_offsets(&self) -> Vec<f64> {
        let now = Instant::now();
        let fresh = self.fleet.peers.values().filter(|peer| {
            peer.reachable()
                && peer
                    .fetched
                    .is_some_and(|at| now.saturating_duration_since(at) < CLOCK_VIEW_FRESH)
        });
        fresh
            .filter_map(|peer| peer.clock_offset.map(|o| -o))
            .collect()
    }

    /// The median offset of the fleet's clocks from this one (this one's included, at 0).
    pub(super) fn clock_offset(&self) -> Option<f64> {
        let offsets = self.clock_offsets();
        (!offsets.is_empty()).then(|| median(offsets.into_iter().chain([0.0])))?
    }

    /// How far this instance's clock is off the fleet's, when most of the fleet disagrees.
    pub(super) fn clock_skew(&self) -> Option<f64> {
        clock_skew(&self.clock_offsets())
    }

    /// Says (once) when this instance's clock leaves or rejoins the fleet's.
    fn check_clock(&mut self) {
        self.metrics
            .set_fleet_clock_offset(self.clock_offset().unwrap_or(0.0));
        let skew = self.clock_skew();
        if skew.is_some() == self.fleet.clock_skewed {
            return;
        }
        self.fleet.clock_skewed = skew.is_some();
        match skew {
            Some(offset) => warn!(
                "this instance's clock is {} most of its peers': drains taken here are refused \
                 until it is set right (peers refuse its records)",
                clock_words(offset)
            ),
            None => info!("this instance's clock agrees with its peers' again"),
        }
    }

    /// The fleet's agreement on a region from the fresh views, this instance's included; none
    /// for a region without a check (always up).
    pub(super) fn agreement(&self, key: &RegionKey) -> Option<(Agreement, usize)> {
        let status = self.health.get(key)?;
        let interval = self.settings.get(key)?.check.as_ref()?.interval;
        let now = Instant::now();
        let peers: Vec<Health> = self
            .fleet
            .peers
            .values()
            .filter_map(|peer| peer.fresh_vote(key, interval, now))
            .map(|vote| vote.probed)
            .collect();
        let fresh_peers = peers.len();
        Some((
            agree(std::iter::once(status.probed).chain(peers)),
            fresh_peers,
        ))
    }

    /// The fleet's load of a region: the median of this instance's figure and its peers' fresh
    /// ones.
    pub(super) fn fleet_load(&self, key: &RegionKey) -> Option<f64> {
        let status = self.health.get(key)?;
        let interval = self.settings.get(key)?.check.as_ref()?.interval;
        let now = Instant::now();
        let peers = self.fleet.peers.values();
        let figures = peers.filter_map(|peer| peer.fresh_vote(key, interval, now)?.load);
        median(status.probed_load.into_iter().chain(figures))
    }

    /// Sets the health answers use from the agreement (without publishing).
    pub(super) fn reagree(&mut self, key: &RegionKey) {
        let Some((agreement, fresh_peers)) = self.agreement(key) else {
            return;
        };
        let Some(status) = self.health.get_mut(key) else {
            return;
        };
        status.fleet = (fresh_peers > 0).then_some(agreement);
        if status.health == agreement.health {
            return;
        }
        status.health = agreement.health;
        status.since = SystemTime::now();
        status.reason = if agreement.health == status.probed {
            status.probe_reason.clone()
        } else {
            format!(
                "{} for the fleet: {} of {} instances see it down, {} degraded (this one's \
                 probes say {}: {})",
                agreement.health.as_str(),
                agreement.down,
                agreement.voters,
                agreement.degraded,
                status.probed.as_str(),
                status.probe_reason
            )
        };
    }

    /// Several regions down for this instance alone: its own vantage point is impaired.
    pub(super) fn check_vantage(&mut self) {
        let alone = self.health.values().all(|status| status.fleet.is_none());
        if !self.fleet.peers.is_empty() && self.fleet.alone != Some(alone) {
            if alone {
                warn!("no fresh view from any peer: this instance decides health alone");
            } else {
                info!("peers' views are fresh: health is decided by the fleet's majority");
            }
            self.fleet.alone = Some(alone);
        }
        let outvoted = self
            .health
            .values()
            .filter(|s| s.probed == Health::Down && s.fleet.is_some() && s.health != Health::Down)
            .count();
        let impaired = outvoted >= 2;
        if impaired != self.fleet.impaired {
            if impaired {
                warn!(
                    "this instance's vantage point is impaired: its probes see {outvoted} regions \
                     down that most of the fleet sees up"
                );
            } else {
                info!("this instance's vantage point agrees with the fleet again");
            }
            self.fleet.impaired = impaired;
            self.metrics.set_vantage_impaired(impaired);
        }
    }

    pub(super) fn view_now(&self, now: Instant) -> View {
        let regions = self.health.iter().filter(|(_, s)| s.checked);
        let regions = regions.map(|(key, status)| ProbedRegion {
            zone: key.zone.clone(),
            region: key.region.clone(),
            probed: status.probed,
            reason: status.probe_reason.clone(),
            probe_age_ms: status.probed_at.map(|at| {
                u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
            }),
            probes: status.probes,
            load: status.probed_load,
        });
        View {
            instance: self.fleet.instance.clone(),
            config_hash: self.fleet.config_hash.clone(),
            geoip_build: self.fleet.geoip_build.clone(),
            latency_table: self.fleet.latency_table.clone(),
            regions: regions.collect(),
            drains: self.fleet.ledger.drains().records().cloned().collect(),
            // Read as the view is served (`OwnView::now`).
            clock: None,
        }
    }

    /// The fleet's metrics, from the board that `/fleet` shows.
    pub(super) fn count_fleet(&self, board: &FleetBoard) {
        let differing =
            |differs: fn(&PeerSummary) -> bool| board.peers.iter().filter(|p| differs(p)).count();
        self.metrics.set_fleet_mismatches(
            differing(|p| !p.config_matches),
            differing(|p| !p.geoip_matches),
            differing(|p| !p.latency_matches),
        );
        let reachable = board.peers.iter().filter(|p| p.reachable).count();
        self.metrics
            .set_fleet_peers(reachable, board.peers.len() - reachable);
        for region in &board.regions {
            let disagreeing = match region.agreed {
                Health::Down => region.voters - region.down,
                Health::Degraded => region.voters - region.down - region.degraded,
                Health::Up => region.down + region.degraded,
            };
            self.metrics
                .set_fleet_disagreements(&region.zone, &region.region, disagreeing);
        }
    }

    pub(super) fn fleet_summary(&self, own: &View, now: Instant) -> FleetBoard {
        let peers = self.fleet.peers.values().map(|peer| {
            let view = peer.view.as_ref();
            PeerSummary {
                url: peer.url.clone(),
                instance: view.map(|v| v.instance.clone()),
                reachable: peer.reachable(),
                view_age_ms: peer.fetched.map(|at| {
                    u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
                }),
                error: peer.error.clone(),
                config_hash: view.map(|v| v.config_hash.clone()),
                config_matches: view.is_none_or(|v| v.config_hash == own.config_hash),
                geoip_build: view.map(|v| v.geoip_build.clone()),
                geoip_matches: view.is_none_or(|v| v.geoip_build == own.geoip_build),
                latency_table: view.map(|v| v.latency_table.clone()),
                latency_matches: view.is_none_or(|v| v.latency_table == own.latency_table),
            }
        });
        let regions = self.health.iter().filter(|(_, s)| s.checked);
        let regions = regions.map(|(key, status)| RegionAgreement {
            zone: key.zone.clone(),
            region: key.region.clone(),
            probed: status.probed,
            agreed: status.health,
            // Alone, this instance's probes are the one vote.
            voters: status.fleet.map_or(1, |a| a.voters),
            down: status
                .fleet
                .map_or(usize::from(status.probed == Health::Down), |a| a.down),
            degraded: status
                .fleet
                .map_or(usize::from(status.probed == Health::Degraded), |a| {
                    a.degraded
                }),
        });
        FleetBoard {
            instance: own.instance.clone(),
            config_hash: own.config_hash.clone(),
            geoip_build: own.geoip_build.clone(),
            latency_table: own.latency_table.clone(),
            deciding_alone: self.health.values().all(|s| s.fleet.is_none()),
            vantage_impaired: self.fleet.impaired,
            clock_offset_s: self.clock_offset(),
            clock_skewed: self.fleet.clock_skewed,
            peers: peers.collect(),
            regions: regions.collect(),
        }
    }
}
