//! The publisher: the one owner of every region's health, and the builder of the routing
//! snapshots that queries read.
//!
//! It takes probe reports from the probers, new configurations from hot reload and drain
//! requests from the admin API, one at a time; on every state change it builds a new
//! [`RoutingTable`] from the plan and the regions' states and swaps it in with arc-swap, and it
//! publishes the health board the admin API shows (with every state change at once, and a
//! probe's details within 250 ms). It never probes, reads files or answers queries.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
    time,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::{Check, ZoneConfig},
    events::{Notice, Notices},
    fleet::{
        Agreement, DrainRecord, Drains, FleetBoard, FleetEvent, PeerState, PeerSummary,
        ProbedRegion, RegionAgreement, View, agree, agreed_load,
        http::OwnView,
        store::{self, StoreError},
    },
    geo::{GeoError, GeoIp},
    health::{Health, Outcome, ProbeReport, ProbeResult, load::smoothing_weight},
    metrics::Metrics,
    region::{RegionKey, State, States},
    routing::{
        Compilation, GeoSource, Loads, Plan, RoutingTable, ServicePlan, WeighedCounters,
        load::{Controller, Reading, ShiftKey},
    },
    timeline::{LoadShift, StateChange, Timeline},
};

/// Everything known about a region's health, for routing and for the admin API.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// The health answers use: this instance's probes, or the fleet's agreement.
    pub health: Health,
    /// What this instance's own probes say, and why, and when they last said it.
    pub probed: Health,
    pub probe_reason: String,
    pub probed_at: Option<Instant>,
    /// How the fleet voted, when peers' views counted.
    pub fleet: Option<Agreement>,
    pub drained: bool,
    /// Whether the region has a check at all (without one it is always up).
    pub checked: bool,
    pub reason: String,
    pub since: SystemTime,
    pub last_probe: Option<ProbeResult>,
    pub probes: u64,
    pub error_rate: f64,
    pub slow_rate: f64,
    /// The load routing uses: the median of the fleet's fresh figures, this instance's
    /// included (its own alone outside a fleet); `None` while unknown.
    pub load: Option<f64>,
    /// The load this instance's own probes report, smoothed.
    pub probed_load: Option<f64>,
    /// Why the last probe gave no load figure, when its check reads one.
    pub load_note: Option<String>,
}

impl RegionStatus {
    pub fn state(&self) -> State {
        match (self.drained, self.health) {
            (true, _) => State::Drained,
            (false, Health::Up) => State::Up,
            (false, Health::Degraded) => State::Degraded,
            (false, Health::Down) => State::Down,
        }
    }
}

pub type HealthMap = BTreeMap<RegionKey, RegionStatus>;

/// The state of every region, as routing needs it.
pub fn states(health: &HealthMap) -> States {
    health
        .iter()
        .map(|(key, status)| (key.clone(), status.state()))
        .collect()
}

/// The reason of a checked region before its first probe.
const NOT_PROBED_YET: &str = "not probed yet";

/// Every region up (or drained, as configured) before any probe.
pub fn initial_health(zones: &[ZoneConfig]) -> HealthMap {
    let now = SystemTime::now();
    let regions = zones.iter().flat_map(ZoneConfig::keyed_regions);
    regions
        .map(|(key, region)| {
            let reason = match (&region.check, region.drained) {
                (_, true) => "drained in the zone file",
                (Some(_), false) => NOT_PROBED_YET,
                (None, false) => "no check: always up",
            };
            let status = RegionStatus {
                health: Health::Up,
                probed: Health::Up,
                probe_reason: reason.into(),
                probed_at: None,
                fleet: None,
                drained: region.drained,
                checked: region.check.is_some(),
                reason: reason.into(),
                since: now,
                last_probe: None,
                probes: 0,
                error_rate: 0.0,
                slow_rate: 0.0,
                load: None,
                probed_load: None,
                load_note: None,
            };
            (key, status)
        })
        .collect()
}

/// What the publisher is told, besides probe reports.
pub enum Event {
    /// A new configuration: every zone, validated. Regions whose check did not change keep
    /// their health. `done` is told once the snapshot that applies it is published.
    Reload {
        zones: Vec<ZoneConfig>,
        done: oneshot::Sender<()>,
    },
    /// New GeoIP databases: every service's places are compiled against them; `done` is told
    /// once the snapshot that uses them is published, or why they could not be.
    Geo {
        geo: GeoIp,
        done: oneshot::Sender<Result<(), GeoError>>,
    },
    /// The operator's switch; `done` receives the new state, or `None` for an unknown region,
    /// once the snapshot that applies it is published.
    SetDrained {
        key: RegionKey,
        drained: bool,
        done: oneshot::Sender<Option<(State, DrainRecord)>>,
    },
    /// What the fleet's transport brings: peers' views and drains.
    Fleet(FleetEvent),
}

impl From<FleetEvent> for Event {
    fn from(event: FleetEvent) -> Event {
        Event::Fleet(event)
    }
}

/// Who this instance is in its fleet, and where its drains are kept.
pub struct FleetSetup {
    pub instance: String,
    pub peers: Vec<String>,
    pub state_dir: Option<PathBuf>,
}

/// The publisher's side of the fleet: the clock of drains, the records, the peers' views.
struct FleetState {
    instance: String,
    hlc: uhlc::HLC,
    drains: Drains,
    state_dir: Option<PathBuf>,
    peers: BTreeMap<String, PeerState>,
    own_view: Arc<ArcSwap<OwnView>>,
    board: Arc<ArcSwap<FleetBoard>>,
    config_hash: String,
    geoip_build: String,
    /// Whether this instance decided alone at the last agreement (logged when it changes).
    alone: Option<bool>,
    impaired: bool,
}

/// Owns the health map; publishes routing snapshots and health for the admin API.
pub struct Publisher {
    plan: Arc<Plan>,
    /// The GeoIP files the plan's places were compiled from: read again only to compile a
    /// geography a reload brings (the databases are not kept open).
    geo_files: Vec<PathBuf>,
    /// What each region's health depends on in the configuration, to carry it over reloads.
    settings: BTreeMap<RegionKey, RegionSettings>,
    health: HealthMap,
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    /// The last state changes, kept here and published whole for the admin API.
    timeline: Timeline,
    published_timeline: Arc<ArcSwap<Timeline>>,
    /// Where failover events go, when anyone listens.
    notices: Option<Notices>,
    metrics: Arc<Metrics>,
    generation: u64,
    /// When a probe not made was last logged, and how many since.
    not_made_logged: Option<(Instant, u64)>,
    /// When the board is next published, if probes changed its details but no region's state.
    board_due: Option<time::Instant>,
    /// New GeoIP databases being compiled into the plan's places, on a blocking thread: health
    /// keeps being published meanwhile.
    relocating: JoinSet<Relocated>,
    fleet: FleetState,
    /// Per service region with a load target: the share of its clients it keeps, and its
    /// counts of moved and stuck answers at the last probe.
    shifts: BTreeMap<ShiftKey, (Controller, [u64; 2])>,
}

/// A plan compiled against new GeoIP databases, off the publisher's loop.
struct Relocated {
    /// The plan it was compiled from: if another has been published since (a zone reload),
    /// the databases are compiled again for that one.
    from: Arc<Plan>,
    plan: Result<Plan, GeoError>,
    geo: GeoIp,
    done: oneshot::Sender<Result<(), GeoError>>,
}

/// A probe that changes no state reaches the board within this time: copying the board for
/// every probe cost a third of the server's CPU with 1,000 regions probed every second.
const BOARD_EVERY: Duration = Duration::from_millis(250);

/// Probes not made are logged at most this often (they come in crowds, under attack).
const NOT_MADE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A region's health-related configuration.
#[derive(Debug, Clone, PartialEq)]
struct RegionSettings {
    check: Option<Check>,
    drained: bool,
}

fn region_settings(zones: &[ZoneConfig]) -> BTreeMap<RegionKey, RegionSettings> {
    let regions = zones.iter().flat_map(ZoneConfig::keyed_regions);
    regions
        .map(|(key, region)| {
            let settings = RegionSettings {
                check: region.check.clone(),
                drained: region.drained,
            };
            (key, settings)
        })
        .collect()
}

impl Publisher {
    /// Compiles the plan of `zones` against `geo`.
    pub fn new(
        zones: &[ZoneConfig],
        geo: GeoIp,
        metrics: Arc<Metrics>,
    ) -> Result<Publisher, GeoError> {
        let plan = Arc::new(Plan::new(zones, &metrics, &geo)?);
        let geo_files = geo.paths().map(PathBuf::from).collect();
        log_compilation(plan.compiled, "start");
        let health = initial_health(zones);
        let table = Arc::new(ArcSwap::from_pointee(RoutingTable::build(
            &plan,
            &states(&health),
            &Loads::default(),
        )));
        let board = Arc::new(ArcSwap::from_pointee(health.clone()));
        for (key, status) in &health {
            metrics.set_region_state(&key.zone, &key.region, status.state());
        }
        metrics.set_generation(1);
        let fleet = FleetState {
            instance: String::new(),
            hlc: uhlc::HLCBuilder::new()
                .with_max_delta(HLC_MAX_DELTA)
                .build(),
            drains: Drains::default(),
            state_dir: None,
            peers: BTreeMap::new(),
            own_view: Arc::new(ArcSwap::from_pointee(OwnView {
                view: View::default(),
                made: Instant::now(),
            })),
            board: Arc::default(),
            config_hash: config_hash(zones),
            geoip_build: geo.builds(),
            alone: None,
            impaired: false,
        };
        drop(geo);
        Ok(Publisher {
            plan,
            geo_files,
            settings: region_settings(zones),
            health,
            table,
            board,
            timeline: Timeline::default(),
            published_timeline: Arc::default(),
            notices: None,
            metrics,
            generation: 1,
            not_made_logged: None,
            board_due: None,
            relocating: JoinSet::new(),
            fleet,
            shifts: BTreeMap::new(),
        })
    }

    /// Joins a fleet: the drains kept in the state directory apply at once, and peers' views
    /// are taken from now on.
    pub fn in_fleet(mut self, setup: FleetSetup) -> Result<Publisher, StoreError> {
        let drains = match &setup.state_dir {
            Some(dir) => store::load_drains(dir)?,
            None => Drains::default(),
        };
        self.fleet.instance = setup.instance;
        self.fleet.state_dir = setup.state_dir;
        self.fleet.peers = setup
            .peers
            .iter()
            .map(|url| (url.clone(), PeerState::new(url)))
            .collect();
        let kept: Vec<DrainRecord> = drains.records().cloned().collect();
        for record in &kept {
            let _ = self.fleet.hlc.update_with_timestamp(&record.at);
        }
        self.fleet.drains = drains;
        if kept.is_empty() {
            self.publish_board();
            return Ok(self);
        }
        info!(
            "{} drain record(s) read back from the state directory",
            kept.len()
        );
        for record in kept {
            self.apply_drain(&record);
        }
        self.publish();
        Ok(self)
    }

    /// This instance's view, for the fleet listener.
    pub fn own_view(&self) -> Arc<ArcSwap<OwnView>> {
        Arc::clone(&self.fleet.own_view)
    }

    /// The fleet as this instance sees it, for the admin API.
    pub fn fleet_board(&self) -> Arc<ArcSwap<FleetBoard>> {
        Arc::clone(&self.fleet.board)
    }

    /// Tells `notices` of every state change, drain, undrain and reload from now on.
    pub fn notifying(self, notices: Notices) -> Publisher {
        Publisher {
            notices: Some(notices),
            ..self
        }
    }

    /// The last state changes, newest first, as the publisher last published them.
    pub fn timeline(&self) -> Arc<ArcSwap<Timeline>> {
        Arc::clone(&self.published_timeline)
    }

    /// The routing snapshot that queries read.
    pub fn table(&self) -> Arc<ArcSwap<RoutingTable>> {
        Arc::clone(&self.table)
    }

    /// The health of every region, for the admin API.
    pub fn board(&self) -> Arc<ArcSwap<HealthMap>> {
        Arc::clone(&self.board)
    }

    /// Applies events and probe reports until `shutdown`, or until every sender is gone.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut reports: mpsc::Receiver<ProbeReport>,
        shutdown: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        loop {
            let board_due = self.board_due;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(event) = events.recv() => self.apply(event),
                Some(report) = reports.recv() => self.probed(report),
                () = time::sleep_until(board_due.unwrap_or_else(time::Instant::now)),
                    if board_due.is_some() => self.publish_board(),
                Some(relocated) = self.relocating.join_next(), if !self.relocating.is_empty() => {
                    // A compile that panicked loses its reply: the reloader says so.
                    if let Ok(relocated) = relocated {
                        self.relocated(relocated);
                    }
                }
                else => return Ok(()),
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Reload { zones, done } => {
                self.reload(&zones);
                let _ = done.send(());
                drop(zones);
                release_freed_memory();
            }
            Event::Geo { geo, done } => self.relocate(geo, done),
            Event::SetDrained { key, drained, done } => {
                let state = self.set_drained(&key, drained);
                let _ = done.send(state);
            }
            Event::Fleet(FleetEvent::PeerView {
                peer,
                view,
                fetched,
            }) => self.peer_view(peer, view, fetched),
            Event::Fleet(FleetEvent::PeerDrain { record, done }) => {
                self.take_drain(record);
                let _ = done.send(());
            }
        }
    }

    fn peer_view(&mut self, peer: String, view: Result<View, String>, fetched: Instant) {
        let Some(state) = self.fleet.peers.get_mut(&peer) else {
            return;
        };
        match view {
            Ok(view) => {
                let records = view.drains.clone();
                state.take(view, fetched);
                for record in records {
                    self.take_drain(record);
                }
            }
            Err(error) => {
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
        self.board_due
            .get_or_insert_with(|| time::Instant::now() + BOARD_EVERY);
    }

    /// Merges a drain record from anywhere; a newer one applies here and is kept.
    fn take_drain(&mut self, record: DrainRecord) {
        let _ = self.fleet.hlc.update_with_timestamp(&record.at);
        if !self.fleet.drains.merge(record.clone()) {
            return;
        }
        self.save_drains();
        let key = record.key();
        if let Some(before) = self.health.get(&key).map(RegionStatus::state) {
            self.apply_drain(&record);
            self.changed(&key, before);
        }
    }

    fn save_drains(&self) {
        if let Some(dir) = &self.fleet.state_dir
            && let Err(error) = store::save_drains(dir, &self.fleet.drains)
        {
            tracing::error!("drains not kept for a restart: {error}");
        }
    }

    /// Sets a region's drained flag from a record (without publishing).
    fn apply_drain(&mut self, record: &DrainRecord) {
        let Some(status) = self.health.get_mut(&record.key()) else {
            return;
        };
        if status.drained != record.drained {
            status.drained = record.drained;
            status.since = SystemTime::now();
            status.reason = if record.drained {
                format!("drained by the operator (at {})", record.by)
            } else {
                format!(
                    "undrained by the operator (at {}); probes say {}",
                    record.by,
                    status.health.as_str()
                )
            };
        }
    }

    /// The fleet's agreement on a region from the fresh views, this instance's included; none
    /// for a region without a check (always up).
    fn agreement(&self, key: &RegionKey) -> Option<(Agreement, usize)> {
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
    fn fleet_load(&self, key: &RegionKey) -> Option<f64> {
        let status = self.health.get(key)?;
        let interval = self.settings.get(key)?.check.as_ref()?.interval;
        let now = Instant::now();
        let peers = self.fleet.peers.values();
        let figures = peers.filter_map(|peer| peer.fresh_vote(key, interval, now)?.load);
        agreed_load(status.probed_load.into_iter().chain(figures))
    }

    /// Sets the health answers use from the agreement (without publishing).
    fn reagree(&mut self, key: &RegionKey) {
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
    fn check_vantage(&mut self) {
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

    fn probed(&mut self, report: ProbeReport) {
        let key = report.key;
        if let Outcome::Unknown(reason) = &report.result.outcome {
            self.metrics.count_probe_not_made(&key.zone, &key.region);
            self.log_not_made(&key, reason);
        } else {
            self.metrics
                .observe_probe(&key.zone, &key.region, report.result.latency);
        }
        let Some(status) = self.health.get_mut(&key) else {
            return;
        };
        let before = status.state();
        status.probed = report.health;
        status.probed_at = Some(Instant::now());
        status.last_probe = Some(report.result);
        status.probes += 1;
        status.error_rate = report.error_rate;
        status.slow_rate = report.slow_rate;
        status.probed_load = report.load;
        status.load_note = match &status.last_probe.as_ref().and_then(|p| p.load.as_ref()) {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        };
        let fresh = matches!(
            status.last_probe.as_ref().and_then(|p| p.load.as_ref()),
            Some(Ok(_))
        );
        if let Some(transition) = report.transition {
            status.probe_reason = transition.reason;
            if status.fleet.is_none() {
                status.reason.clone_from(&status.probe_reason);
                status.since = SystemTime::now();
            }
        } else if status.probe_reason == NOT_PROBED_YET
            && let Some(result) = &status.last_probe
            && !matches!(result.outcome, Outcome::Unknown(_))
        {
            // Still up, as every region starts, but no longer unknown.
            status.probe_reason = format!("up since the first probe ({result})");
            if status.reason == NOT_PROBED_YET {
                status.reason.clone_from(&status.probe_reason);
            }
        }
        self.reagree(&key);
        self.check_vantage();
        let load = self.fleet_load(&key);
        if let Some(status) = self.health.get_mut(&key) {
            status.load = load;
        }
        self.metrics.set_region_load(&key.zone, &key.region, load);
        let shifted = self.shift_load(&key, fresh);
        let state_changed = self.health.get(&key).map(RegionStatus::state) != Some(before);
        self.changed(&key, before);
        if shifted.republish && !state_changed {
            self.publish();
        }
        for (shift, reason) in shifted.started_or_stopped {
            self.record_load_shift(&key, shift, reason);
        }
    }

    /// Feeds `key`'s load to the controller of every service with a load target that answers
    /// with it: what changed, and whether the routing snapshot must be built again (a kept
    /// share changed, or headroom did while a region of the service moves clients).
    fn shift_load(&mut self, key: &RegionKey, fresh: bool) -> Shifted {
        let mut shifted = Shifted::default();
        let Some(status) = self.health.get(key) else {
            return shifted;
        };
        let weight = self
            .settings
            .get(key)
            .and_then(|s| s.check.as_ref())
            .map_or(1.0, |c| smoothing_weight(c.thresholds.window));
        let services = self.plan.services().filter(|s| s.load.is_some());
        for service in services.filter(|s| s.regions.iter().any(|r| &r.key == key)) {
            let Some(target) = service.load else { continue };
            let shift_key = |region: &RegionKey| ShiftKey {
                region: region.clone(),
                service: service.name.to_string(),
            };
            let elsewhere = self.headroom_elsewhere(service, key, target.target);
            let (controller, counted) = self.shifts.entry(shift_key(key)).or_default();
            let region = service.regions.iter().find(|r| &r.key == key);
            let reading = Reading {
                load: status.load,
                fresh,
                weight,
                elsewhere,
                stuck: stuck_since(counted, region.and_then(|r| r.weighed.as_ref())),
            };
            let (before, was_moving) = (controller.kept, controller.moving());
            let kept = controller.update(reading, target);
            let moving = controller.moving();
            shifted.republish |= kept != before;
            let moved = Some(1.0 - kept);
            (self.metrics).set_load_moved(&key.zone, &service.name, &key.region, moved);
            let any_moving = service.regions.iter().any(|r| {
                self.shifts
                    .get(&shift_key(&r.key))
                    .is_some_and(|(c, _)| c.moving())
            });
            shifted.republish |= any_moving && fresh;
            if moving != was_moving {
                let reason = load_reason(status.load, target.target, kept);
                let shift = LoadShift {
                    service: service.name.to_string(),
                    moving,
                };
                shifted.started_or_stopped.push((shift, reason));
            }
        }
        shifted
    }

    /// Whether a region of `service` other than `key` is up and below `target`.
    fn headroom_elsewhere(&self, service: &ServicePlan, key: &RegionKey, target: f64) -> bool {
        let others = service.regions.iter().filter(|r| &r.key != key);
        others
            .filter_map(|r| self.health.get(&r.key))
            .any(|status| {
                status.state() == State::Up && status.load.is_some_and(|load| load < target)
            })
    }

    /// Drops the kept shares of service regions the plan no longer moves clients of.
    fn forget_shifts(&mut self) {
        let services = self.plan.services().filter(|s| s.load.is_some());
        let current: std::collections::BTreeSet<ShiftKey> = services
            .flat_map(|service| {
                service.regions.iter().map(|r| ShiftKey {
                    region: r.key.clone(),
                    service: service.name.to_string(),
                })
            })
            .collect();
        let metrics = &self.metrics;
        self.shifts.retain(|key, _| {
            let keep = current.contains(key);
            if !keep {
                let region = &key.region;
                metrics.set_load_moved(&region.zone, &key.service, &region.region, None);
            }
            keep
        });
    }

    /// Logs, records and tells receivers that a service started or stopped moving clients.
    fn record_load_shift(&mut self, key: &RegionKey, shift: LoadShift, reason: String) {
        let Some(state) = self.health.get(key).map(RegionStatus::state) else {
            return;
        };
        let verb = if shift.moving { "starts" } else { "stops" };
        info!(zone = %key.zone, region = %key.region, service = %shift.service,
            "{}: {} {verb} moving clients for load: {reason}", shift.service, key.region);
        if let Some(notices) = &self.notices {
            notices.send(Notice::load_shift(
                key,
                state,
                &shift,
                &reason,
                self.generation,
            ));
        }
        self.timeline.record(StateChange {
            time: SystemTime::now(),
            key: key.clone(),
            from: state,
            to: state,
            reason,
            generation: self.generation,
            load_shift: Some(shift),
        });
        self.published_timeline
            .store(Arc::new(self.timeline.clone()));
    }

    /// What routing needs of load: each region's smoothed load and each kept share.
    fn loads(&self) -> Loads {
        let load = self.health.iter();
        let load = load.filter_map(|(key, s)| Some((key.clone(), s.load?)));
        let kept = self
            .shifts
            .iter()
            .map(|(key, (c, _))| (key.clone(), c.kept));
        Loads {
            load: load.collect(),
            kept: kept.collect(),
        }
    }

    fn log_not_made(&mut self, key: &RegionKey, reason: &str) {
        match &mut self.not_made_logged {
            Some((at, since)) if at.elapsed() < NOT_MADE_LOG_EVERY => *since += 1,
            _ => {
                let since = self.not_made_logged.map_or(0, |(_, since)| since);
                warn!(
                    zone = %key.zone,
                    region = %key.region,
                    "{}: {reason}: counted as neither success nor failure ({since} more such \
                     probes since the last report)",
                    key.region
                );
                self.not_made_logged = Some((Instant::now(), 0));
            }
        }
    }

    /// Swaps in a new configuration. A region keeps its health when its check is unchanged,
    /// and its drained flag unless the zone file changed that flag.
    fn reload(&mut self, zones: &[ZoneConfig]) {
        let settings = region_settings(zones);
        let mut health = initial_health(zones);
        for (key, status) in health.iter_mut() {
            let (Some(old), Some(before), Some(now)) = (
                self.health.get(key),
                self.settings.get(key),
                settings.get(key),
            ) else {
                continue;
            };
            if before.check == now.check {
                let drained = if before.drained == now.drained {
                    old.drained
                } else {
                    now.drained
                };
                *status = RegionStatus {
                    drained,
                    ..old.clone()
                };
            }
        }
        for key in self.health.keys().filter(|key| !health.contains_key(key)) {
            self.metrics.forget_region(&key.zone, &key.region);
        }
        for (key, status) in &health {
            let before = self.health.get(key).map(RegionStatus::state);
            if before != Some(status.state()) {
                self.metrics
                    .set_region_state(&key.zone, &key.region, status.state());
            }
        }
        let reread: Vec<&ZoneConfig> = zones
            .iter()
            .filter(|zone| !self.plan.has_data(&zone.data))
            .collect();
        let geo = GeoSource::Files(&self.geo_files);
        let rebuilt = tokio::task::block_in_place(|| self.plan.rebuilt(zones, &self.metrics, geo));
        match rebuilt {
            Ok(plan) => {
                log_compilation(plan.compiled, "reload");
                self.plan = Arc::new(plan);
            }
            Err(error) => {
                // The databases compiled before, so this is not the configuration's fault.
                tracing::error!("zone reload not applied: {error}");
                return;
            }
        }
        self.settings = settings;
        self.health = health;
        self.forget_shifts();
        self.fleet.config_hash = config_hash(zones);
        self.publish();
        if let Some(notices) = &self.notices {
            notices.receivers(zones);
            for zone in reread {
                notices.send(Notice::reload(&zone.origin.to_string(), self.generation));
            }
        }
    }

    /// Compiles the places of the current plan against `geo` on a blocking thread.
    fn relocate(&mut self, geo: GeoIp, done: oneshot::Sender<Result<(), GeoError>>) {
        let from = Arc::clone(&self.plan);
        self.relocating.spawn_blocking(move || Relocated {
            plan: from.relocated(&geo),
            from,
            geo,
            done,
        });
    }

    /// Publishes a plan compiled against new databases, if it is still the current plan's.
    fn relocated(&mut self, relocated: Relocated) {
        let Relocated {
            from,
            plan,
            geo,
            done,
        } = relocated;
        if !Arc::ptr_eq(&from, &self.plan) {
            return self.relocate(geo, done);
        }
        drop(from);
        let result = plan.map(|plan| {
            self.fleet.geoip_build = geo.builds();
            log_compilation(plan.compiled, "GeoIP reload");
            self.plan = Arc::new(plan);
            self.publish();
        });
        let _ = done.send(result);
        drop(geo);
        release_freed_memory();
    }

    fn publish(&mut self) {
        let table = RoutingTable::build(&self.plan, &states(&self.health), &self.loads());
        for service in table.fail_open_services() {
            warn!(service = %service, "{service}: every region is down: answering as if all were up (fail open)");
        }
        self.table.store(Arc::new(table));
        self.generation += 1;
        self.metrics.set_generation(self.generation);
        self.publish_board();
    }

    fn publish_board(&mut self) {
        self.board.store(Arc::new(self.health.clone()));
        self.board_due = None;
        let now = Instant::now();
        let own = self.view_now(now);
        let board = self.fleet_summary(&own, now);
        self.count_fleet(&board);
        self.fleet.board.store(Arc::new(board));
        self.fleet.own_view.store(Arc::new(OwnView {
            view: own,
            made: now,
        }));
    }

    fn view_now(&self, now: Instant) -> View {
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
            regions: regions.collect(),
            drains: self.fleet.drains.records().cloned().collect(),
        }
    }

    /// The fleet's metrics, from the board that `/fleet` shows.
    fn count_fleet(&self, board: &FleetBoard) {
        let differing =
            |differs: fn(&PeerSummary) -> bool| board.peers.iter().filter(|p| differs(p)).count();
        self.metrics.set_fleet_mismatches(
            differing(|p| !p.config_matches),
            differing(|p| !p.geoip_matches),
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

    fn fleet_summary(&self, own: &View, now: Instant) -> FleetBoard {
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
            deciding_alone: self.health.values().all(|s| s.fleet.is_none()),
            vantage_impaired: self.fleet.impaired,
            peers: peers.collect(),
            regions: regions.collect(),
        }
    }

    /// The operator's drain or undrain here: a new record, kept and applied at once.
    fn set_drained(&mut self, key: &RegionKey, drained: bool) -> Option<(State, DrainRecord)> {
        let before = self.health.get(key)?.state();
        let record = DrainRecord {
            zone: key.zone.clone(),
            region: key.region.clone(),
            drained,
            at: self.fleet.hlc.new_timestamp(),
            by: self.fleet.instance.clone(),
        };
        self.fleet.drains.merge(record.clone());
        self.save_drains();
        self.apply_drain(&record);
        let after = self.health.get(key)?.state();
        self.changed(key, before);
        Some((after, record))
    }

    /// Publishes the health board, and a new routing snapshot when the region's state changed.
    fn changed(&mut self, key: &RegionKey, before: State) {
        let Some(status) = self.health.get(key) else {
            return;
        };
        let after = status.state();
        if after != before {
            info!(zone = %key.zone, region = %key.region, state = after.as_str(),
                "{} {}: {}", key.region, after.as_str(), status.reason);
            self.metrics.count_transition(&key.zone, &key.region, after);
            self.metrics.set_region_state(&key.zone, &key.region, after);
            let reason = status.reason.clone();
            self.publish();
            if let Some(notices) = &self.notices {
                notices.send(Notice::state(key, before, after, &reason, self.generation));
            }
            self.timeline.record(StateChange {
                time: SystemTime::now(),
                key: key.clone(),
                from: before,
                to: after,
                reason,
                generation: self.generation,
                load_shift: None,
            });
            self.published_timeline
                .store(Arc::new(self.timeline.clone()));
        } else {
            self.board_due
                .get_or_insert_with(|| time::Instant::now() + BOARD_EVERY);
        }
    }
}

/// What feeding one region's load to the controllers did.
#[derive(Default)]
struct Shifted {
    republish: bool,
    /// Services that started or stopped moving the region's clients, and why.
    started_or_stopped: Vec<(LoadShift, String)>,
}

/// Of the answers to a region's clients outside its kept share since the counts were last
/// taken (`counted`, updated), the share that had to stay.
fn stuck_since(counted: &mut [u64; 2], counters: Option<&WeighedCounters>) -> f64 {
    let now = counters.map_or([0, 0], |c| [c.moved.get(), c.stuck.get()]);
    let [moved, stuck] = [0, 1].map(|i| now[i].saturating_sub(counted[i]));
    *counted = now;
    match moved + stuck {
        0 => 0.0,
        asked => stuck as f64 / asked as f64,
    }
}

/// "load 92% above the target 80%: keeps 87% of its clients".
fn load_reason(load: Option<f64>, target: f64, kept: f64) -> String {
    let target = target * 100.0;
    match load {
        None => format!("load unknown: keeps {:.0}% of its clients", kept * 100.0),
        Some(load) if kept < 1.0 => format!(
            "load {:.0}% above the target {target:.0}%: keeps {:.0}% of its clients",
            load * 100.0,
            kept * 100.0
        ),
        Some(load) => format!(
            "load {:.0}% (target {target:.0}%): keeps all its clients",
            load * 100.0
        ),
    }
}

/// An incoming drain timestamp may be this far ahead of our clock: peers' clocks differ, and a
/// drain must never be refused for it (the newest record still wins).
const HLC_MAX_DELTA: Duration = Duration::from_secs(3600);

/// A hash of every zone file's text, by origin: equal files give equal hashes on every instance.
fn config_hash(zones: &[ZoneConfig]) -> String {
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

/// Logs what a compilation of places took, when the plan made one.
fn log_compilation(compiled: Option<Compilation>, when: &str) {
    let Some(c) = compiled else { return };
    info!(
        "GeoIP networks compiled ({when}): {} networks into {} places for {} geographies, {} KB, in {} ms{}",
        c.figures.networks,
        c.places,
        c.geographies,
        c.bytes / 1024,
        c.took.as_millis(),
        match c.figures.undecodable {
            0 => String::new(),
            n => format!("; {n} records undecodable (their networks are unknown)"),
        }
    );
}

/// Keeps every allocation of 1 MiB or more (a GeoIP file read whole, a zone file's text, a
/// large zone's table) in a mapping of its own, given back to the system when it is freed.
/// glibc otherwise raises its threshold to the size of the last such block freed: after one
/// GeoIP reload the next 8 MB file landed in the heap, and the soak's RSS went between 21 and
/// 29 MB with every replacement.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Gives back to the system what parsing and a replaced configuration freed. glibc keeps
/// freed memory in per-thread arenas: without this, a 10,000-record zone grew the process by
/// 60-80 MB over a few reloads.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
