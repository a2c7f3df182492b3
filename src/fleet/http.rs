//! The fleet's transport: JSON over HTTP on a listener of its own (`--fleet-listen`), apart
//! from the admin API, so that the admin API can stay on loopback while peers reach each other.
//! Every request needs the fleet token, compared in constant time. `GET /fleet/view` serves this
//! instance's [`View`]; `POST /fleet/drain` takes a peer's [`DrainRecord`] and answers what became
//! of it ([`DrainReply`]). Bodies are capped at [`MAX_BODY`] both ways. [`PeerClient`] is the
//! other side: it polls the peers' views and pushes drains to them.

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

use serde::{Deserialize, Serialize};

use super::{
    DrainRecord, FleetEvent, View,
    ledger::{Refusal, Taken},
};

/// How often each peer's view is fetched: a change reaches every instance within a second.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// A peer that takes longer to answer is counted unreachable for that round.
const PEER_TIMEOUT: Duration = Duration::from_millis(900);
/// The largest body taken from a peer, either way: a view of 1,000 regions is about 200 KB.
pub const MAX_BODY: usize = 1 << 20;

/// A peer's answer to a drain record pushed to it (`POST /fleet/drain`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DrainReply {
    /// Merged: in force there from now on.
    Merged,
    /// It had the record already.
    Known,
    /// It keeps a newer record.
    Older { kept: DrainRecord },
    /// Refused, never merged: `reason` is the metric's label, `why` says it in words.
    Refused { reason: String, why: String },
}

impl DrainReply {
    /// Whether the record is in force at the peer.
    pub fn in_force(&self) -> bool {
        matches!(self, DrainReply::Merged | DrainReply::Known)
    }

    /// Whether the peer refused it for this instance's clock.
    pub fn refused_for_clock(&self) -> bool {
        matches!(self, DrainReply::Refused { reason, .. } if reason == Refusal::ClockAhead(Duration::ZERO).label())
    }
}

impl std::fmt::Display for DrainReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainReply::Merged => f.write_str("merged"),
            DrainReply::Known => f.write_str("known"),
            DrainReply::Older { kept } => write!(
                f,
                "older than its record ({} drained={})",
                kept.by, kept.drained
            ),
            DrainReply::Refused { why, .. } => write!(f, "refused: {why}"),
        }
    }
}

/// Whether most of a fleet of `instances` (this one included, which took the record) refused
/// it for this instance's clock: then it must not stay in force here alone.
pub fn refused_by_fleet(
    instances: usize,
    replies: &[(String, Result<DrainReply, String>)],
) -> bool {
    let refused = replies
        .iter()
        .filter(|(_, reply)| reply.as_ref().is_ok_and(DrainReply::refused_for_clock))
        .count();
    2 * refused > instances
}

impl From<Taken> for DrainReply {
    fn from(taken: Taken) -> DrainReply {
        match taken {
            Taken::Merged => DrainReply::Merged,
            Taken::Known => DrainReply::Known,
            Taken::Older { kept } => DrainReply::Older { kept },
            Taken::Refused(why) => DrainReply::Refused {
                reason: why.label().to_owned(),
                why: why.to_string(),
            },
        }
    }
}

/// This instance's view as the publisher last made it, and when: the probes' ages and the
/// clock are served as of the request.
#[derive(Debug, Clone)]
pub struct OwnView {
    pub view: View,
    pub made: Instant,
}

impl OwnView {
    fn now(&self) -> View {
        let since = u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut view = self.view.clone();
        view.clock = Some(super::ledger::system_clock().as_u64());
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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
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
    let (done, taken) = oneshot::channel();
    let event = FleetEvent::PeerDrain { record, done };
    if listener.events.send(event.into()).await.is_err() {
        return publisher_stopped();
    }
    match taken.await {
        Ok(taken) => Json(DrainReply::from(taken)).into_response(),
        Err(_) => publisher_stopped(),
    }
}

fn publisher_stopped() -> Response {
    let body = Json(serde_json::json!({ "error": "the health publisher is not running" }));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// Talks to the peers' fleet listeners, with the fleet token.
#[derive(Clone)]
pub struct PeerClient {
    client: reqwest::Client,
    token: Arc<str>,
    pub peers: Arc<[String]>,
}

impl PeerClient {
    /// `ca`: the one CA to trust for the peers' certificates (the system's roots are then not
    /// trusted: any public CA could issue a certificate for a peer's name).
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
            builder = builder.tls_certs_only([ca]);
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
        read_json(response).await
    }

    /// Sends `record` to every peer at once; each peer's reply, or why it gave none.
    pub async fn push_drain(
        &self,
        record: &DrainRecord,
    ) -> Vec<(String, Result<DrainReply, String>)> {
        let mut pushes = JoinSet::new();
        for peer in self.peers.iter() {
            let request = self
                .client
                .post(Self::url(peer, "/fleet/drain"))
                .bearer_auth(&self.token)
                .json(record)
                .send();
            let peer = peer.clone();
            pushes.spawn(async move {
                let reply = match request.await {
                    Ok(response) => read_json(response).await,
                    Err(error) => Err(error_text(&error)),
                };
                (peer, reply)
            });
        }
        let mut replies = Vec::new();
        while let Some(pushed) = pushes.join_next().await {
            if let Ok(reply) = pushed {
                replies.push(reply);
            }
        }
        replies.sort_by(|a, b| a.0.cmp(&b.0));
        replies
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

/// A successful reply's JSON body, read up to [`MAX_BODY`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
) -> Result<T, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY as u64)
    {
        return Err(format!("a body over {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_text(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("a body over {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a peer's JSON: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<DrainReply, String> {
        Ok(DrainReply::from(Taken::Refused(Refusal::ClockAhead(
            Duration::from_secs(7200),
        ))))
    }

    #[test]
    fn a_record_most_of_the_fleet_refused_for_the_clock_is_taken_back() {
        let peer = |name: &str, reply| (name.to_owned(), reply);
        let both = [peer("ns2", refused()), peer("ns3", refused())];
        assert!(refused_by_fleet(3, &both));
        let one = [peer("ns2", refused()), peer("ns3", Ok(DrainReply::Merged))];
        assert!(
            !refused_by_fleet(3, &one),
            "one peer's clock is the odd one"
        );
        let unreachable = [peer("ns2", refused()), peer("ns3", Err("timed out".into()))];
        assert!(!refused_by_fleet(3, &unreachable));
        let other = [peer(
            "ns2",
            Ok(DrainReply::Refused {
                reason: Refusal::UnknownRegion.label().into(),
                why: "no such region".into(),
            }),
        )];
        assert!(!refused_by_fleet(2, &other));
    }

    #[test]
    fn replies_read_back_as_written() {
        for reply in [
            refused().expect("reply"),
            DrainReply::Merged,
            DrainReply::Known,
        ] {
            let text = serde_json::to_string(&reply).expect("json");
            let back: DrainReply = serde_json::from_str(&text).expect("read back");
            assert_eq!(back, reply, "{text}");
        }
    }
}
