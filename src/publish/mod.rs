//! The publisher: the one owner of every region's health, and the builder of the routing
//! snapshots that queries read.
//!
//! It takes probe reports from the probers, new configurations from hot reload and drain
//! requests from the admin API, one at a time; on every state change it builds a new
//! [`RoutingTable`] from the plan and the regions' states and swaps it in with arc-swap, and it
//! publishes the health board the admin API shows (with every state change at once, and a
//! probe's details within 250 ms). It never probes, reads files or answers queries.

mod board;
mod drains;
mod fleet;
mod frozen;
mod journal;
mod load;
mod plan;
mod probes;
mod serials;

use crate::{
    config::ZoneConfig,
    events::{Notice, Notices},
    fleet::{
        DrainRecord, Drains, FleetBoard, FleetEvent, PeerState, View,
        http::OwnView,
        ledger::{self, DrainLedger},
        store::{self, StoreError},
    },
    geo::{Accepted, GeoError, GeoIp},
    health::ProbeReport,
    latency::LatencyTable,
    metrics::Metrics,
    region::{RegionKey, State},
    routing::{
        Loads, Plan, RoutingTable,
        load_control::{Controller, ShiftKey},
    },
    timeline::{StateChange, Timeline},
};
use arc_swap::ArcSwap;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
    time,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::transfer::SerialBump;
use board::NOT_PROBED_YET;
pub use board::{HealthMap, RegionStatus, initial_health, states};
pub use drains::{DrainOutcome, describe as describe_drain};
use fleet::{FleetState, config_hash};
use plan::{Compiled, RegionSettings, Reply, log_compilation, region_settings};
use serials::SerialBook;

/// The least time between two serials of a transferred zone, unless `--transfer-min-interval`
/// says otherwise.
pub const DEFAULT_TRANSFER_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// What the publisher is told, besides probe reports.
pub enum Event {
    /// A new configuration: every zone, validated. Regions whose check did not change keep
    /// their health. `done` is told once the snapshot that applies it is published, or why it
    /// could not be.
    Reload {
        zones: Vec<ZoneConfig>,
        done: oneshot::Sender<Result<(), GeoError>>,
    },
    /// New GeoIP databases: every service's places are compiled against them; `done` is told
    /// once the snapshot that uses them is published, or why they could not be.
    Geo {
        geo: GeoIp,
        done: oneshot::Sender<Result<(), GeoError>>,
    },
    /// A new latency table: the latency services' places are compiled with it; `done` is
    /// told once the snapshot that uses it is published, or why it could not be.
    Latency {
        table: Arc<LatencyTable>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// The operator's switch; `done` is told what became of it, once the snapshot that
    /// applies it is published.
    SetDrained {
        key: RegionKey,
        drained: bool,
        done: oneshot::Sender<DrainOutcome>,
    },
    /// Takes back the operator's record, which the fleet refused, putting back the record it
    /// replaced; `done` receives the region's state after.
    Retract {
        record: DrainRecord,
        replaced: Option<DrainRecord>,
        done: oneshot::Sender<Option<State>>,
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

/// Owns the health map; publishes routing snapshots and health for the admin API.
pub struct Publisher {
    plan: Arc<Plan>,
    /// The GeoIP databases the plan's places were compiled from, as accepted: read again only
    /// to compile a geography a reload brings (their records are not kept in memory).
    geo: Accepted,
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
    /// Plans being compiled on a blocking thread (a zone reload, new GeoIP databases): health
    /// keeps being published meanwhile.
    compiling: JoinSet<Compiled>,
    /// A zone reload that could not read the accepted GeoIP databases (written in place since):
    /// applied once the GeoIP reloader accepts a database, unless another reload comes first.
    waiting: Option<Vec<ZoneConfig>>,
    fleet: FleetState,
    /// Per service region with a load target: the share of its clients it keeps, and its
    /// counts of moved and stuck answers at the last probe.
    shifts: BTreeMap<ShiftKey, (Controller, [u64; 3])>,
    /// Transferred zones' serials and what went out under them.
    serials: SerialBook,
    /// When a change deferred by `--transfer-min-interval` is due.
    serials_due: Option<time::Instant>,
    /// Where each serial bump goes, to be told to the zone's secondaries (NOTIFY).
    bumps: Option<mpsc::Sender<SerialBump>>,
}

/// How transferred zones' serials are kept: where, how often they may grow, and who hears of
/// each bump.
pub struct TransferSetup {
    pub state_dir: Option<PathBuf>,
    pub min_interval: Duration,
    pub bumps: mpsc::Sender<SerialBump>,
}

/// A probe that changes no state reaches the board within this time: copying the board for
/// every probe cost a third of the server's CPU with 1,000 regions probed every second.
const BOARD_EVERY: Duration = Duration::from_millis(250);

/// The SHA-256 of `plan`'s latency table, as the fleet compares them; empty without one.
fn latency_sha(plan: &Plan) -> String {
    plan.latency()
        .map(|t| t.summary.sha256.clone())
        .unwrap_or_default()
}

impl Publisher {
    /// Compiles the plan of `zones` against `geo` (and `latency`, for latency services).
    pub fn new(
        zones: &[ZoneConfig],
        geo: GeoIp,
        latency: Option<Arc<LatencyTable>>,
        metrics: Arc<Metrics>,
    ) -> Result<Publisher, GeoError> {
        let plan = Plan::new(zones, &metrics, &geo, latency)?;
        let accepted = geo.accepted();
        let builds = geo.builds();
        let plan = Arc::new(plan.keeping_geo(Some(Arc::new(geo))));
        log_compilation(plan.compiled, "start");
        metrics.set_latency_table_loaded(plan.latency().map_or(0, |t| t.summary.loaded_at));
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
            ledger: DrainLedger::new(ledger::system_clock),
            state_dir: None,
            peers: BTreeMap::new(),
            own_view: Arc::new(ArcSwap::from_pointee(OwnView {
                view: View::default(),
                made: Instant::now(),
            })),
            board: Arc::default(),
            config_hash: config_hash(zones),
            geoip_build: builds,
            latency_table: latency_sha(&plan),
            alone: None,
            impaired: false,
            clock_skewed: false,
        };
        Ok(Publisher {
            plan,
            geo: accepted,
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
            compiling: JoinSet::new(),
            waiting: None,
            fleet,
            shifts: BTreeMap::new(),
            serials: SerialBook::new(None, DEFAULT_TRANSFER_MIN_INTERVAL),
            serials_due: None,
            bumps: None,
        })
    }

    /// Manages transferred zones' serials (kept in the state directory) and tells `bumps` of
    /// each new one; the zones' current serials apply at once.
    pub fn transferring(mut self, setup: TransferSetup) -> Publisher {
        self.serials = SerialBook::new(setup.state_dir, setup.min_interval);
        self.bumps = Some(setup.bumps);
        let transferred = self
            .table
            .load()
            .zones()
            .iter()
            .any(|z| z.transfer.is_some());
        if transferred {
            self.publish();
        }
        self
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
        let kept = drains.records().count();
        for (record, ahead) in self.fleet.ledger.restore(drains) {
            warn!(
                "a drain record read back from the state directory ({}) is stamped {} ahead of \
                 this instance's clock: it stays in force, and a drain of {} taken here loses to \
                 it until the clock passes it. Has the clock gone back?",
                drains::describe(&record),
                humantime::format_duration(std::time::Duration::from_secs(ahead.as_secs())),
                record.region
            );
        }
        if kept == 0 {
            self.publish_board();
            return Ok(self);
        }
        info!("{kept} drain record(s) read back from the state directory");
        let keys: Vec<RegionKey> = self.health.keys().cloned().collect();
        for key in &keys {
            self.apply_drain(key);
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
                () = time::sleep_until(self.serials_due.unwrap_or_else(time::Instant::now)),
                    if self.serials_due.is_some() => self.publish(),
                Some(compiled) = self.compiling.join_next(), if !self.compiling.is_empty() => {
                    // A compile that panicked loses its reply: the reloader says so.
                    if let Ok(compiled) = compiled {
                        self.compiled(compiled);
                    }
                }
                else => return Ok(()),
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Reload { zones, done } => self.reload(zones, Reply::Geo(done)),
            Event::Geo { geo, done } => self.relocate(geo, Reply::Geo(done)),
            Event::Latency { table, done } => self.take_latency(table, done),
            Event::SetDrained { key, drained, done } => {
                let outcome = self.set_drained(&key, drained);
                let _ = done.send(outcome);
            }
            Event::Retract {
                record,
                replaced,
                done,
            } => {
                let state = self.retract(&record, replaced);
                let _ = done.send(state);
            }
            Event::Fleet(FleetEvent::PeerView {
                peer,
                view,
                fetched,
            }) => self.peer_view(peer, view, fetched),
            Event::Fleet(FleetEvent::PeerDrain { record, done }) => {
                let taken = self.take_drain(record);
                let _ = done.send(taken);
            }
        }
    }

    fn publish(&mut self) {
        let table = RoutingTable::build(&self.plan, &states(&self.health), &self.loads());
        let (table, settled) = self.serials.settle(table, Instant::now());
        for zone in table.zones() {
            if let Some(transferred) = &zone.transferred {
                let origin = zone.data.origin_name().to_string();
                self.metrics.set_zone_serial(&origin, transferred.serial);
            }
        }
        self.serials_due = settled.recheck.map(time::Instant::from_std);
        for (zone, serial) in settled.bumped {
            let bump = SerialBump { zone, serial };
            if let Some(Err(e)) = self.bumps.as_ref().map(|b| b.try_send(bump)) {
                warn!("a serial bump is not notified: {e}");
            }
        }
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
