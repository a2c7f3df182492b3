//! The operator's record of what happened: a region that fails and heals leaves two rows, newest
//! first, on `/events` and on the status page, with when, from, to and why.

use std::time::{Duration, Instant};

use crate::common::{
    self, Server,
    endpoint::{Endpoint, Mode},
    http,
};
use serde_json::Value;

fn events(server: &Server) -> Vec<Value> {
    let (status, body) = http(server.admin.expect("admin"), "GET", "/events", &[]);
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).expect("JSON");
    json["events"].as_array().expect("an events list").clone()
}

fn until_events(server: &Server, count: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = events(server);
        if events.len() >= count {
            return events;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{events:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failure_and_its_recovery_are_on_the_timeline_newest_first() {
    let dublin = Endpoint::start(Mode::Ok);
    let zone = common::dublin_checked_zone(&dublin.url(), "");
    let server = Server::start(&zone);
    std::thread::sleep(Duration::from_millis(500));
    assert!(events(&server).is_empty(), "nothing happened yet");

    dublin.set(Mode::Fail);
    let events = until_events(&server, 1);
    let down = &events[0];
    assert_eq!(
        (&down["region"], &down["from"], &down["to"]),
        (&"eu-west".into(), &"up".into(), &"down".into())
    );
    assert_eq!(down["zone"], "llm.example.com.");
    assert!(
        down["reason"].as_str().expect("a reason").contains("503"),
        "{down}"
    );

    dublin.set(Mode::Ok);
    let events = until_events(&server, 2);
    assert_eq!(
        (&events[0]["from"], &events[0]["to"]),
        (&"down".into(), &"up".into())
    );
    assert_eq!(events[1], *down, "the older change stays, second");
    assert!(events[0]["generation"].as_u64() > down["generation"].as_u64());

    let (_, page) = http(server.admin.expect("admin"), "GET", "/", &[]);
    let table = page
        .split("<table id=\"changes\">")
        .nth(1)
        .expect("the changes table");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("<tr class="))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].contains("<td>eu-west</td><td>down</td><td class=\"state\">up</td>"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("<td>eu-west</td><td>up</td><td class=\"state\">down</td>"),
        "{}",
        rows[1]
    );
}
