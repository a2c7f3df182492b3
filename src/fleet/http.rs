//! The fleet's transport: JSON over HTTP on a listener of its own (`--fleet-listen`), apart
//! from the admin API, so that the admin API can stay on loopback while peers reach each other.
//! Every request needs the fleet token, compared in constant time. `GET /fleet/view` serves this
//! instance's [`View`]; `POST /fleet/drain` takes a peer's [`DrainRecord`]. [`PeerClient`] is
//! the other side: it polls the peers' views and pushes drains to them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{DrainRecord, FleetEvent, View};

/// How often each peer's view is fetched: a change reaches every instance within a second.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// A peer that takes longer to answer is counted unreachable for that round.
const PEER_TIMEOUT: Duration = Duration::from_millis(900);

/// This instance's view as the publisher last made it, and when: the probes' ages are served
/// as of the request.
#[derive(Debug, Clone)]
pub struct OwnView {
    pub view: View,
    pub made: Instant,
}

impl OwnView {
    fn now(&self) -> View {
        let since = u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut view = self.view.clone();
        for region in &mut view.regions {
            region.probe_age_ms = region.probe_age_ms.map(|age| age.saturating_add(since));
        }
        view
    }
}

struct Listener<E> {
    view: Arc<ArcSwap<OwnView>>,
    events: mpsc::Sender<E>,
    token: Arc<str>,
}

impl<E> Clone for Listener<E> {
    fn clone(&self) -> Self {
        Listener {
            view: Arc::clone(&self.view),
            events: self.events.clone(),
            token: Arc::clone(&self.token),
        }
    }
}

/// The fleet listener's routes, every one behind the token; what peers send goes to `events`
/// (the publisher's queue).
pub fn router<E: From<FleetEvent> + Send + 'static>(
    view: Arc<ArcSwap<OwnView>>,
    events: mpsc::Sender<E>,
    token: &str,
) -> Router {
    let listener = Listener {
        view,
        events,
        token: token.into(),
    };
    Router::new()
        .route("/fleet/view", get(serve_view))
        .route("/fleet/drain", post(take_drain))
        .layer(middleware::from_fn_with_state(listener.clone(), authorized))
        .with_state(listener)
}

async fn authorized<E>(
    State(listener): State<Listener<E>>,
    request: Request,
    next: Next,
) -> Response {
    if crate::bearer::bearer_is(request.headers(), &listener.token) {
        next.run(request).await
    } else {
        let body = Json(serde_json::json!({ "error": "a valid fleet token is required" }));
        (StatusCode::UNAUTHORIZED, body).into_response()
    }
}

async fn serve_view<E>(State(listener): State<Listener<E>>) -> Json<View> {
    Json(listener.view.load().now())
}

async fn take_drain<E: From<FleetEvent>>(
    State(listener): State<Listener<E>>,
    Json(record): Json<DrainRecord>,
) -> Response {
    let (done, applied) = oneshot::channel();
    let event = FleetEvent::PeerDrain { record, done };
    if listener.events.send(event.into()).await.is_err() || applied.await.is_err() {
        let body = Json(serde_json::json!({ "error": "the health publisher is not running" }));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    Json(serde_json::json!({ "applied": true })).into_response()
}

/// Talks to the peers' fleet listeners, with the fleet token.
#[derive(Clone)]
pub struct PeerClient {
    client: reqwest::Client,
    token: Arc<str>,
    pub peers: Arc<[String]>,
}

impl PeerClient {
    /// `ca`: a PEM certificate to trust besides the system's, for peers under a private CA.
    pub fn new(
        peers: Vec<String>,
        token: &str,
        instance: &str,
        ca: Option<reqwest::Certificate>,
    ) -> Result<PeerClient, reqwest::Error> {
        crate::health::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PEER_TIMEOUT)
            .user_agent(crate::health::user_agent(instance));
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        Ok(PeerClient {
            client: builder.build()?,
            token: token.into(),
            peers: peers.into(),
        })
    }

    fn url(peer: &str, path: &str) -> String {
        format!("{}{path}", peer.trim_end_matches('/'))
    }

    /// A peer's view, or why not.
    pub async fn view(&self, peer: &str) -> Result<View, String> {
        let response = self
            .client
            .get(Self::url(peer, "/fleet/view"))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| error_text(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        response.json().await.map_err(|e| error_text(&e))
    }

    /// Sends `record` to every peer at once; how many applied it.
    pub async fn push_drain(&self, record: &DrainRecord) -> usize {
        let mut pushes = JoinSet::new();
        for peer in self.peers.iter() {
            let request = self
                .client
                .post(Self::url(peer, "/fleet/drain"))
                .bearer_auth(&self.token)
                .json(record)
                .send();
            pushes.spawn(async move { request.await.is_ok_and(|r| r.status().is_success()) });
        }
        let mut applied = 0;
        while let Some(pushed) = pushes.join_next().await {
            applied += usize::from(pushed.unwrap_or(false));
        }
        applied
    }

    /// Fetches every peer's view every [`POLL_EVERY`] and hands each to the publisher: one
    /// loop per peer, so that a peer that hangs delays no other's view.
    pub async fn poll<E: From<FleetEvent> + Send + 'static>(
        self,
        events: mpsc::Sender<E>,
        shutdown: CancellationToken,
    ) -> Result<(), tokio::task::JoinError> {
        let mut loops = JoinSet::new();
        for peer in self.peers.iter().cloned() {
            let (client, events) = (self.clone(), events.clone());
            loops.spawn(client.poll_one(peer, events, shutdown.clone()));
        }
        while let Some(ended) = loops.join_next().await {
            if let Err(error) = ended
                && error.is_panic()
            {
                return Err(error);
            }
        }
        Ok(())
    }

    async fn poll_one<E: From<FleetEvent>>(
        self,
        peer: String,
        events: mpsc::Sender<E>,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let view = tokio::select! {
                () = shutdown.cancelled() => return,
                view = self.view(&peer) => view,
            };
            let event = FleetEvent::PeerView {
                peer: peer.clone(),
                view,
                fetched: Instant::now(),
            };
            if events.send(event.into()).await.is_err() {
                return;
            }
        }
    }
}

/// A request's error with its causes (reqwest's own text hides them).
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
