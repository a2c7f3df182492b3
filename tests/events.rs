//! Failover events as the tools around the DNS receive them: a state change, a drain, an undrain
//! and a reload each reach the receiver in order, signed so that the README's receiver
//! (`scripts/event-receiver.py`, whose HMAC is Python's, not ours) accepts them; a receiver
//! that answers 500 is retried, one that hangs only loses its own events, counted on /metrics.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{
    self, Server,
    endpoint::{Endpoint, Mode},
    http, repo_root,
};
use serde_json::Value;

const SECRET: &str = "events-secret-for-the-test-0123456789";
const TOKEN: &str = "drill-token";

/// `scripts/event-receiver.py` on a port of its choosing, its printed events collected.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let mut child = Command::new("python3")
            .arg(repo_root().join("scripts/event-receiver.py"))
            .arg("0")
            .env("REGIONDNS_HOOK_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run scripts/event-receiver.py");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        stderr
            .read_line(&mut line)
            .expect("the receiver says where it listens");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        let printed = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&printed);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().expect("lock").push(line);
            }
        });
        Receiver {
            child,
            addr,
            printed,
        }
    }

    /// Waits until the receiver has printed `count` events; returns them, oldest first.
    fn until(&self, count: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let printed = self.printed.lock().expect("lock").clone();
            if printed.len() >= count {
                return printed
                    .iter()
                    .map(|l| serde_json::from_str(l).expect("JSON event"))
                    .collect();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{} of {count} events: {printed:?}",
                printed.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zone, with `receivers` for its events and the given TTL.
fn zone(dublin: &Endpoint, receivers: &[String], ttl: u32) -> String {
    let events: Vec<String> = receivers
        .iter()
        .map(|url| format!("  - {{ url: \"{url}\", secret: \"{SECRET}\" }}\n"))
        .collect();
    let extra = format!("ttl: {ttl}\nevents:\n{}", events.concat());
    common::dublin_checked_zone(&dublin.url(), &extra)
}

fn set_drained(server: &Server, drained: bool) {
    let action = if drained { "drain" } else { "undrain" };
    let path = format!("/regions/llm.example.com/eu-west/{action}");
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        server.admin.expect("admin"),
        "POST",
        &path,
        &[("Authorization", &auth)],
    );
    assert_eq!(status, 200, "{body}");
}

/// The counter of failover events with `result` for `receiver` on /metrics.
fn events_counted(server: &Server, receiver: &str, result: &str) -> u64 {
    let (_, metrics) = http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    let series =
        format!("regiondns_failover_events_total{{receiver=\"{receiver}\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn until_counted(server: &Server, receiver: &str, result: &str, at_least: u64) -> u64 {
    let start = Instant::now();
    loop {
        let counted = events_counted(server, receiver, result);
        if counted >= at_least {
            return counted;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{receiver} {result}: {counted}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_change_reaches_the_receiver_signed_and_in_order_and_a_bad_receiver_loses_only_its_own() {
    let receiver = Receiver::start();
    let failing = Endpoint::start(Mode::Fail);
    let hanging = Endpoint::start(Mode::Hang);
    let dublin = Endpoint::start(Mode::Ok);
    let good = format!("http://{}/", receiver.addr);
    let receivers = [good, failing.url(), hanging.url()];
    let server = Server::start_with_token(&zone(&dublin, &receivers, 3600), TOKEN);

    // Probes see Dublin fail.
    dublin.set(Mode::Fail);
    let events = receiver.until(1);
    let failed = &events[0];
    assert_eq!(failed["event"], "state", "{failed}");
    assert_eq!(
        (&failed["zone"], &failed["region"]),
        (&"llm.example.com.".into(), &"eu-west".into())
    );
    assert_eq!(
        (&failed["from"], &failed["to"]),
        (&"up".into(), &"down".into())
    );
    assert!(
        failed["reason"].as_str().is_some_and(|r| r.contains("503")),
        "{failed}"
    );
    assert!(
        failed["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{failed}"
    );

    // The operator drains and undrains it.
    set_drained(&server, true);
    set_drained(&server, false);
    let events = receiver.until(3);
    let (drain, undrain) = (&events[1], &events[2]);
    assert_eq!(drain["event"], "drain", "{drain}");
    assert_eq!(
        (&drain["from"], &drain["to"]),
        (&"down".into(), &"drained".into())
    );
    assert_eq!(undrain["event"], "undrain", "{undrain}");
    assert_eq!(
        (&undrain["from"], &undrain["to"]),
        (&"drained".into(), &"down".into())
    );
    let generations: Vec<u64> = events
        .iter()
        .filter_map(|e| e["generation"].as_u64())
        .collect();
    assert!(
        generations.is_sorted() && generations.len() == 3,
        "{generations:?}"
    );

    // The zone file is rewritten.
    let file = server.dir.path().join("zones/llm.yaml");
    std::fs::write(&file, zone(&dublin, &receivers, 600)).expect("rewrite the zone");
    let events = receiver.until(4);
    let reload = &events[3];
    assert_eq!(reload["event"], "reload", "{reload}");
    assert_eq!(reload["zone"], "llm.example.com.");
    assert!(
        reload["region"].is_null() && reload["from"].is_null(),
        "{reload}"
    );

    // The receiver checks signatures: a forged event is refused.
    let (status, _) = http(
        receiver.addr,
        "POST",
        "/",
        &[("X-Regiondns-Signature", "sha256=0000")],
    );
    assert_eq!(status, 401, "a forged event is refused");

    // A receiver answering 503 is retried, then given up on, and counted.
    until_counted(&server, &failing.url(), "failed", 1);
    assert!(
        failing.requests() >= 4,
        "retried: {} requests",
        failing.requests()
    );

    // 80 drains and undrains: the hanging receiver's queue fills and its events are dropped;
    // the good receiver gets every one, in order.
    for pair in 1..=40 {
        set_drained(&server, true);
        set_drained(&server, false);
        // At the good receiver's pace: it takes each pair before the next comes.
        receiver.until(4 + 2 * pair);
    }
    let events = receiver.until(84);
    let flood: Vec<&Value> = events[4..].iter().map(|e| &e["event"]).collect();
    assert!(
        flood
            .chunks(2)
            .all(|pair| pair == [&Value::from("drain"), &Value::from("undrain")]),
        "{flood:?}"
    );
    let dropped = until_counted(&server, &hanging.url(), "dropped", 1);
    assert!(dropped <= 84, "{dropped}");
    assert_eq!(events_counted(&server, "notifier", "dropped"), 0);
    assert!(
        server.log().contains("is behind"),
        "the drop is logged:\n{}",
        server.log()
    );

    // Answering went on throughout: Dublin is down, so London gets Virginia.
    let answered = common::until_answered(
        &server,
        "81.2.69.0/24",
        &["203.0.113.10"],
        Duration::from_secs(2),
    );
    assert!(answered.is_some());
}
