//! Where a client is: GeoIP lookups in one or more MaxMind DB (`.mmdb`) files, and the
//! geography they are expressed in (coordinates, countries, continents, distances).
//!
//! This module owns reading GeoIP files and looking addresses up in them; `record` turns a
//! record of either shape found in the wild (GeoIP2/GeoLite2/DB-IP nested, or the flat
//! ip-location-db one, with coordinates as 64- or 32-bit floats) into a [`Location`], and `place`
//! holds the geography; `map` compiles the files into the map answers use. It knows nothing of
//! zones, regions or DNS; a lookup never fails the caller: an address no database knows is
//! [`Located::Unknown`], with the network over which that holds, and a record that cannot be
//! decoded is reported and logged, never silent. Files are read into memory, so a file
//! rewritten in place cannot change or crash a database already open. The server compiles them
//! ([`compile`]) and closes them: answering needs only the compiled map; `explain` and `check`
//! open the files themselves.

mod countries;
mod map;
mod place;
mod record;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use crate::counter::QueryCounter;
use maxminddb::{MaxMindDbError, Reader};

pub use countries::{CountryInfo, country_info};
pub use map::{Classifier, Compiled, Hit, Leaf, MAX_LEAVES, NetworkMap, compile};
pub use place::{Continent, Coordinates, CountryCode, Located, Location};
pub use record::Shape;

use record::GeoRecord;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    // The cause is in the message, so it is not also a `source`: shown with its chain, it
    // would be printed twice.
    #[error("{path}: cannot read GeoIP database: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a GeoIP (MaxMind DB) file: {error}")]
    Open {
        path: PathBuf,
        error: MaxMindDbError,
    },
    #[error("no GeoIP database given")]
    NoDatabase,
    #[error("cannot walk the GeoIP databases' networks: {error}")]
    Walk { error: MaxMindDbError },
    #[error(
        "{undecodable} of {networks} networks have a record regiondns cannot read (more than \
         1 in {MAX_UNDECODABLE_ONE_IN}): their clients would have no usable location"
    )]
    Undecodable { undecodable: u64, networks: u64 },
    #[error(
        "{path}: the GeoIP database was written in place since it was accepted; it is not read \
         again until the GeoIP reloader accepts a database (replace the file by renaming a new one \
         onto it)"
    )]
    Changed { path: PathBuf },
}

/// A new database may leave at most one network in this many unreadable: the databases as
/// they ship leave none, and a client whose record cannot be read gets only what every rule
/// allows (`unlocated`), so many of them would be many clients served worse.
pub const MAX_UNDECODABLE_ONE_IN: u64 = 1000;

/// Refuses what a compilation walked when too many of its records could not be read.
pub fn check_undecodable(compiled: Compiled) -> Result<(), GeoError> {
    let Compiled {
        networks,
        undecodable,
    } = compiled;
    if undecodable.saturating_mul(MAX_UNDECODABLE_ONE_IN) > networks {
        return Err(GeoError::Undecodable {
            undecodable,
            networks,
        });
    }
    Ok(())
}

/// Well-known public addresses that any GeoIP database worth serving with locates: checked at
/// start, on every reload and by `regiondns check --geoip`.
pub const SAMPLE: [(&str, &str); 9] = [
    ("8.8.8.8", "Google Public DNS"),
    ("1.1.1.1", "Cloudflare DNS"),
    ("9.9.9.9", "Quad9"),
    ("193.0.6.139", "RIPE NCC, Amsterdam"),
    ("202.12.27.33", "M root server, Tokyo"),
    ("200.160.0.8", "NIC.br, Sao Paulo"),
    ("2001:4860:4860::8888", "Google Public DNS"),
    ("2606:4700:4700::1111", "Cloudflare DNS"),
    ("2001:67c:2e8:22::c100:68b", "RIPE NCC, Amsterdam"),
];

/// Lookups by outcome, for `/metrics` (`regiondns_geoip_lookups_total`): one atomic add each.
#[derive(Debug, Clone, Default)]
pub struct LookupCounters {
    pub located: QueryCounter,
    /// No database has data for the address.
    pub unknown: QueryCounter,
    /// A database has a record for the address that regiondns cannot read.
    pub undecodable: QueryCounter,
}

impl LookupCounters {
    /// Counts a lookup: one made, or one that an answer given again stands for.
    pub fn count(&self, result: LookupResult) {
        let counter = match result {
            LookupResult::Located => &self.located,
            LookupResult::Unknown => &self.unknown,
            LookupResult::Undecodable => &self.undecodable,
        };
        counter.inc();
    }
}

/// What a lookup found, as `geoip_lookups_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupResult {
    Located,
    /// No database has data for the address.
    Unknown,
    /// A database has a record for the address that regiondns cannot read.
    Undecodable,
}

/// One or more GeoIP databases, consulted in order.
pub struct GeoIp {
    databases: Vec<Database>,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

struct Database {
    path: PathBuf,
    /// The file as it was read and accepted, and a digest of what was read.
    accepted: AcceptedFile,
    reader: Reader<Vec<u8>>,
    size: usize,
    /// Whether an undecodable record has been logged: once per database is enough.
    warned: AtomicBool,
}

/// The files a [`GeoIp`] was read from, kept open: read again later, they give what was
/// accepted then, even after a new file was renamed onto the path (and was perhaps refused),
/// and never bytes written in place since (a digest says). Cheap to clone; holds no records.
#[derive(Debug, Clone)]
pub struct Accepted(Arc<[AcceptedFile]>);

#[derive(Debug, Clone)]
struct AcceptedFile {
    path: PathBuf,
    file: Arc<std::fs::File>,
    digest: u64,
}

impl AcceptedFile {
    fn read(&self) -> Result<Vec<u8>, GeoError> {
        use std::os::unix::fs::FileExt;
        let read_error = |error| GeoError::Read {
            path: self.path.clone(),
            error,
        };
        let length = self.file.metadata().map_err(read_error)?.len();
        let length = usize::try_from(length).map_err(|_| GeoError::Changed {
            path: self.path.clone(),
        })?;
        let mut bytes = vec![0; length];
        self.file.read_exact_at(&mut bytes, 0).map_err(read_error)?;
        if xxhash_rust::xxh3::xxh3_64(&bytes) != self.digest {
            return Err(GeoError::Changed {
                path: self.path.clone(),
            });
        }
        Ok(bytes)
    }
}

/// What one address gives, before counting.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    located: Located,
    undecodable: bool,
    shape: Option<Shape>,
}

/// A sample address and what the databases say of it.
pub struct SampleResult {
    pub ip: IpAddr,
    pub operator: &'static str,
    pub located: Located,
    pub undecodable: bool,
}

impl GeoIp {
    /// Reads every file into memory.
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, GeoError> {
        if paths.is_empty() {
            return Err(GeoError::NoDatabase);
        }
        let databases = paths
            .iter()
            .map(|path| Database::open(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GeoIp { databases })
    }

    /// The databases as accepted, to be read again when a geography is new.
    pub fn accepted(&self) -> Accepted {
        Accepted(
            self.databases
                .iter()
                .map(|db| db.accepted.clone())
                .collect(),
        )
    }

    /// The databases `accepted` holds, read again.
    pub fn reopen(accepted: &Accepted) -> Result<GeoIp, GeoError> {
        let databases = accepted
            .0
            .iter()
            .map(|file| Database::from_bytes(file.clone(), file.read()?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GeoIp { databases })
    }

    /// The files, in lookup order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.databases.iter().map(|db| db.path.as_path())
    }

    /// The build dates of the databases, in lookup order: instances of a fleet compare them.
    pub fn builds(&self) -> String {
        let dates: Vec<String> = self
            .databases
            .iter()
            .map(|db| build_date(db.reader.metadata().build_epoch))
            .collect();
        dates.join(", ")
    }

    /// One line per database, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|db| {
                let meta = db.reader.metadata();
                format!(
                    "{} ({}, IPv{}, built {})",
                    db.path.display(),
                    meta.database_type,
                    meta.ip_version,
                    build_date(meta.build_epoch)
                )
            })
            .collect()
    }

    /// Details of each database for `regiondns check --geoip`: type, shape, size, build date.
    pub fn details(&self) -> Vec<String> {
        let shape = self.sample_shape();
        self.databases
            .iter()
            .map(|db| {
                let meta = db.reader.metadata();
                let shape = match shape {
                    Some(Shape::Nested) => "nested (GeoIP2: country.iso_code, location.latitude)",
                    Some(Shape::Flat) => "flat (ip-location-db: country_code, latitude)",
                    None => "unknown (no sample address located)",
                };
                format!(
                    "{}: type {}, IPv{}, {} bytes, {} nodes of {} bits, built {}, records {shape}",
                    db.path.display(),
                    meta.database_type,
                    meta.ip_version,
                    db.size,
                    meta.node_count,
                    meta.record_size,
                    build_date(meta.build_epoch),
                )
            })
            .collect()
    }

    /// Locates every [`SAMPLE`] address, without counting the lookups.
    pub fn sample(&self) -> Vec<SampleResult> {
        SAMPLE
            .iter()
            .filter_map(|(ip, operator)| Some((ip.parse::<IpAddr>().ok()?, *operator)))
            .map(|(ip, operator)| {
                let outcome = self.outcome(ip);
                SampleResult {
                    ip,
                    operator,
                    located: outcome.located,
                    undecodable: outcome.undecodable,
                }
            })
            .collect()
    }

    /// How many [`SAMPLE`] addresses the databases locate.
    pub fn sample_located(&self) -> usize {
        self.sample()
            .iter()
            .filter(|s| matches!(s.located, Located::Known(_)))
            .count()
    }

    fn sample_shape(&self) -> Option<Shape> {
        SAMPLE
            .iter()
            .filter_map(|(ip, _)| ip.parse::<IpAddr>().ok())
            .find_map(|ip| self.outcome(ip).shape)
    }

    /// Locates an address. Databases are tried in order; the first with data for the address
    /// decides. IPv6 addresses skip IPv4-only files. The prefix of the answer is the most
    /// specific network among the files consulted, since the answer holds only where all agree.
    pub fn locate(&self, ip: IpAddr) -> Located {
        self.locate_counted(ip).0
    }

    /// As [`GeoIp::locate`], and what the lookup found, as `geoip_lookups_total` counts it.
    pub fn locate_counted(&self, ip: IpAddr) -> (Located, LookupResult) {
        let outcome = self.outcome(ip);
        let result = match outcome.located {
            Located::Known(_) => LookupResult::Located,
            Located::Unknown { .. } if outcome.undecodable => LookupResult::Undecodable,
            Located::Unknown { .. } => LookupResult::Unknown,
        };
        (outcome.located, result)
    }

    fn outcome(&self, ip: IpAddr) -> Outcome {
        self.look_up(ip.to_canonical())
    }

    fn look_up(&self, ip: IpAddr) -> Outcome {
        let mut prefix_len = 0;
        let mut undecodable = false;
        for db in &self.databases {
            let Some(found) = db.lookup(ip) else { continue };
            prefix_len = prefix_len.max(found.prefix_len);
            undecodable |= found.undecodable;
            if let Some(location) = found.location {
                return Outcome {
                    located: Located::Known(location.holding_over(prefix_len)),
                    undecodable,
                    shape: found.shape,
                };
            }
        }
        Outcome {
            located: Located::Unknown { prefix_len },
            undecodable,
            shape: None,
        }
    }
}

/// The warning for databases that locate none of the [`SAMPLE`] addresses.
pub fn sample_warning(geo: &GeoIp) -> String {
    let files: Vec<String> = geo.paths().map(|p| p.display().to_string()).collect();
    format!(
        "GeoIP database {} locates none of {} well-known public addresses (8.8.8.8, 1.1.1.1, ...): \
         every client would get its service's first region; check it with \
         `regiondns check --geoip FILE`",
        files.join(", "),
        SAMPLE.len()
    )
}

fn build_date(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

/// A lookup in one file: the network's prefix, and a location when the file has data for it.
struct Lookup {
    prefix_len: u8,
    location: Option<Location>,
    undecodable: bool,
    shape: Option<Shape>,
}

impl Database {
    fn open(path: &Path) -> Result<Database, GeoError> {
        use std::io::Read;
        let read_error = |error| GeoError::Read {
            path: path.to_owned(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_error)?;
        let accepted = AcceptedFile {
            path: path.to_owned(),
            file: Arc::new(file),
            digest: xxhash_rust::xxh3::xxh3_64(&bytes),
        };
        Database::from_bytes(accepted, bytes)
    }

    fn from_bytes(accepted: AcceptedFile, bytes: Vec<u8>) -> Result<Database, GeoError> {
        let size = bytes.len();
        let reader = Reader::from_source(bytes).map_err(|error| GeoError::Open {
            path: accepted.path.clone(),
            error,
        })?;
        Ok(Database {
            path: accepted.path.clone(),
            accepted,
            reader,
            size,
            warned: AtomicBool::new(false),
        })
    }

    fn lookup(&self, ip: IpAddr) -> Option<Lookup> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let result = self.reader.lookup(ip).ok()?;
        let network = result.network().ok()?;
        // An IPv4 address that falls above the IPv4 subtree of an IPv6 database gets an IPv6
        // network back: the answer then holds for every IPv4 address.
        let prefix_len = if network.is_ipv4() == ip.is_ipv4() {
            network.prefix()
        } else {
            0
        };
        if !result.has_data() {
            return Some(Lookup {
                prefix_len,
                location: None,
                undecodable: false,
                shape: None,
            });
        }
        let (location, shape, undecodable) = match result.decode::<GeoRecord>() {
            Ok(record) => {
                let record = record.unwrap_or_default();
                let shape = record.shape();
                (record.into_location(prefix_len), shape, false)
            }
            Err(error) => {
                self.warn_once(ip, &error);
                (None, None, true)
            }
        };
        Some(Lookup {
            prefix_len,
            location,
            undecodable,
            shape,
        })
    }

    fn warn_once(&self, ip: IpAddr, error: &MaxMindDbError) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                file = %self.path.display(),
                "{}: cannot decode the record of {ip} (counted as undecodable on /metrics; \
                 logged once per database): {error}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use mmdb_writer::{IpVersion, Writer};
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_database_with_more_than_one_unreadable_network_in_a_thousand_is_refused() {
        let figures = |networks, undecodable| Compiled {
            networks,
            undecodable,
        };
        assert!(check_undecodable(figures(1_000_000, 0)).is_ok());
        assert!(check_undecodable(figures(1_000_000, 1_000)).is_ok());
        let error = check_undecodable(figures(1_000_000, 1_001)).expect_err("refused");
        assert!(
            error.to_string().starts_with("1001 of 1000000 networks"),
            "{error}"
        );
        assert!(check_undecodable(figures(7, 1)).is_err());
    }

    const TOKYO: Coordinates = Coordinates {
        lat: 35.7,
        lon: 139.7,
    };

    #[test]
    fn every_continent_is_at_its_own_index_with_its_own_code() {
        for (i, &continent) in Continent::ALL.iter().enumerate() {
            assert_eq!(continent as usize, i);
            assert_eq!(Continent::from_code(continent.code()), Some(continent));
        }
    }
    const DUBLIN: Coordinates = Coordinates {
        lat: 53.3,
        lon: -6.3,
    };
    const VIRGINIA: Coordinates = Coordinates {
        lat: 37.4,
        lon: -79.1,
    };

    #[test]
    fn distance_matches_known_great_circles() {
        // Tokyo to Dublin is about 9,600 km; Dublin to Virginia about 5,600 km.
        assert!((TOKYO.distance_km(DUBLIN) - 9_600.0).abs() < 150.0);
        assert!((DUBLIN.distance_km(VIRGINIA) - 5_600.0).abs() < 150.0);
        assert_eq!(TOKYO.distance_km(TOKYO), 0.0);
        assert!((TOKYO.distance_km(DUBLIN) - DUBLIN.distance_km(TOKYO)).abs() < 1e-6);
    }

    #[test]
    fn unit_vectors_order_places_as_distances_do() {
        let places = [
            TOKYO,
            DUBLIN,
            VIRGINIA,
            Coordinates {
                lat: -33.9,
                lon: 151.2,
            },
        ];
        let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        for from in places {
            for (x, y) in places
                .iter()
                .flat_map(|x| places.iter().map(move |y| (x, y)))
            {
                let by_distance = from.distance_km(*x) < from.distance_km(*y);
                let by_dot = dot(from.unit_vector(), x.unit_vector())
                    > dot(from.unit_vector(), y.unit_vector());
                assert_eq!(by_distance, by_dot, "{from:?}: {x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn distance_crosses_the_antimeridian_the_short_way() {
        let fiji = Coordinates {
            lat: -17.7,
            lon: 178.0,
        };
        let samoa = Coordinates {
            lat: -13.8,
            lon: -172.1,
        };
        assert!(fiji.distance_km(samoa) < 1_200.0);
    }

    /// Writes one `.mmdb` file per entry and opens them all, in order.
    pub(super) fn geoip(files: &[(IpVersion, &[(&str, Value)])]) -> (tempfile::TempDir, GeoIp) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        for (i, (version, networks)) in files.iter().enumerate() {
            let mut writer = Writer::builder("Test")
                .ip_version(*version)
                .description(&[("en", "regiondns unit test")])
                .build_epoch(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
                .build();
            for (network, record) in networks.iter() {
                let network: mmdb_writer::ipnet::IpNet = network.parse().expect("network");
                writer.insert(network, record).expect("insert");
            }
            let path = dir.path().join(format!("{i}.mmdb"));
            std::fs::write(&path, writer.to_bytes().expect("encode")).expect("write");
            paths.push(path);
        }
        let geo = GeoIp::open(&paths).expect("open");
        (dir, geo)
    }

    fn known(located: Located) -> Location {
        match located {
            Located::Known(location) => location,
            Located::Unknown { .. } => panic!("expected a location"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn nested_geoip2_records_give_coordinates_country_continent_and_network() {
        let london = json!({"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            "continent": {"code": "EU"}, "location": {"latitude": 51.5, "longitude": -0.09},
            "city": {"names": {"en": "London"}}});
        let (_dir, geo) = geoip(&[(IpVersion::V6, &[("81.2.69.0/24", london)])]);
        let loc = known(geo.locate(ip("81.2.69.142")));
        assert_eq!(
            loc.coordinates,
            Some(Coordinates {
                lat: 51.5,
                lon: -0.09
            })
        );
        assert_eq!(loc.country.map(|c| c.to_string()), Some("GB".into()));
        assert_eq!(loc.continent, Some(Continent::Europe));
        assert_eq!(
            loc.prefix_len, 24,
            "IPv4 network prefix, not the IPv6 tree depth"
        );
        assert_eq!(
            known(geo.locate(ip("::ffff:81.2.69.1"))).prefix_len,
            24,
            "mapped IPv6 is IPv4"
        );
    }

    #[test]
    fn flat_ip_location_db_records_are_read() {
        let tokyo = json!({"country_code": "JP", "latitude": 35.6, "longitude": 139.8});
        let (_dir, geo) = geoip(&[(IpVersion::V6, &[("2001:218::/32", tokyo)])]);
        let loc = known(geo.locate(ip("2001:218::1")));
        assert_eq!(
            loc.coordinates,
            Some(Coordinates {
                lat: 35.6,
                lon: 139.8
            })
        );
        assert_eq!(
            loc.continent,
            Some(Continent::Asia),
            "continent from the table"
        );
        assert_eq!(loc.prefix_len, 32);
    }

    /// ip-location-db's city files store coordinates as MMDB `float` (32 bits), MaxMind's as
    /// `double`: a writer of typed fields reproduces the former.
    #[derive(serde::Serialize)]
    struct FlatCity {
        country_code: &'static str,
        latitude: f32,
        longitude: f32,
    }

    #[test]
    fn flat_records_with_32_bit_float_coordinates_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = Writer::builder("city ipv4")
            .ip_version(IpVersion::V4)
            .build();
        let tokyo = FlatCity {
            country_code: "JP",
            latitude: 35.6895,
            longitude: 139.6917,
        };
        let network: mmdb_writer::ipnet::IpNet = "202.12.27.0/24".parse().expect("network");
        writer.insert(network, &tokyo).expect("insert");
        let path = dir.path().join("flat-float.mmdb");
        let bytes = writer.to_bytes().expect("encode");
        assert!(
            bytes.windows(11).any(|w| w == b"\x48latitude\x04\x08"),
            "the fixture stores a 32-bit float, as real files do"
        );
        std::fs::write(&path, bytes).expect("write");
        let geo = GeoIp::open(&[path]).expect("open");
        let loc = known(geo.locate(ip("202.12.27.33")));
        let coordinates = loc.coordinates.expect("coordinates");
        assert!((coordinates.lat - 35.6895).abs() < 1e-4, "{coordinates:?}");
        assert!((coordinates.lon - 139.6917).abs() < 1e-4, "{coordinates:?}");
        assert_eq!(loc.country.map(|c| c.to_string()), Some("JP".into()));
    }

    #[test]
    fn undecodable_records_are_reported_never_silent() {
        let (_dir, geo) = geoip(&[(
            IpVersion::V4,
            &[
                ("192.0.2.0/24", json!({"country_code": 49})),
                ("198.51.100.0/24", json!({"country_code": "DE"})),
            ],
        )]);
        let result = |s: &str| geo.locate_counted(ip(s)).1;
        assert_eq!(result("192.0.2.1"), LookupResult::Undecodable);
        assert!(matches!(
            geo.locate(ip("192.0.2.2")),
            Located::Unknown { .. }
        ));
        assert_eq!(result("198.51.100.1"), LookupResult::Located);
        assert_eq!(result("203.0.113.1"), LookupResult::Unknown);
        assert!(geo.databases[0].warned.load(Ordering::Relaxed), "logged");
    }

    #[test]
    fn the_sample_reports_which_well_known_addresses_are_located() {
        let (_dir, geo) = geoip(&[(
            IpVersion::V6,
            &[("8.8.8.0/24", json!({"country_code": "US"}))],
        )]);
        assert_eq!(geo.sample_located(), 1);
        let google = geo
            .sample()
            .into_iter()
            .find(|s| s.ip == ip("8.8.8.8"))
            .expect("in the sample");
        assert!(matches!(google.located, Located::Known(_)));
        assert!(
            geo.details()[0].contains("records flat"),
            "{:?}",
            geo.details()
        );
    }

    #[test]
    fn country_only_records_fall_back_to_the_centroid() {
        let (_dir, geo) = geoip(&[(
            IpVersion::V4,
            &[
                ("192.0.2.0/24", json!({"country_code": "de"})),
                (
                    "198.51.100.0/24",
                    json!({"registered_country": {"iso_code": "US"}}),
                ),
                (
                    "203.0.113.0/24",
                    json!({"country_code": "FR", "latitude": 123.0, "longitude": 2.0}),
                ),
            ],
        )]);
        let de = known(geo.locate(ip("192.0.2.1")));
        assert_eq!(de.coordinates, country_info(*b"DE").map(|i| i.centroid));
        assert_eq!(de.continent, Some(Continent::Europe));
        let us = known(geo.locate(ip("198.51.100.1")));
        assert_eq!(us.country.map(|c| c.to_string()), Some("US".into()));
        let fr = known(geo.locate(ip("203.0.113.1")));
        assert_eq!(
            fr.coordinates,
            country_info(*b"FR").map(|i| i.centroid),
            "bad coordinates ignored"
        );
    }

    #[test]
    fn unknown_addresses_carry_the_network_they_are_unknown_in() {
        let (_dir, geo) = geoip(&[(
            IpVersion::V4,
            &[
                ("192.0.2.0/24", json!({"country_code": "DE"})),
                (
                    "198.51.100.0/24",
                    json!({"city": {"names": {"en": "nowhere"}}}),
                ),
            ],
        )]);
        assert_eq!(
            geo.locate(ip("198.51.100.7")),
            Located::Unknown { prefix_len: 24 }
        );
        let Located::Unknown { prefix_len } = geo.locate(ip("10.1.2.3")) else {
            panic!("10.1.2.3 is not in the database");
        };
        assert!(
            prefix_len < 24,
            "an empty subtree, wider than any data network: {prefix_len}"
        );
    }

    #[test]
    fn files_are_tried_in_order_and_ipv6_skips_ipv4_only_files() {
        let (_dir, geo) = geoip(&[
            (
                IpVersion::V4,
                &[("192.0.2.0/24", json!({"country_code": "DE"}))],
            ),
            (
                IpVersion::V6,
                &[
                    ("2001:db8::/32", json!({"country_code": "JP"})),
                    ("192.0.2.0/24", json!({"country_code": "US"})),
                    ("198.51.100.0/24", json!({"country_code": "BR"})),
                ],
            ),
        ]);
        let country = |s: &str| known(geo.locate(ip(s))).country.map(|c| c.to_string());
        assert_eq!(country("192.0.2.1"), Some("DE".into()), "first file wins");
        assert_eq!(
            country("2001:db8::1"),
            Some("JP".into()),
            "IPv6 from the second file"
        );
        assert_eq!(
            country("198.51.100.1"),
            Some("BR".into()),
            "fall through to the next file"
        );
    }
}
