//! GeoIP files updated under a running, loaded server: replaced by rename (as geoipupdate does),
//! rewritten in place (as a careless cron job does), and replaced by broken files.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::common::{
    self, Server, ZONE, addresses, fixture_networks, query, serve_args, udp, until_answered,
    until_logged, write_mmdb, zone_dir,
};
use hickory_proto::{op::Message, rr::RecordType};
use serde_json::json;

const API: &str = "api.llm.example.com.";
const UK: &str = "81.2.69.0/24";
const DUBLIN: [&str; 1] = ["203.0.113.20"];
const TOKYO: [&str; 2] = ["203.0.113.30", "203.0.113.31"];

/// Queries as a UK client, one at a time, until stopped; counts queries and unanswered ones.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let (stop, sent, lost) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (stopping, sending, losing) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&lost));
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buffer = vec![0; 4096];
            let mut id: u16 = 0;
            while !stopping.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let mut request = query(API, RecordType::A, Some(UK));
                request.metadata.id = id;
                socket
                    .send_to(&request.to_vec().expect("encode"), addr)
                    .expect("send");
                sending.fetch_add(1, Ordering::Relaxed);
                let answered = loop {
                    match socket.recv_from(&mut buffer) {
                        Ok((n, _)) => match Message::from_vec(&buffer[..n]) {
                            Ok(reply) if reply.metadata.id == id => {
                                break !reply.answers.is_empty();
                            }
                            _ => continue,
                        },
                        Err(_) => break false,
                    }
                };
                if !answered {
                    losing.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Load {
            stop,
            sent,
            lost,
            thread: Some(thread),
        }
    }

    /// Stops the load; returns (queries sent, queries lost).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("load thread");
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

/// The fixture with the UK network moved to Japan.
fn uk_in_japan() -> Vec<(&'static str, serde_json::Value)> {
    let mut networks = fixture_networks();
    for (network, record) in networks.iter_mut() {
        if *network == "81.2.69.0/24" {
            *record = json!({"country": {"iso_code": "JP"}, "continent": {"code": "AS"},
                "location": {"latitude": 35.69, "longitude": 139.69}});
        }
    }
    networks
}

#[test]
fn geoip_updates_are_picked_up_under_load_and_broken_ones_refused() {
    // The load is one client as fast as it can: far over any response rate limit.
    let dir = zone_dir(ZONE);
    let args = serve_args(dir.path(), &["--admin", "127.0.0.1:0", "--rrl-rate", "0"]);
    let server = Server::spawn(dir, &args, None);
    let geo = server.dir.path().join("geo.mmdb");
    let staging = server.dir.path().join("geo.mmdb.new");
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        DUBLIN
    );
    let load = Load::start(server.addr);

    // Replaced by rename, as geoipupdate does.
    write_mmdb(&staging, &uk_in_japan());
    std::fs::rename(&staging, &geo).expect("rename");
    until_answered(&server, UK, &TOKYO, Duration::from_secs(5)).expect("the renamed file serves");

    // Rewritten in place: the file open is in memory, so nothing changes under it until the
    // new contents are complete and read again.
    let mut original = Vec::new();
    write_mmdb(&staging, &fixture_networks());
    std::io::Read::read_to_end(
        &mut std::fs::File::open(&staging).expect("open"),
        &mut original,
    )
    .expect("read");
    std::fs::write(&geo, &original).expect("rewrite in place");
    until_answered(&server, UK, &DUBLIN, Duration::from_secs(5))
        .expect("the rewritten file serves");

    // Broken by rename, emptied in place, and valid but locating none of the sample: each is
    // refused and the databases already open keep serving.
    std::fs::write(&staging, b"not a GeoIP database").expect("write");
    std::fs::rename(&staging, &geo).expect("rename");
    until_logged(&server, "GeoIP reload (GeoIP file changed) refused", 1);
    std::fs::write(&geo, b"").expect("empty in place");
    until_logged(&server, "GeoIP reload (GeoIP file changed) refused", 2);
    write_mmdb(&staging, &[("10.0.0.0/8", json!({"country_code": "US"}))]);
    std::fs::rename(&staging, &geo).expect("rename");
    until_logged(&server, "locates none of 9 well-known public addresses", 1);
    for _ in 0..20 {
        assert_eq!(
            addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
            DUBLIN,
            "the last good database serves"
        );
    }

    // Put back a good file, then SIGHUP (for file systems that send no change events): read
    // again even though nothing changed.
    std::fs::write(&geo, &original).expect("restore in place");
    until_logged(&server, "GeoIP reloaded (GeoIP file changed)", 3);
    server.signal("HUP");
    until_logged(&server, "GeoIP reloaded (SIGHUP)", 1);
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        DUBLIN
    );

    let (sent, lost) = load.finish();
    assert!(sent > 100, "the load ran: {sent} queries");
    assert_eq!(lost, 0, "{lost} of {sent} queries lost during the updates");
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(
        metrics.contains("regiondns_geoip_reloads_total{result=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regiondns_geoip_reloads_total{result=\"error\"} 3"),
        "{metrics}"
    );
    let located = metrics
        .lines()
        .find(|l| l.starts_with("regiondns_geoip_lookups_total{result=\"located\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("located counter");
    assert!(
        located >= sent,
        "every load query was located: {located} < {sent}"
    );
}

#[test]
fn a_database_that_locates_no_well_known_address_is_reported_at_start() {
    let server = Server::start(ZONE);
    // The fixture knows 8.8.8.0/24 and no other sample address: no warning.
    assert!(!server.log().contains("locates none"), "{}", server.log());

    let dir = common::zone_dir(ZONE);
    write_mmdb(
        &dir.path().join("geo.mmdb"),
        &[("10.0.0.0/8", json!({"country_code": "US"}))],
    );
    let args = common::serve_args(dir.path(), &["--admin", "off"]);
    let server = Server::spawn(dir, &args, None);
    assert!(
        server
            .log()
            .contains("locates none of 9 well-known public addresses"),
        "{}",
        server.log()
    );
}

/// US and EU regions; EU clients may only go to EU regions. us-east is listed first, so a
/// client no rule held would get it.
const SOVEREIGN_ZONE: &str = r#"
origin: llm.example.com.
soa: { primary: ns1, contact: hostmaster@example.com }
ns: [ns1]
records:
  ns1: { A: [198.51.100.53] }
regions:
  us-east: { location: { lat: 37.4, lon: -79.1 }, addresses: [203.0.113.10], jurisdiction: us }
  eu-west: { location: { lat: 53.3, lon: -6.3 }, addresses: [203.0.113.20], jurisdiction: eu }
services:
  api:
    regions: [us-east, eu-west]
    rules:
      - match: { continent: [EU] }
        allow: { jurisdiction: [eu] }
"#;

#[test]
fn a_client_whose_geoip_record_cannot_be_read_stays_in_the_jurisdiction() {
    let dir = zone_dir(SOVEREIGN_ZONE);
    let mut networks = fixture_networks();
    // Types a GeoIP record never has: the server cannot read it.
    networks.push((
        "5.5.5.0/24",
        json!({"country": {"iso_code": 7}, "location": {"latitude": "north"}}),
    ));
    write_mmdb(&dir.path().join("geo.mmdb"), &networks);
    let server = Server::start_in(dir, &[]);
    assert!(server.log().contains("undecodable"), "{}", server.log());
    let unreadable = udp(server.addr, &query(API, RecordType::A, Some("5.5.5.0/24")));
    assert_eq!(addresses(&unreadable), DUBLIN, "never us-east");
    let american = udp(server.addr, &query(API, RecordType::A, Some("8.8.8.0/24")));
    assert_eq!(addresses(&american), ["203.0.113.10"]);
    let (_, metrics) = common::http(server.admin.expect("admin"), "GET", "/metrics", &[]);
    assert!(metrics.contains("result=\"undecodable\""), "{metrics}");
    // Said otherwise by the operator, the same client goes to the first region listed.
    let open = format!("{SOVEREIGN_ZONE}    unlocated: any\n");
    std::fs::write(server.dir.path().join("zones/llm.yaml"), open).expect("edit");
    until_answered(
        &server,
        "5.5.5.0/24",
        &["203.0.113.10"],
        Duration::from_secs(5),
    )
    .expect("unlocated: any");
}

#[test]
fn a_new_database_with_many_unreadable_records_is_refused_and_the_old_one_serves() {
    let server = Server::start_in(zone_dir(SOVEREIGN_ZONE), &[]);
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        DUBLIN
    );
    let mut networks = fixture_networks();
    networks.push(("5.5.5.0/24", json!({"location": {"latitude": "north"}})));
    let next = server.dir.path().join("next.mmdb");
    write_mmdb(&next, &networks);
    std::fs::rename(&next, server.dir.path().join("geo.mmdb")).expect("rename");
    until_logged(&server, "GeoIP reload (", 1);
    let log = server.log();
    assert!(
        log.contains("refused") && log.contains("have a record regiondns cannot read"),
        "{log}"
    );
    assert_eq!(
        addresses(&udp(server.addr, &query(API, RecordType::A, Some(UK)))),
        DUBLIN
    );
}
