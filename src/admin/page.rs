//! The status page: server-rendered HTML with inline SVG, no script and no external asset, so it
//! works offline and without JavaScript, refreshing itself. A world map with each region as a
//! marker coloured by state and the answers' flows from client continents to regions; the
//! shares behind the flows as a table; per region its state, reason, and sparklines of answers
//! per second and probe latency over the last 15 minutes; the last state changes.
//!
//! Everything here is a pure function of one [`View`]; the admin API gathers it and serves the
//! same data as JSON.

use std::{collections::BTreeMap, fmt::Write};

use html_escape::encode_text as text;

use crate::{
    counter::QueryCounter,
    fleet::FleetBoard,
    geo::{Continent, Coordinates},
    history::{History, Rate, Sample},
    metrics::{CONTINENT_SLOTS, continent_label},
    publish::HealthMap,
    region::{RegionKey, State},
    routing::{RoutingTable, ServiceRoutes, ZoneRoutes},
    timeline::Timeline,
    transfer::{SecondaryLog, serial_lt},
};

/// Land outlines: Natural Earth 1:110m (public domain), equirectangular, from
/// `scripts/world-map.py`.
const LAND: &str = include_str!("../../assets/world-110m.path");
pub const REFRESH_SECONDS: u32 = 2;
/// State changes shown (all of them are on `/events`).
const CHANGES_SHOWN: usize = 20;

/// Everything the page shows, read once per request.
pub struct View<'a> {
    pub table: &'a RoutingTable,
    pub board: &'a HealthMap,
    pub timeline: &'a Timeline,
    /// The samples of the last 15 minutes, and one taken now.
    pub history: &'a History,
    pub now: &'a Sample,
    pub fleet: &'a FleetBoard,
    pub secondaries: &'a SecondaryLog,
}

/// A region as the map shows it.
pub struct Marker {
    pub key: RegionKey,
    pub location: Coordinates,
    pub state: State,
}

/// Every region once (a region in several services is one place), with its current state.
pub fn markers(table: &RoutingTable, board: &HealthMap) -> Vec<Marker> {
    let mut markers: BTreeMap<RegionKey, Marker> = BTreeMap::new();
    for service in table.zones().iter().flat_map(|z| z.services()) {
        for (region, &state) in service.plan.regions.iter().zip(&service.states) {
            let state = board.get(&region.key).map_or(state, |s| s.state());
            markers.entry(region.key.clone()).or_insert(Marker {
                key: region.key.clone(),
                location: region.location,
                state,
            });
        }
    }
    markers.into_values().collect()
}

/// One region's part of one client continent's answers over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub key: RegionKey,
    pub continent: &'static str,
    pub answers: u64,
    /// Of the continent's answers in the region's zone.
    pub fraction: f64,
}

/// The answers' shares per zone and client continent since the oldest sample.
pub fn shares(history: &History, now: &Sample) -> Vec<Share> {
    let counts = crate::history::shares(history, now);
    let mut totals: BTreeMap<(&str, usize), u64> = BTreeMap::new();
    for (key, answers) in &counts {
        for (slot, &n) in answers.iter().enumerate() {
            *totals.entry((key.zone.as_str(), slot)).or_default() += n;
        }
    }
    let mut shares = Vec::new();
    for slot in 0..CONTINENT_SLOTS {
        for (key, answers) in &counts {
            let total = totals.get(&(key.zone.as_str(), slot)).copied().unwrap_or(0);
            if total == 0 {
                continue;
            }
            shares.push(Share {
                key: key.clone(),
                continent: continent_label(slot),
                answers: answers[slot],
                fraction: answers[slot] as f64 / total as f64,
            });
        }
    }
    shares
}

pub fn render(view: &View<'_>) -> String {
    let mut page = HEAD.replace("REFRESH", &REFRESH_SECONDS.to_string());
    let updated = humantime::format_rfc3339_seconds(view.now.time);
    let _ = writeln!(
        page,
        "<p>updated {updated} (refreshes every {REFRESH_SECONDS} s)</p>"
    );
    let shares = shares(view.history, view.now);
    let markers = markers(view.table, view.board);
    page.push_str(&map(&markers, &shares));
    page.push_str(&shares_table(&shares));
    page.push_str(&regions(view));
    page.push_str(&fleet(view.fleet));
    page.push_str(&recent_changes(view.timeline));
    page.push_str("</body>\n</html>\n");
    page
}

/// Equirectangular: x is longitude + 180, y is 90 - latitude, in a 360 x 180 box.
fn point(c: Coordinates) -> (f64, f64) {
    (c.lon + 180.0, 90.0 - c.lat)
}

/// Where a continent's flows start.
fn centre(continent: &str) -> Option<Coordinates> {
    let (lat, lon) = match Continent::from_code(continent)? {
        Continent::Africa => (5.0, 20.0),
        Continent::Antarctica => (-78.0, 20.0),
        Continent::Asia => (40.0, 95.0),
        Continent::Europe => (50.0, 12.0),
        Continent::NorthAmerica => (42.0, -100.0),
        Continent::Oceania => (-25.0, 135.0),
        Continent::SouthAmerica => (-15.0, -60.0),
    };
    Some(Coordinates { lat, lon })
}

fn map(markers: &[Marker], shares: &[Share]) -> String {
    let mut svg = String::from(
        "<h2>where answers go</h2>\n<svg id=\"map\" viewBox=\"0 0 360 180\" width=\"720\" height=\"360\" role=\"img\" aria-label=\"regions and the share of answers each gets per client continent\">\n<rect class=\"sea\" width=\"360\" height=\"180\"/>\n",
    );
    let _ = writeln!(svg, "<path class=\"land\" d=\"{}\"/>", LAND.trim());
    let at = |key: &RegionKey| {
        markers
            .iter()
            .find(|m| &m.key == key)
            .map(|m| point(m.location))
    };
    for share in shares.iter().filter(|s| s.fraction >= 0.01) {
        let (Some(from), Some(to)) = (centre(share.continent), at(&share.key)) else {
            continue;
        };
        let (x1, y1) = point(from);
        let (x2, y2) = to;
        let _ = writeln!(
            svg,
            "<line class=\"flow\" data-continent=\"{c}\" data-region=\"{zone}/{region}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke-width=\"{w:.2}\"><title>{c} to {region}: {p:.0}%</title></line>",
            c = share.continent,
            zone = text(&share.key.zone),
            region = text(&share.key.region),
            w = 0.4 + 3.0 * share.fraction,
            p = share.fraction * 100.0,
        );
    }
    for marker in markers {
        let (x, y) = point(marker.location);
        let _ = writeln!(
            svg,
            "<g id=\"marker-{zone}/{region}\" class=\"marker {state}\"><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/><text x=\"{tx:.1}\" y=\"{y:.1}\">{region}</text><title>{region}: {state}</title></g>",
            zone = text(&marker.key.zone),
            region = text(&marker.key.region),
            state = marker.state.as_str(),
            tx = x + 4.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn shares_table(shares: &[Share]) -> String {
    let mut html = String::from(
        "<h2>answers by client continent (last 15 minutes)</h2>\n<table id=\"shares\">\n<tr><th>continent</th><th>zone</th><th>region</th><th>answers</th><th>share</th></tr>\n",
    );
    for share in shares.iter().filter(|s| s.answers > 0) {
        let _ = writeln!(
            html,
            "<tr data-continent=\"{c}\" data-region=\"{zone}/{region}\"><td>{c}</td><td>{zone}</td><td>{region}</td><td>{n}</td><td class=\"share\">{p:.0}%</td></tr>",
            c = share.continent,
            zone = text(&share.key.zone),
            region = text(&share.key.region),
            n = share.answers,
            p = share.fraction * 100.0,
        );
    }
    html.push_str("</table>\n");
    html
}

/// Per zone and service, each region's state, reason, since, last probe and sparklines.
fn regions(view: &View<'_>) -> String {
    let mut html = String::new();
    for zone in view.table.zones() {
        let origin = zone.data.origin_name().to_string();
        let _ = writeln!(html, "<h2>zone {}</h2>", text(&origin));
        if let Some(line) = secondaries_line(zone, view.secondaries) {
            html.push_str(&line);
        }
        for service in zone.services() {
            let _ = writeln!(
                html,
                "<h3>service {}</h3>\n<table>\n<tr><th>region</th><th>state</th><th>reason</th><th>since</th><th>last probe</th><th>answers</th><th>region's answers/s, 15 min</th><th>probe ms, 15 min</th><th>load, 15 min</th><th>moved for load</th></tr>",
                text(&service.plan.name)
            );
            for (i, (region, state)) in service.plan.regions.iter().zip(&service.states).enumerate()
            {
                let status = view.board.get(&region.key);
                let probe = status
                    .and_then(|s| s.last_probe.as_ref())
                    .map_or("-".into(), |p| format!("{} ms", p.latency.as_millis()));
                let rates = view.history.rates(&region.key, Some(view.now));
                let _ = writeln!(
                    html,
                    "<tr id=\"{zone}/{name}\" class=\"{state}\"><td>{name}</td><td class=\"state\">{state}</td><td>{reason}</td><td>{since}</td><td>{probe}</td><td>{answers}</td><td class=\"trend\">{rate}</td><td class=\"trend\">{latency}</td><td class=\"trend\">{load}</td><td class=\"moved\">{moved}</td></tr>",
                    zone = text(&region.key.zone),
                    name = text(&region.key.region),
                    state = state.as_str(),
                    reason = text(status.map_or("", |s| s.reason.as_str())),
                    since = status
                        .map_or("-".into(), |s| humantime::format_rfc3339_seconds(s.since)
                            .to_string()),
                    answers = region.answered.get(),
                    rate = sparkline("rate", &rates, |r| Some(r.answers_per_second), "/s"),
                    latency = sparkline("latency", &rates, |r| r.probe_ms, " ms"),
                    load = sparkline("load", &rates, |r| r.load.map(|l| l * 100.0), "%"),
                    moved = service
                        .loads
                        .get(i)
                        .map_or("-".into(), |l| format!("{:.0}%", (1.0 - l.kept) * 100.0)),
                );
            }
            html.push_str("</table>\n");
            if let Some(line) = latency_line(view, service) {
                html.push_str(&line);
            }
        }
    }
    html
}

/// For a transferred zone: the serial its secondaries are given and each one's last transfer,
/// those behind marked.
fn secondaries_line(zone: &ZoneRoutes, seen: &SecondaryLog) -> Option<String> {
    let serial = zone.transferred.as_ref()?.serial;
    let origin = zone.data.origin_name().to_string();
    let each: Vec<String> = seen
        .0
        .get(&origin)
        .into_iter()
        .flatten()
        .map(|(address, last)| {
            let behind = serial_lt(last.serial, serial);
            format!(
                "<span class=\"{}\">{address}: {} by {}{}</span>",
                if behind { "behind" } else { "current" },
                last.serial,
                last.kind,
                if behind { ", behind" } else { "" }
            )
        })
        .collect();
    let secondaries = match each.is_empty() {
        true => "none has transferred it yet".to_owned(),
        false => each.join(", "),
    };
    Some(format!(
        "<p class=\"secondaries\">serial {serial} for secondaries; {secondaries}</p>\n"
    ))
}

/// Each transferred zone for `/transfers`: its serial, NOTIFY targets, and every secondary's
/// last transfer and whether it is behind.
pub fn transferred_zones(table: &RoutingTable, seen: &SecondaryLog) -> Vec<serde_json::Value> {
    table
        .zones()
        .iter()
        .filter_map(|zone| {
            let policy = zone.transfer.as_ref()?;
            let serial = zone.transferred.as_ref().map(|t| t.serial);
            let origin = zone.data.origin_name().to_string();
            let secondaries: Vec<serde_json::Value> = seen
                .0
                .get(&origin)
                .into_iter()
                .flatten()
                .map(|(address, last)| {
                    serde_json::json!({
                        "address": address,
                        "kind": last.kind,
                        "serial": last.serial,
                        "at": last.at,
                        "behind": serial.is_some_and(|s| serial_lt(last.serial, s)),
                    })
                })
                .collect();
            let notify: Vec<String> = policy.notify.iter().map(ToString::to_string).collect();
            Some(serde_json::json!({
                "zone": origin,
                "serial": serial,
                "notify": notify,
                "secondaries": secondaries,
            }))
        })
        .collect()
}

/// For a `policy: latency` service: each region's median measured round trip and the share of
/// its answers that measurements moved to it from the region nearest on the map, and the
/// service's answers by what they rested on.
fn latency_line(view: &View<'_>, service: &ServiceRoutes) -> Option<String> {
    let counts = service.plan.latency_answers.as_ref()?.counts();
    let medians = view.table.latency.as_ref().map(|t| &t.summary.medians);
    let regions = service.plan.regions.iter().map(|r| {
        let median = medians.and_then(|m| m.get(&r.key.region));
        let shown = median.map_or("not measured".into(), |ms| format!("{ms:.0} ms"));
        let moved = r.moved_by_latency.as_ref().map_or(0, QueryCounter::get);
        let moved = moved as f64 / r.answered.get().max(1) as f64 * 100.0;
        format!(
            "{} {shown} ({moved:.0}% of its answers moved here from the nearest)",
            text(&r.key.region)
        )
    });
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let share = |n: u64| n as f64 / total * 100.0;
    Some(format!(
        "<p class=\"latency\">median measured round trip: {}; answers by measured round trips \
         {:.1}%, by distance {:.1}%, explored {:.1}%</p>\n",
        regions.collect::<Vec<_>>().join(", "),
        share(counts[0]),
        share(counts[1]),
        share(counts[2])
    ))
}

/// A small line of `value` over the points, scaled to its own maximum, and the last value.
fn sparkline(
    class: &str,
    rates: &[Rate],
    value: impl Fn(&Rate) -> Option<f64>,
    unit: &str,
) -> String {
    let values: Vec<f64> = rates.iter().map(|r| value(r).unwrap_or(0.0)).collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    let step = 90.0 / (crate::history::KEPT as f64);
    let offset = 90.0 - step * values.len() as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                19.0 - 18.0 * v / max
            } else {
                19.0
            };
            format!("{:.1},{y:.1}", offset + step * (i as f64 + 1.0))
        })
        .collect();
    let last = rates.last().and_then(&value);
    let shown = last.map_or("-".into(), |v| format!("{v:.0}{unit}"));
    // The latest point as a dot: visible from the first sample on.
    let dot = points
        .last()
        .and_then(|p| p.split_once(','))
        .map_or(String::new(), |(x, y)| {
            format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"1.5\"/>")
        });
    format!(
        "<svg class=\"spark {class}\" data-points=\"{n}\" width=\"90\" height=\"20\" viewBox=\"0 0 90 20\"><polyline points=\"{p}\"/>{dot}</svg> {shown}",
        n = points.len(),
        p = points.join(" "),
    )
}

/// The fleet panel: each peer (reachable, the age of its view, its zone hash and GeoIP build,
/// mismatches marked) and how the fleet voted on each region. Nothing outside a fleet.
fn fleet(board: &FleetBoard) -> String {
    if board.peers.is_empty() {
        return String::new();
    }
    let mut html = String::from("<h2>fleet</h2>\n");
    let decides = if board.deciding_alone {
        "no fresh view from any peer: this instance decides alone"
    } else {
        "health is the fleet's majority"
    };
    let _ = writeln!(
        html,
        "<p id=\"fleet-mode\">{} ({}): {decides}{}</p>",
        text(&board.instance),
        text(&board.config_hash),
        if board.vantage_impaired {
            "; <strong>this instance's vantage point is impaired</strong>"
        } else {
            ""
        }
    );
    html.push_str("<table id=\"peers\">\n<tr><th>peer</th><th>instance</th><th>state</th><th>view age</th><th>zone files</th><th>GeoIP build</th><th>latency table</th></tr>\n");
    for peer in &board.peers {
        let state = if peer.reachable { "up" } else { "down" };
        let said = if peer.reachable {
            "reachable".to_owned()
        } else {
            format!(
                "unreachable: {}",
                peer.error.as_deref().unwrap_or("no view yet")
            )
        };
        let mark = |matches: bool| if matches { "" } else { " (differs)" };
        let _ = writeln!(
            html,
            "<tr class=\"{state}\"><td>{url}</td><td>{instance}</td><td class=\"state\">{said}</td><td>{age}</td><td>{config}{config_mark}</td><td>{geoip}{geoip_mark}</td><td>{latency}{latency_mark}</td></tr>",
            url = text(&peer.url),
            instance = text(peer.instance.as_deref().unwrap_or("?")),
            said = text(&said),
            age = peer
                .view_age_ms
                .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            config = text(peer.config_hash.as_deref().unwrap_or("-")),
            config_mark = mark(peer.config_matches),
            geoip = text(peer.geoip_build.as_deref().unwrap_or("-")),
            geoip_mark = mark(peer.geoip_matches),
            latency = text(
                peer.latency_table
                    .as_deref()
                    .map_or("-", |sha| sha.get(..12).unwrap_or("none"))
            ),
            latency_mark = mark(peer.latency_matches),
        );
    }
    html.push_str("</table>\n<table id=\"agreement\">\n<tr><th>zone</th><th>region</th><th>probes here</th><th>fleet</th><th>votes</th></tr>\n");
    for region in &board.regions {
        let _ = writeln!(
            html,
            "<tr><td>{zone}</td><td>{name}</td><td>{probed}</td><td class=\"state\">{agreed}</td><td>{down} down, {degraded} degraded of {voters}</td></tr>",
            zone = text(&region.zone),
            name = text(&region.region),
            probed = region.probed.as_str(),
            agreed = region.agreed.as_str(),
            down = region.down,
            degraded = region.degraded,
            voters = region.voters,
        );
    }
    html.push_str("</table>\n");
    html
}

/// The last state changes, newest first.
fn recent_changes(timeline: &Timeline) -> String {
    let mut html = String::from(
        "<h2>recent changes</h2>\n<table id=\"changes\">\n<tr><th>time</th><th>zone</th><th>region</th><th>from</th><th>to</th><th>reason</th></tr>\n",
    );
    for change in timeline.changes().take(CHANGES_SHOWN) {
        let _ = writeln!(
            html,
            "<tr class=\"{to}\"><td>{time}</td><td>{zone}</td><td>{region}</td><td>{from}</td><td class=\"state\">{to}</td><td>{reason}</td></tr>",
            time = humantime::format_rfc3339_seconds(change.time),
            zone = text(&change.key.zone),
            region = text(&change.key.region),
            from = change.from.as_str(),
            to = change.to.as_str(),
            reason = text(&change.reason),
        );
    }
    html.push_str("</table>\n");
    html
}

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="REFRESH">
<title>regiondns status</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
tr.up .state { background: #c8efc8; }
tr.degraded .state { background: #ffe7a8; }
tr.down .state { background: #f7b8b8; }
tr.drained .state { background: #d8d8d8; }
#map { max-width: 100%; height: auto; border: 1px solid #ccc; }
#map .sea { fill: #eef4f8; }
#map .land { fill: #d9dcdf; stroke: #b8bec4; stroke-width: 0.2; }
#map .flow { stroke: #3b7dd8; stroke-opacity: 0.55; stroke-linecap: round; }
#map .marker circle { stroke: #222; stroke-width: 0.5; }
#map .marker text { font-size: 5px; dominant-baseline: middle; }
#map .up circle { fill: #2e9e44; }
#map .degraded circle { fill: #e0a000; }
#map .down circle { fill: #d33; }
#map .drained circle { fill: #888; }
.trend { white-space: nowrap; }
.spark { vertical-align: middle; }
.spark circle { fill: #3b7dd8; }
.spark polyline { fill: none; stroke: #3b7dd8; stroke-width: 1; }
.spark.latency polyline { stroke: #8a4fd8; }
.secondaries .behind { color: #b3261e; font-weight: bold; }
</style>
</head>
<body>
<h1>regiondns status</h1>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn shares_are_per_continent_over_the_window() {
        let europe = 3; // EU's slot
        let mut history = History::default();
        history.record(Sample::of_answers(
            0,
            &[("eu-west", europe, 100), ("us-east", europe, 0)],
        ));
        let now = Sample::of_answers(
            60,
            &[
                ("eu-west", europe, 150),
                ("us-east", europe, 150),
                ("us-east", 4, 10),
            ],
        );
        let shares = shares(&history, &now);
        let of = |region: &str, continent: &str| {
            shares
                .iter()
                .find(|s| s.key.region == region && s.continent == continent)
                .map(|s| (s.answers, s.fraction))
        };
        assert_eq!(of("eu-west", "EU"), Some((50, 0.25)));
        assert_eq!(of("us-east", "EU"), Some((150, 0.75)));
        assert_eq!(of("us-east", "NA"), Some((10, 1.0)));
        assert_eq!(of("eu-west", "AS"), None, "no answers for Asia: no share");
    }

    #[test]
    fn a_sparkline_scales_to_its_maximum_and_shows_the_last_value() {
        let rate = |v: f64| Rate {
            time: SystemTime::UNIX_EPOCH,
            answers_per_second: v,
            probe_ms: None,
            load: None,
        };
        let line = sparkline(
            "rate",
            &[rate(0.0), rate(50.0), rate(100.0)],
            |r| Some(r.answers_per_second),
            "/s",
        );
        assert!(line.contains("data-points=\"3\""), "{line}");
        assert!(line.contains("88.0,19.0 89.0,10.0 90.0,1.0"), "{line}");
        assert!(line.ends_with(" 100/s"), "{line}");
        let empty = sparkline("latency", &[], |r| r.probe_ms, " ms");
        assert!(empty.ends_with(" -"), "{empty}");
    }
}
