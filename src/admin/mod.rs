//! The admin HTTP API (axum): the status page (`page`) and the JSON behind it (region health
//! and location, the last state changes, answer shares, 15 minutes of history), the operator's
//! drain switch, Prometheus metrics and the server's own liveness.
//!
//! It reads the health board that the publisher swaps in and sends drain requests to the
//! publisher; it never touches the routing table itself. Mutating endpoints need the bearer
//! token, and are disabled (403) when no token is configured.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::{Path, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use serde_json::{Value, json};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use body::{Drained, LatLon, RegionBody, Regions};

use crate::{
    fleet::{self, http::DrainReply},
    fleet::{FleetBoard, http::PeerClient},
    geo::Coordinates,
    history::{self, History},
    metrics::Metrics,
    publish::{DrainOutcome, Event, HealthMap, RegionStatus},
    region::RegionKey,
    routing::RoutingTable,
    timeline::Timeline,
    transfer::SecondaryLog,
};

pub mod body;
mod page;

#[derive(Clone)]
pub struct Admin {
    table: Arc<ArcSwap<RoutingTable>>,
    board: Arc<ArcSwap<HealthMap>>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
    /// Cancelled when the server starts stopping: `/healthz` then says so.
    stopping: CancellationToken,
    /// Zone files that do not validate now, a line each (`/healthz` names them).
    unloaded: Arc<ArcSwap<Vec<String>>>,
    /// The last state changes, newest first.
    timeline: Arc<ArcSwap<Timeline>>,
    /// Answers and probe latency over the last 15 minutes.
    history: Arc<ArcSwap<History>>,
    /// The fleet as this instance sees it, and the way to its peers (none outside a fleet).
    fleet: Arc<ArcSwap<FleetBoard>>,
    peers: Option<PeerClient>,
    /// Each secondary's last transfer of each zone.
    secondaries: Arc<ArcSwap<SecondaryLog>>,
}

impl Admin {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        board: Arc<ArcSwap<HealthMap>>,
        timeline: Arc<ArcSwap<Timeline>>,
        history: Arc<ArcSwap<History>>,
        unloaded: Arc<ArcSwap<Vec<String>>>,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
        token: Option<String>,
        stopping: CancellationToken,
        fleet: Arc<ArcSwap<FleetBoard>>,
        peers: Option<PeerClient>,
    ) -> Admin {
        Admin {
            fleet,
            peers,
            table,
            board,
            timeline,
            history,
            unloaded,
            events,
            metrics,
            token: token.map(Into::into),
            stopping,
            secondaries: Arc::default(),
        }
    }

    /// Shows each secondary's last transfer (`/transfers`, the status page).
    pub fn seeing_secondaries(self, secondaries: Arc<ArcSwap<SecondaryLog>>) -> Admin {
        Admin {
            secondaries,
            ..self
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(status_page))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/regions", get(regions))
            .route("/events", get(events))
            .route("/shares", get(shares))
            .route("/history", get(history))
            .route("/fleet", get(fleet))
            .route("/latency", get(latency))
            .route("/transfers", get(transfers))
            .route("/regions/{zone}/{region}/drain", post(drain))
            .route("/regions/{zone}/{region}/undrain", post(undrain))
            .with_state(self)
    }

    /// Serves until `shutdown`, then lets requests in progress finish. At most
    /// [`MAX_CONNECTIONS`] connections are served at once (more are closed on arrival), and a
    /// connection that takes longer than `header_timeout` to send a request's headers, or
    /// stays that long idle between requests, is closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        header_timeout: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        serve_router(self.router(), listener, None, header_timeout, shutdown).await
    }
}

/// Serves `router` on `listener` as [`Admin::serve`] does (the fleet listener too), over TLS
/// when `tls` is given: the handshake, too, must end within `header_timeout`.
pub async fn serve_router(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors: wait rather than spin (DNS logs the shortage).
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        if let Some(tls) = &tls {
            let (tls, http, service) = (tls.clone(), http.clone(), service.clone());
            let watcher = graceful.watcher();
            connections.spawn(async move {
                let handshake = tokio::time::timeout(header_timeout, tls.accept(stream)).await;
                // Plain HTTP fails the handshake here. A peer under another CA is refused by
                // its own client, which does not trust this certificate (no client
                // certificates are asked for: the fleet token authenticates the peer).
                if let Ok(Ok(stream)) = handshake {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                }
                drop(slot);
            });
            continue;
        }
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Connections the admin API serves at once: more than an operator's tools and a scraper need.
pub const MAX_CONNECTIONS: usize = 64;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's own liveness: 503 from the moment it starts stopping, so that a load balancer
/// or an orchestrator stops sending it traffic during the drain period. Zone files that do not
/// validate are named, with 200: the server answers for every other zone, and taking it out of
/// service would make one typo an outage.
async fn healthz(AxumState(admin): AxumState<Admin>) -> (StatusCode, String) {
    if admin.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
    }
    let unloaded = admin.unloaded.load();
    if unloaded.is_empty() {
        return (StatusCode::OK, "ok\n".into());
    }
    let mut text = format!("ok; {} zone file(s) do not validate:\n", unloaded.len());
    for line in unloaded.iter() {
        text.push_str(line);
        text.push('\n');
    }
    (StatusCode::OK, text)
}

/// Where the admin API listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for AdminListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminListen::Off);
        }
        s.parse()
            .map(AdminListen::At)
            .map_err(|_| format!("'{s}' is neither ADDR:PORT nor off"))
    }
}

/// The status page (`page`), from the current table, board, timeline and history.
async fn status_page(AxumState(admin): AxumState<Admin>) -> Html<String> {
    let (table, board) = (admin.table.load(), admin.board.load());
    let (timeline, history) = (admin.timeline.load(), admin.history.load());
    let fleet = admin.fleet.load();
    let now = history::sample(&table, &board, SystemTime::now(), None, true);
    Html(page::render(&page::View {
        table: &table,
        board: &board,
        timeline: &timeline,
        history: &history,
        now: &now,
        fleet: &fleet,
        secondaries: &admin.secondaries.load(),
    }))
}

/// The answers' shares per zone and client continent over the last 15 minutes.
async fn shares(AxumState(admin): AxumState<Admin>) -> Json<Value> {
    let (table, board, history) = (admin.table.load(), admin.board.load(), admin.history.load());
    let now = history::sample(&table, &board, SystemTime::now(), None, true);
    let since = history.samples().next().map_or(now.time, |s| s.time);
    let shares: Vec<Value> = page::shares(&history, &now)
        .iter()
        .map(|s| {
            json!({
                "zone": s.key.zone,
                "region": s.key.region,
                "continent": s.continent,
                "answers": s.answers,
                "share": s.fraction,
            })
        })
        .collect();
    Json(json!({
        "since": humantime::format_rfc3339_seconds(since).to_string(),
        "shares": shares,
    }))
}

/// Per region, answers per second and probe latency every 10 s over the last 15 minutes.
async fn history(AxumState(admin): AxumState<Admin>) -> Json<Value> {
    let history = admin.history.load();
    let keys = history.samples().last().map(|s| s.regions().to_vec());
    let regions: Vec<Value> = keys
        .unwrap_or_default()
        .iter()
        .map(|key| {
            let points: Vec<Value> = history
                .rates(key, None)
                .iter()
                .map(|r| {
                    json!({
                        "time": humantime::format_rfc3339_seconds(r.time).to_string(),
                        "answers_per_second": r.answers_per_second,
                        "probe_ms": r.probe_ms,
                    })
                })
                .collect();
            json!({ "zone": key.zone, "region": key.region, "points": points })
        })
        .collect();
    Json(json!({
        "interval_seconds": history::SAMPLE_EVERY.as_secs(),
        "regions": regions,
    }))
}

/// The latency table in force: its file, SHA-256, rows, networks, regions and when it was
/// loaded; `null` when none is.
async fn latency(AxumState(admin): AxumState<Admin>) -> Json<Value> {
    let table = admin.table.load();
    let summary = table.latency.as_ref().map(|t| &t.summary);
    Json(json!({ "table": summary }))
}

/// Each transferred zone: the serial its secondaries are given, its NOTIFY targets, and each
/// secondary's last transfer (kind, serial, when) and whether it is behind.
async fn transfers(AxumState(admin): AxumState<Admin>) -> Json<Value> {
    let table = admin.table.load();
    let seen = admin.secondaries.load();
    Json(json!({ "zones": page::transferred_zones(&table, &seen) }))
}

/// The fleet as this instance sees it: its peers, and the agreement on every region.
async fn fleet(AxumState(admin): AxumState<Admin>) -> Json<FleetBoard> {
    Json(FleetBoard::clone(&admin.fleet.load()))
}

/// The last state changes, newest first (at most [`crate::timeline::KEPT`]).
async fn events(AxumState(admin): AxumState<Admin>) -> Json<Value> {
    let timeline = admin.timeline.load();
    let events: Vec<Value> = timeline.changes().map(|c| c.to_json()).collect();
    Json(json!({ "events": events }))
}

async fn metrics(AxumState(admin): AxumState<Admin>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        admin.metrics.render(),
    )
        .into_response()
}

async fn regions(AxumState(admin): AxumState<Admin>) -> Json<Regions> {
    let (table, board) = (admin.table.load(), admin.board.load());
    let markers = page::markers(&table, &board);
    let regions = board
        .iter()
        .map(|(key, status)| {
            let location = markers.iter().find(|m| &m.key == key).map(|m| m.location);
            let mut body = region_body(key, status, location);
            (body.kept, body.admits) = load_shares(&table, key);
            body
        })
        .collect();
    Json(Regions { regions })
}

/// Per service with a load target, the share of `key`'s clients it keeps in this snapshot,
/// and the share of clients moved to it that it takes.
fn load_shares(table: &RoutingTable, key: &RegionKey) -> LoadShares {
    let services = table.zones().iter().flat_map(|z| z.services());
    services
        .filter_map(|service| {
            let i = service.plan.regions.iter().position(|r| &r.key == key)?;
            let load = service.loads.get(i)?;
            Some((service.plan.name.to_string(), load.kept, load.admits))
        })
        .map(|(name, kept, admits)| ((name.clone(), kept), (name, admits)))
        .unzip()
}

type LoadShares = (BTreeMap<String, f64>, BTreeMap<String, f64>);

fn region_body(
    key: &RegionKey,
    status: &RegionStatus,
    location: Option<Coordinates>,
) -> RegionBody {
    let since = status
        .since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = status.last_probe.as_ref();
    RegionBody {
        zone: key.zone.clone(),
        region: key.region.clone(),
        state: status.state(),
        health: status.health,
        drained: status.drained,
        checked: status.checked,
        reason: status.reason.clone(),
        since: humantime::format_rfc3339_seconds(status.since).to_string(),
        since_unix: since,
        probes: status.probes,
        last_probe: last.map(ToString::to_string),
        last_probe_ms: last.map(|p| p.latency.as_secs_f64() * 1000.0),
        error_rate: status.error_rate,
        slow_rate: status.slow_rate,
        location: location.map(|c| LatLon {
            lat: c.lat,
            lon: c.lon,
        }),
        load: status.load,
        load_note: status.load_note.clone(),
        kept: BTreeMap::new(),
        admits: BTreeMap::new(),
    }
}

async fn drain(
    admin: AxumState<Admin>,
    headers: HeaderMap,
    path: Path<(String, String)>,
) -> Response {
    set_drained(admin, headers, path, true).await
}

async fn undrain(
    admin: AxumState<Admin>,
    headers: HeaderMap,
    path: Path<(String, String)>,
) -> Response {
    set_drained(admin, headers, path, false).await
}

async fn set_drained(
    AxumState(admin): AxumState<Admin>,
    headers: HeaderMap,
    Path((zone, region)): Path<(String, String)>,
    drained: bool,
) -> Response {
    if let Err(refusal) = authorize(admin.token.as_deref(), &headers) {
        return refusal.into_response();
    }
    let zone = if zone.ends_with('.') {
        zone
    } else {
        format!("{zone}.")
    };
    let key = RegionKey { zone, region };
    let (done, applied) = oneshot::channel();
    let event = Event::SetDrained {
        key: key.clone(),
        drained,
        done,
    };
    if admin.events.send(event).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the health publisher is not running",
        );
    }
    let outcome = match applied.await {
        Ok(outcome) => outcome,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the health publisher stopped",
            );
        }
    };
    let (state, record, replaced) = match outcome {
        DrainOutcome::Applied {
            state,
            record,
            replaced,
        } => (state, record, replaced),
        DrainOutcome::UnknownRegion => {
            let why = format!("no region '{}' in zone '{}'", key.region, key.zone);
            return error(StatusCode::NOT_FOUND, &why);
        }
        refused @ DrainOutcome::Lost { .. } | refused @ DrainOutcome::ClockSkewed { .. } => {
            return error(StatusCode::CONFLICT, &refused.to_string());
        }
    };
    let replies = match &admin.peers {
        Some(peers) => peers.push_drain(&record).await,
        None => Vec::new(),
    };
    let instances = 1 + admin.peers.as_ref().map_or(0, |p| p.peers.len());
    let peers: BTreeMap<String, String> = replies
        .iter()
        .map(|(peer, reply)| {
            let said = match reply {
                Ok(reply) => reply.to_string(),
                Err(why) => format!("not asked: {why}"),
            };
            (peer.clone(), said)
        })
        .collect();
    if fleet::http::refused_by_fleet(instances, &replies) {
        let (done, retracted) = oneshot::channel();
        let event = Event::Retract {
            record: record.clone(),
            replaced,
            done,
        };
        if admin.events.send(event).await.is_ok() {
            let _ = retracted.await;
        }
        let said: Vec<String> = peers.iter().map(|(p, s)| format!("{p}: {s}")).collect();
        let why = format!(
            "not applied: most of the fleet refused the record for this instance's clock ({}); \
             set its clock right, or drain at another instance",
            said.join("; ")
        );
        return error(StatusCode::CONFLICT, &why);
    }
    let in_force = replies
        .iter()
        .filter(|(_, reply)| reply.as_ref().is_ok_and(DrainReply::in_force))
        .count();
    let applied = 1 + in_force;
    Json(Drained {
        zone: key.zone,
        region: key.region,
        state,
        applied_on: applied,
        instances,
        applied: format!("applied on {applied} of {instances}"),
        peers,
        record: Some(record),
    })
    .into_response()
}

/// Why a mutating request is refused.
enum Refusal {
    /// No token is configured: the endpoints are off.
    Disabled,
    /// The token is missing or wrong.
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => error(
                StatusCode::FORBIDDEN,
                "mutating endpoints are disabled: no admin token configured",
            ),
            Refusal::Unauthorized => {
                let mut response =
                    error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
        }
    }
}

/// `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 11.1), the token
/// compared in constant time.
fn authorize(token: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = token.ok_or(Refusal::Disabled)?;
    if crate::bearer::bearer_is(headers, token) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
