//! Failover events for the tools around the DNS (replication between regions, alerting, chat):
//! every state change, drain, undrain and reload of a zone is POSTed as JSON to the zone's
//! `events` receivers, signed with HMAC-SHA256 over the body.
//!
//! The publisher hands events over without waiting ([`Notices::send`]); the [`Notifier`] task
//! gives each receiver a bounded queue and a task that delivers in order, with retries and
//! backoff. A receiver that hangs or fails fills only its own queue: what does not fit is
//! dropped, counted on `/metrics` and logged. Nothing here answers queries or probes regions,
//! and nothing it does can delay either.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::metrics::counter::Counter;
use ring::hmac;
use serde_json::json;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::{EventHook, ZoneConfig},
    metrics::Metrics,
    region::{RegionKey, State},
};

/// The header that carries `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-regiondns-signature";
/// Events waiting for the notifier, and for each receiver.
const NOTICE_QUEUE: usize = 1024;
const RECEIVER_QUEUE: usize = 64;
/// Attempts per event and receiver, the wait before the second (doubled after each), and how
/// long one attempt may take.
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures and drops are logged at most this often per receiver.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// Probes moved the region to another state.
    State,
    Drain,
    Undrain,
    /// The zone's file was read again and its new version applies.
    Reload,
    /// A service started or stopped moving a region's clients for load.
    LoadShiftStart,
    LoadShiftStop,
}

impl Happening {
    pub fn as_str(self) -> &'static str {
        match self {
            Happening::State => "state",
            Happening::Drain => "drain",
            Happening::Undrain => "undrain",
            Happening::Reload => "reload",
            Happening::LoadShiftStart => "load_shift_start",
            Happening::LoadShiftStop => "load_shift_stop",
        }
    }
}

/// One event, as receivers get it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub happening: Happening,
    pub zone: String,
    /// The region and its states before and after; none for a reload.
    pub region: Option<(String, State, State)>,
    /// The service, for a load shift.
    pub service: Option<String>,
    pub reason: String,
    pub time: SystemTime,
    /// The routing snapshot that applied it.
    pub generation: u64,
}

impl Notice {
    /// A region's change of state: a drain when it becomes drained, an undrain when it stops
    /// being drained, else a change the probes made.
    pub fn state(key: &RegionKey, from: State, to: State, reason: &str, generation: u64) -> Notice {
        let happening = match (from, to) {
            (_, State::Drained) => Happening::Drain,
            (State::Drained, _) => Happening::Undrain,
            _ => Happening::State,
        };
        Notice {
            happening,
            zone: key.zone.clone(),
            region: Some((key.region.clone(), from, to)),
            service: None,
            reason: reason.to_owned(),
            time: SystemTime::now(),
            generation,
        }
    }

    pub fn reload(zone: &str, generation: u64) -> Notice {
        Notice {
            happening: Happening::Reload,
            zone: zone.to_owned(),
            region: None,
            service: None,
            reason: "the zone file was read again".into(),
            time: SystemTime::now(),
            generation,
        }
    }

    /// A service started or stopped moving the clients of a region (in `state`) for load.
    pub fn load_shift(
        key: &RegionKey,
        state: State,
        shift: &crate::timeline::LoadShift,
        reason: &str,
        generation: u64,
    ) -> Notice {
        Notice {
            happening: if shift.moving {
                Happening::LoadShiftStart
            } else {
                Happening::LoadShiftStop
            },
            zone: key.zone.clone(),
            region: Some((key.region.clone(), state, state)),
            service: Some(shift.service.clone()),
            reason: reason.to_owned(),
            time: SystemTime::now(),
            generation,
        }
    }

    /// The body POSTed.
    pub fn to_json(&self) -> Vec<u8> {
        let (region, from, to) = match &self.region {
            Some((region, from, to)) => (
                Some(region.as_str()),
                Some(from.as_str()),
                Some(to.as_str()),
            ),
            None => (None, None, None),
        };
        let body = json!({
            "event": self.happening.as_str(),
            "zone": self.zone,
            "region": region,
            "service": self.service,
            "from": from,
            "to": to,
            "reason": self.reason,
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "generation": self.generation,
        });
        body.to_string().into_bytes()
    }
}

/// `sha256=` and the lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    format!("sha256={}", data_encoding::HEXLOWER.encode(tag.as_ref()))
}

/// What the notifier is told.
#[derive(Debug)]
enum Message {
    Notice(Notice),
    /// The receivers of every zone, after a reload.
    Receivers(HashMap<String, Vec<EventHook>>),
}

/// The publisher's end: hands events over without waiting.
#[derive(Clone)]
pub struct Notices {
    queue: mpsc::Sender<Message>,
    dropped: Counter,
}

impl Notices {
    /// Hands `notice` to the notifier; when its queue is full the event is dropped and counted.
    pub fn send(&self, notice: Notice) {
        if self.queue.try_send(Message::Notice(notice)).is_err() {
            self.dropped.inc();
        }
    }

    /// The receivers of every zone in `zones`, from now on.
    pub fn receivers(&self, zones: &[ZoneConfig]) {
        if self
            .queue
            .try_send(Message::Receivers(receivers(zones)))
            .is_err()
        {
            warn!(
                "failover events: the notifier is behind; the new receivers apply with the next reload"
            );
        }
    }
}

fn receivers(zones: &[ZoneConfig]) -> HashMap<String, Vec<EventHook>> {
    let zones = zones.iter().filter(|z| !z.events.is_empty());
    zones
        .map(|z| (z.origin.to_string(), z.events.clone()))
        .collect()
}

/// Delivers events to every zone's receivers.
pub struct Notifier {
    receivers: HashMap<String, Vec<EventHook>>,
    queue: mpsc::Receiver<Message>,
    deliveries: HashMap<EventHook, mpsc::Sender<Arc<[u8]>>>,
    tasks: JoinSet<()>,
    /// Made when the first receiver is named: loading TLS roots costs start-up time.
    client: Option<reqwest::Client>,
    metrics: Arc<Metrics>,
    /// When a drop was last logged, per receiver.
    logged: HashMap<String, Instant>,
}

impl Notifier {
    /// The notifier for `zones`, and the publisher's end of it.
    pub fn new(zones: &[ZoneConfig], metrics: Arc<Metrics>) -> (Notifier, Notices) {
        let (sender, queue) = mpsc::channel(NOTICE_QUEUE);
        let notices = Notices {
            queue: sender,
            dropped: metrics.event_counter("notifier", "dropped"),
        };
        let notifier = Notifier {
            receivers: receivers(zones),
            queue,
            deliveries: HashMap::new(),
            tasks: JoinSet::new(),
            client: None,
            metrics,
            logged: HashMap::new(),
        };
        (notifier, notices)
    }

    /// Delivers until `shutdown` or until the publisher is gone; events still queued then are
    /// given up.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Infallible> {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // A delivery task ends when its receiver is no longer named; a panic is a
                    // bug, and takes the server down with its message.
                    if let Err(error) = ended
                        && error.is_panic()
                    {
                        std::panic::resume_unwind(error.into_panic());
                    }
                    continue;
                }
                message = self.queue.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            match message {
                Message::Notice(notice) => self.deliver(&notice, &shutdown),
                Message::Receivers(receivers) => {
                    self.receivers = receivers;
                    // A receiver no longer named finishes its queue and stops.
                    let named: Vec<&EventHook> = self.receivers.values().flatten().collect();
                    self.deliveries.retain(|hook, _| named.contains(&hook));
                }
            }
        }
        self.tasks.shutdown().await;
        Ok(())
    }

    fn deliver(&mut self, notice: &Notice, shutdown: &CancellationToken) {
        let Some(hooks) = self.receivers.get(&notice.zone).cloned() else {
            return;
        };
        let body: Arc<[u8]> = notice.to_json().into();
        for hook in hooks {
            let label = receiver_label(&hook.url);
            let Some(queue) = self.queue_of(&hook, shutdown) else {
                self.metrics.event_counter(&label, "failed").inc();
                continue;
            };
            if queue.try_send(Arc::clone(&body)).is_err() {
                self.metrics.event_counter(&label, "dropped").inc();
                let due = self
                    .logged
                    .get(&label)
                    .is_none_or(|at| at.elapsed() >= LOG_EVERY);
                if due {
                    warn!(receiver = %label, "failover events: {label} is behind ({RECEIVER_QUEUE} events queued): dropping events for it");
                    self.logged.insert(label, Instant::now());
                }
            }
        }
    }

    /// The queue of `hook`'s delivery task, started the first time it is needed; `None` when
    /// no HTTP client can be made (logged).
    fn queue_of(
        &mut self,
        hook: &EventHook,
        shutdown: &CancellationToken,
    ) -> Option<mpsc::Sender<Arc<[u8]>>> {
        if let Some(queue) = self.deliveries.get(hook) {
            return Some(queue.clone());
        }
        let client = match &self.client {
            Some(client) => client.clone(),
            None => match http_client() {
                Ok(client) => self.client.insert(client).clone(),
                Err(error) => {
                    warn!("failover events: cannot make an HTTP client: {error}");
                    return None;
                }
            },
        };
        let (sender, queue) = mpsc::channel(RECEIVER_QUEUE);
        let delivery = Delivery {
            hook: hook.clone(),
            label: receiver_label(&hook.url),
            client,
            metrics: Arc::clone(&self.metrics),
        };
        self.tasks.spawn(delivery.run(queue, shutdown.clone()));
        self.deliveries.insert(hook.clone(), sender.clone());
        Some(sender)
    }
}

/// A receiver's URL as metrics and logs name it: without credentials or query, which may hold
/// secrets.
fn receiver_label(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::health::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(ATTEMPT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("regiondns/", env!("CARGO_PKG_VERSION"), " events"))
        .build()
}

/// One receiver's deliveries, in order.
struct Delivery {
    hook: EventHook,
    label: String,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Delivery {
    async fn run(self, mut queue: mpsc::Receiver<Arc<[u8]>>, shutdown: CancellationToken) {
        let delivered = self.metrics.event_counter(&self.label, "delivered");
        let failed = self.metrics.event_counter(&self.label, "failed");
        let mut last_logged: Option<Instant> = None;
        loop {
            let body = tokio::select! {
                () = shutdown.cancelled() => return,
                body = queue.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
            };
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.deliver(&body) => outcome,
            };
            match outcome {
                Ok(()) => {
                    delivered.inc();
                }
                Err(reason) => {
                    failed.inc();
                    if last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        warn!(receiver = %self.label, "failover events: {}: gave up an event after {ATTEMPTS} attempts: {reason}", self.label);
                        last_logged = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// POSTs `body` until the receiver answers 2xx, at most [`ATTEMPTS`] times.
    async fn deliver(&self, body: &Arc<[u8]>) -> Result<(), String> {
        let signature = signature(&self.hook.secret, body);
        let mut wait = FIRST_RETRY;
        let mut reason = String::new();
        for attempt in 1..=ATTEMPTS {
            let request = self
                .client
                .post(self.hook.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .body(body.to_vec());
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    if attempt > 1 {
                        info!(receiver = %self.label, "failover events: {} took an event at attempt {attempt}", self.label);
                    }
                    return Ok(());
                }
                Ok(response) => reason = format!("HTTP {}", response.status().as_u16()),
                Err(error) => reason = crate::health::describe_http_error(&error),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231, test case 2.
        let body = b"what do ya want for nothing?";
        assert_eq!(
            signature("Jefe", body),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_notice_says_what_happened_in_json() {
        let key = RegionKey {
            zone: "llm.example.com.".into(),
            region: "eu-west".into(),
        };
        let drained = Notice::state(
            &key,
            State::Up,
            State::Drained,
            "drained by the operator",
            7,
        );
        let body: serde_json::Value = serde_json::from_slice(&drained.to_json()).expect("json");
        assert_eq!(body["event"], "drain");
        assert_eq!(body["zone"], "llm.example.com.");
        assert_eq!(body["region"], "eu-west");
        assert_eq!(
            (body["from"].as_str(), body["to"].as_str()),
            (Some("up"), Some("drained"))
        );
        assert_eq!(body["generation"], 7);
        let undrained = Notice::state(&key, State::Drained, State::Down, "undrained", 8);
        assert_eq!(undrained.happening, Happening::Undrain);
        let failed = Notice::state(&key, State::Up, State::Down, "3 consecutive failures", 9);
        assert_eq!(failed.happening, Happening::State);
        let shift = crate::timeline::LoadShift {
            service: "api.llm.example.com.".into(),
            moving: true,
        };
        let moving = Notice::load_shift(&key, State::Up, &shift, "load 92% above 80%", 10);
        let body: serde_json::Value = serde_json::from_slice(&moving.to_json()).expect("json");
        assert_eq!(body["event"], "load_shift_start");
        assert_eq!(body["service"], "api.llm.example.com.");
        assert_eq!(
            (body["from"].as_str(), body["to"].as_str()),
            (Some("up"), Some("up"))
        );
        let reload: serde_json::Value =
            serde_json::from_slice(&Notice::reload("llm.example.com.", 10).to_json())
                .expect("json");
        assert_eq!(reload["event"], "reload");
        assert!(reload["region"].is_null());
    }

    #[test]
    fn receivers_are_named_without_credentials_or_query() {
        let url = reqwest::Url::parse("https://user:pw@hooks.example.com/dns?token=s3cret#x")
            .expect("url");
        assert_eq!(receiver_label(&url), "https://hooks.example.com/dns");
    }
}
