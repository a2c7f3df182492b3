//! One supervised server: every long-lived task (the publisher, zone reload with its probers,
//! GeoIP reload, failover events, the status page's history, the admin API, DNS) is owned by one [`JoinSet`] under one shutdown.
//!
//! [`run`] returns when a task fails, naming it and saying why, so that the process exits
//! non-zero and its supervisor (systemd, the container runtime) restarts it: a dead publisher
//! never leaves DNS answering from a frozen table. When `stop` is cancelled (the first SIGTERM
//! or SIGINT), `/healthz` answers 503 at once, DNS keeps answering for the drain period, then
//! stops reading and answers what it has read; everything else stops, and [`run`] returns within
//! the shutdown timeout whatever is still running. This module wires the parts together; it
//! decides nothing about answers or health itself.

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{
    net::TcpListener,
    sync::mpsc,
    task::{Id, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    admin::{self, Admin},
    config::ZoneConfig,
    dns::{self, Responder, RrlCounters, RrlSettings, TcpLimits},
    events::Notifier,
    fleet::{self, http::PeerClient},
    geo::GeoIp,
    health::{Probers, panic_message},
    history,
    latency::LatencyTable,
    metrics::Metrics,
    publish::{FleetSetup, Publisher, TransferSetup},
    reload::{GeoipReloader, LatencyReloader, Reloader},
    transfer::{self, Transfers, TsigKeys},
};

/// How long after a task merely ends a failure of another is taken as the cause.
const CAUSE_GRACE: Duration = Duration::from_millis(200);

/// What joining a supervised task gives.
type JoinResult = Result<(tokio::task::Id, Result<(), String>), tokio::task::JoinError>;

/// How many events (probe reports, reloads, drains) may wait for the publisher.
const EVENT_QUEUE: usize = 1024;

/// Everything the server needs, loaded and validated.
pub struct Config {
    pub zones_dir: PathBuf,
    pub zones: Vec<ZoneConfig>,
    pub geo: GeoIp,
    /// The latency table (`--latency`), read and checked against the zones.
    pub latency: Option<LatencyTable>,
    /// The TSIG keys zone transfers are signed with (`--tsig-keys`).
    pub tsig_keys: TsigKeys,
    /// The least time between two serials of a transferred zone.
    pub transfer_min_interval: Duration,
    /// The name of the catalog zone of the transferred zones (`--catalog`), if one is served.
    pub catalog: Option<hickory_proto::rr::Name>,
    /// The registry the GeoIP lookup counters of `geo` already belong to.
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<String>,
    pub max_udp_payload: u16,
    pub nsid: Option<String>,
    /// How long DNS keeps answering after the stop signal (for load balancers to notice).
    pub drain_period: Duration,
    /// How long the tasks may take to stop after the drain period.
    pub shutdown_timeout: Duration,
    /// Most TCP connections at once, in all and from one client network.
    pub tcp_connections: usize,
    pub tcp_connections_per_network: usize,
    /// Zone files larger than this (bytes) are refused unread, at reload as at start.
    pub max_zone_file: u64,
    /// Why the zone files that did not load at start are not served (one line each).
    pub unloaded: Vec<String>,
    /// How long the admin API waits for a request's headers, or between requests.
    pub admin_header_timeout: Duration,
    /// The response rate limit of UDP answers.
    pub rrl: RrlSettings,
    pub fleet: FleetConfig,
}

/// This instance's place in its fleet.
pub struct FleetConfig {
    /// The instance's name (`--nsid`'s text, else the host's name).
    pub instance: String,
    /// The peers' fleet endpoints.
    pub peers: Vec<String>,
    /// The fleet's shared secret (needed with peers or a fleet listener).
    pub token: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// The one CA to trust for the peers' certificates (not the system's roots).
    pub peer_ca: Option<reqwest::Certificate>,
    /// The fleet listener's certificate and key: it serves HTTPS when set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The sockets, bound before [`run`] (port 0 picks free ports; the caller knows them).
pub struct Listeners {
    pub dns: dns::Listeners,
    pub admin: Option<TcpListener>,
    pub fleet: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start {what}: {reason}")]
    Start { what: &'static str, reason: String },
    #[error("the {task} task stopped: {reason}")]
    TaskFailed { task: &'static str, reason: String },
}

/// Serves until a task fails (an error naming it) or `stop` is cancelled and every task has
/// stopped (or the shutdown timeout has passed).
pub async fn run(
    config: Config,
    listeners: Listeners,
    stop: CancellationToken,
) -> Result<(), ServerError> {
    let metrics = config.metrics;
    // The publisher owns health and the routing table; everything else feeds it or reads.
    let served = crate::catalog::served(config.zones.clone(), config.catalog.as_ref())
        .map_err(|e| start_error("the catalog zone", anyhow::anyhow!(e)))?;
    let (notifier, notices) = Notifier::new(&served, Arc::clone(&metrics));
    let located = config.geo.sample_located();
    let geo_files: Vec<PathBuf> = config.geo.paths().map(PathBuf::from).collect();
    let fleet = config.fleet;
    let latency_file = config.latency.as_ref().map(|t| t.summary.file.clone());
    let latency = config.latency.map(Arc::new);
    let publisher = Publisher::new(&served, config.geo, latency, Arc::clone(&metrics))
        .map_err(|e| start_error("the routing plan", e.into()))?
        .notifying(notices)
        .in_fleet(FleetSetup {
            instance: fleet.instance.clone(),
            peers: fleet.peers.clone(),
            state_dir: fleet.state_dir.clone(),
        })
        .map_err(|e| start_error("the state directory", e.into()))?;
    let (bumps, bump_queue) = mpsc::channel(EVENT_QUEUE);
    let publisher = publisher.transferring(TransferSetup {
        state_dir: fleet.state_dir.clone(),
        min_interval: config.transfer_min_interval,
        bumps,
    });
    if !fleet.peers.is_empty() && fleet.state_dir.is_none() {
        warn!(
            "this instance has peers but no --state-dir: drains taken here or at a peer will not \
             survive a restart of this instance"
        );
    }
    let peers = match (&fleet.token, fleet.peers.is_empty()) {
        (Some(token), false) => Some(
            PeerClient::new(
                fleet.peers.clone(),
                token,
                &fleet.instance,
                fleet.peer_ca.clone(),
            )
            .map_err(|e| start_error("the fleet's HTTP client", e.into()))?,
        ),
        _ => None,
    };
    let (own_view, fleet_board) = (publisher.own_view(), publisher.fleet_board());
    crate::memory::release_freed_memory();
    let (table, board, timeline) = (publisher.table(), publisher.board(), publisher.timeline());
    let (events, event_queue) = mpsc::channel(EVENT_QUEUE);
    let (reports, report_queue) = mpsc::channel(EVENT_QUEUE);
    let unloaded = Arc::new(ArcSwap::from_pointee(config.unloaded));
    let reloader = Reloader::start(
        &config.zones_dir,
        config.zones,
        config.max_zone_file,
        Arc::clone(&unloaded),
        events.clone(),
        Probers::new(reports, &fleet.instance),
        Arc::clone(&metrics),
    )
    .map_err(|e| start_error("zone reload and the health checks", e))?
    .with_catalog(config.catalog);
    info!(
        "{} health checks; watching {} for changes (and SIGHUP)",
        reloader.checks(),
        config.zones_dir.display()
    );
    let geoip_reloader =
        GeoipReloader::start(geo_files, located, events.clone(), Arc::clone(&metrics))
            .map_err(|e| start_error("GeoIP reload", e))?;
    let latency_reloader = latency_file
        .map(|file| LatencyReloader::start(file, events.clone(), Arc::clone(&metrics)))
        .transpose()
        .map_err(|e| start_error("latency table reload", e))?;
    let nsid = config.nsid.as_deref();
    let notify_keys = config.tsig_keys.clone();
    let transfers = Transfers::new(Arc::clone(&table), config.tsig_keys, Arc::clone(&metrics));
    let secondaries = transfers.secondaries();
    let responder = Responder::new(
        Arc::clone(&table),
        transfers,
        &metrics,
        config.max_udp_payload,
        nsid,
    );

    // `finish` stops every task but DNS, which `dns_stop` stops once the drain period is over.
    let (finish, dns_stop) = (CancellationToken::new(), CancellationToken::new());
    // However `run` returns, everything is told to stop: the UDP worker threads cannot be
    // aborted like tasks, and the runtime waits for them before the process can exit.
    let _stop_dns = dns_stop.clone().drop_guard();
    let _stop_rest = finish.clone().drop_guard();
    let mut tasks = Tasks::default();
    tasks.spawn(
        "publisher",
        hooks::publisher(publisher.run(event_queue, report_queue, finish.clone())),
    );
    tasks.spawn("zone reload", reloader.run(finish.clone()));
    tasks.spawn("failover events", notifier.run(finish.clone()));
    let notifying = transfer::notify::run(
        Arc::clone(&table),
        notify_keys,
        Arc::clone(&metrics),
        bump_queue,
        finish.clone(),
    );
    tasks.spawn("NOTIFY", notifying);
    let history = history::started(&table.load(), &board.load());
    let history = Arc::new(ArcSwap::from_pointee(history));
    let sampling = history::run(
        Arc::clone(&table),
        Arc::clone(&board),
        Arc::clone(&history),
        finish.clone(),
    );
    tasks.spawn("history", sampling);
    tasks.spawn("GeoIP reload", geoip_reloader.run(finish.clone()));
    if let Some(reloader) = latency_reloader {
        tasks.spawn("latency table reload", reloader.run(finish.clone()));
    }
    // Everything that feeds the publisher runs: say where the server listens.
    if let Some(addr) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        info!("admin API listening on http://{addr}");
        if !addr.ip().is_loopback() && config.admin_token.is_none() {
            warn!(
                "the admin API listens on {addr}, beyond this host, WITHOUT A TOKEN: anyone who \
                 reaches it reads every region's state and configuration; drain and undrain are \
                 disabled. Set --admin-token-file (or REGIONDNS_ADMIN_TOKEN), or listen on \
                 127.0.0.1"
            );
        }
    }
    for addr in listeners.dns.local_addrs() {
        info!("listening on {addr} (udp, tcp)");
    }
    if let Some(listener) = listeners.admin {
        let admin = Admin::new(
            table,
            board,
            timeline,
            history,
            unloaded,
            events.clone(),
            Arc::clone(&metrics),
            config.admin_token,
            stop.clone(),
            fleet_board,
            peers.clone(),
        )
        .seeing_secondaries(secondaries);
        let serving = admin.serve(listener, config.admin_header_timeout, finish.clone());
        tasks.spawn("admin API", serving);
    }
    if let (Some(listener), Some(token)) = (listeners.fleet, &fleet.token) {
        if let Ok(addr) = listener.local_addr() {
            let scheme = if fleet.tls.is_some() { "https" } else { "http" };
            info!("fleet listener on {scheme}://{addr}");
            if fleet.tls.is_none() && !addr.ip().is_loopback() {
                warn!(
                    "the fleet listener on {addr} is plain HTTP beyond this host: the fleet token \
                     crosses the network in clear text. Set --fleet-tls-cert and --fleet-tls-key"
                );
            }
        }
        let router = fleet::http::router(own_view, events.clone(), token);
        let serving = admin::serve_router(
            router,
            listener,
            fleet.tls.clone(),
            config.admin_header_timeout,
            finish.clone(),
        );
        tasks.spawn("fleet listener", serving);
    }
    if let Some(peers) = peers {
        info!(
            "polling {} peer(s): {}",
            peers.peers.len(),
            peers.peers.join(", ")
        );
        tasks.spawn("fleet peers", peers.poll(events.clone(), finish.clone()));
    }
    let limits = dns::Limits {
        tcp: TcpLimits {
            connections: config.tcp_connections,
            per_network: config.tcp_connections_per_network,
            refused_total: metrics.tcp_refused_counter("connections"),
            refused_network: metrics.tcp_refused_counter("per_network"),
        },
        rrl: config.rrl,
        rrl_counters: RrlCounters {
            dropped: metrics.rate_limited_counter("dropped"),
            slipped: metrics.rate_limited_counter("slipped"),
        },
    };
    if limits.rrl.rate > 0 {
        info!(
            "response rate limit: {} per second per client network, class and name (slip {})",
            limits.rrl.rate, limits.rrl.slip
        );
    }
    tasks.spawn(
        "DNS",
        listeners.dns.serve(responder, limits, dns_stop.clone()),
    );

    tokio::select! {
        () = stop.cancelled() => {}
        (task, reason) = tasks.next_end() => return Err(ServerError::TaskFailed { task, reason }),
    }
    let drain = config.drain_period;
    info!("stopping: /healthz answers 503; DNS answers for the drain period ({drain:?})");
    tokio::select! {
        () = tokio::time::sleep(drain) => {}
        (task, reason) = tasks.next_end() => return Err(ServerError::TaskFailed { task, reason }),
    }
    dns_stop.cancel();
    finish.cancel();
    tasks.stop_within(config.shutdown_timeout).await;
    Ok(())
}

fn start_error(what: &'static str, error: anyhow::Error) -> ServerError {
    ServerError::Start {
        what,
        reason: format!("{error:#}"),
    }
}

/// The long-lived tasks, by name.
#[derive(Default)]
struct Tasks {
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    fn spawn<E: Into<anyhow::Error>>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let handle = self
            .set
            .spawn(async move { task.await.map_err(|e| format!("{:#}", e.into())) });
        self.names.insert(handle.id(), name);
    }

    /// The next task to end, and why: an error, a panic, or ending at all before the stop. A
    /// task that merely ended is often the echo of another's failure (the channel it reads
    /// closed when that one died): a failure within [`CAUSE_GRACE`] after it is the cause.
    async fn next_end(&mut self) -> (&'static str, String) {
        let Some(ended) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (mut name, mut reason, clean) = self.ended(ended);
        if clean {
            let grace = tokio::time::sleep(CAUSE_GRACE);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    () = &mut grace => break,
                    Some(next) = self.set.join_next_with_id() => {
                        let (next_name, next_reason, next_clean) = self.ended(next);
                        if !next_clean {
                            (name, reason) = (next_name, next_reason);
                            break;
                        }
                    }
                }
            }
        }
        (name, reason)
    }

    /// A task's name, why it ended, and whether it merely ended (no error, no panic).
    fn ended(&mut self, ended: JoinResult) -> (&'static str, String, bool) {
        let (id, reason, clean) = match ended {
            Ok((id, Ok(()))) => (id, "it ended while the server was running".to_owned(), true),
            Ok((id, Err(error))) => (id, error, false),
            Err(error) if error.is_panic() => {
                (error.id(), panic_message(error.into_panic()), false)
            }
            Err(error) => (error.id(), error.to_string(), false),
        };
        (self.names.remove(&id).unwrap_or("unnamed"), reason, clean)
    }

    /// Waits for every task to stop, at most `timeout`; then drops the rest.
    async fn stop_within(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.set.is_empty() {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(Some(ended)) => {
                    let id = match &ended {
                        Ok((id, _)) => *id,
                        Err(error) => error.id(),
                    };
                    let name = self.names.remove(&id).unwrap_or("unnamed");
                    if let Ok((_, Err(error))) = ended {
                        warn!("the {name} task failed while stopping: {error}");
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let running: Vec<&str> = self.names.values().copied().collect();
                    warn!(
                        "still running after the shutdown timeout ({timeout:?}), stopped: {}",
                        running.join(", ")
                    );
                    self.set.abort_all();
                    break;
                }
            }
        }
    }
}

/// Faults a test can inject into the real binary (feature `test-hooks`, which only the test
/// build enables): `REGIONDNS_TEST_PANIC=publisher` makes the publisher panic.
mod hooks {
    use std::future::Future;

    #[cfg(feature = "test-hooks")]
    pub async fn publisher<T>(task: impl Future<Output = T> + Send) -> T {
        if std::env::var("REGIONDNS_TEST_PANIC").as_deref() == Ok("publisher") {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            panic!("injected by REGIONDNS_TEST_PANIC");
        }
        task.await
    }

    #[cfg(not(feature = "test-hooks"))]
    pub fn publisher<F: Future>(task: F) -> F {
        task
    }
}
