//! How long health takes to move traffic, on tokio's paused clock: the real prober loop,
//! tracker and publisher, with a scripted probe in place of the network. Time only moves when
//! every task waits, so the figures are exact and no test depends on the machine being idle.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use regiondns::{
    config::{self, ZoneConfig},
    health::{Outcome, ProbeResult, Prober, probe_loop},
    metrics::Metrics,
    publish::Publisher,
    region::{RegionKey, State},
    routing::RoutingTable,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_secs(1);

/// A probe that answers what the test last told it to.
#[derive(Clone)]
struct Script(Arc<Mutex<(Outcome, Duration)>>);

impl Script {
    fn new() -> Script {
        Script(Arc::new(Mutex::new((
            Outcome::Success,
            Duration::from_millis(5),
        ))))
    }

    fn set(&self, outcome: Outcome, latency: Duration) {
        *self.0.lock().expect("script") = (outcome, latency);
    }
}

impl Prober for Script {
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send {
        let (outcome, latency) = self.0.lock().expect("script").clone();
        async move {
            tokio::time::sleep(latency).await;
            ProbeResult {
                outcome,
                latency,
                load: None,
            }
        }
    }
}

/// eu-west, checked every second with these thresholds (YAML), and us-east unchecked.
fn zone(thresholds: &str) -> ZoneConfig {
    let text = format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns.example.net., contact: h.example.net. }}
ns: [ns.example.net.]
regions:
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10] }}
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    addresses: [203.0.113.20]
    check: {{ tcp: "127.0.0.1:9", interval: 1s, timeout: 500ms, {thresholds} }}
services:
  api: {{ regions: [us-east, eu-west] }}
"#
    );
    config::parse(Path::new("t.yaml"), &text, 1).expect("valid zone")
}

/// The publisher and eu-west's prober running on the paused clock; the routing table they publish.
fn start(zone: &ZoneConfig, script: &Script) -> Arc<ArcSwap<RoutingTable>> {
    let zones = std::slice::from_ref(zone);
    let geo = crate::common::query_path::bundled_geoip();
    let publisher = Publisher::new(zones, geo, None, Arc::new(Metrics::new())).expect("compiled");
    let table = publisher.table();
    let (_events, event_queue) = mpsc::channel(16);
    let (reports, report_queue) = mpsc::channel(16);
    tokio::spawn(publisher.run(event_queue, report_queue, CancellationToken::new()));
    let check = zone.regions[1].check.clone().expect("eu-west has a check");
    let key = RegionKey {
        zone: "llm.example.com.".into(),
        region: "eu-west".into(),
    };
    tokio::spawn(probe_loop(key, check, script.clone(), reports));
    table
}

fn eu_west(table: &ArcSwap<RoutingTable>) -> State {
    table.load().zones()[0].services()[0].states[1]
}

/// Virtual time until eu-west is in `state`, polled every 10 ms; `None` after `limit`.
async fn until(table: &ArcSwap<RoutingTable>, state: State, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if eu_west(table) == state {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_failing_region_is_down_after_fall_probes_and_up_after_rise_probes() {
    let script = Script::new();
    let table = start(&zone("fall: 3, rise: 2"), &script);
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(eu_west(&table), State::Up);

    script.set(
        Outcome::Failure("HTTP 503".into()),
        Duration::from_millis(5),
    );
    let down = until(&table, State::Down, INTERVAL * 10)
        .await
        .expect("down");
    assert!(
        down > INTERVAL * 2 && down <= INTERVAL * 3 + Duration::from_millis(20),
        "3 failed probes, one a second: down after {down:?}"
    );

    script.set(Outcome::Success, Duration::from_millis(5));
    let up = until(&table, State::Up, INTERVAL * 10).await.expect("up");
    assert!(
        up > INTERVAL && up <= INTERVAL * 2 + Duration::from_millis(20),
        "2 successful probes: up after {up:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn flapping_below_fall_never_moves_the_region() {
    let script = Script::new();
    let table = start(&zone("fall: 3, rise: 2, window: 100"), &script);
    for probe in 0..40 {
        let outcome = if probe % 3 == 2 {
            Outcome::Success
        } else {
            Outcome::Failure("connection refused".into())
        };
        script.set(outcome, Duration::from_millis(5));
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(eu_west(&table), State::Up, "after {probe} probes");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_or_overloaded_probes_make_a_region_degraded_then_healthy_ones_up() {
    let script = Script::new();
    let table = start(&zone("fall: 2, rise: 2, slow: 200ms"), &script);
    tokio::time::sleep(INTERVAL * 2).await;

    script.set(Outcome::Success, Duration::from_millis(300));
    let degraded = until(&table, State::Degraded, INTERVAL * 10)
        .await
        .expect("degraded");
    assert!(
        degraded <= INTERVAL * 2 + Duration::from_millis(400),
        "{degraded:?}"
    );

    script.set(Outcome::Success, Duration::from_millis(5));
    until(&table, State::Up, INTERVAL * 3)
        .await
        .expect("up again");

    script.set(
        Outcome::Overloaded("HTTP 429".into()),
        Duration::from_millis(5),
    );
    until(&table, State::Degraded, INTERVAL * 3)
        .await
        .expect("overloaded is degraded");
}
