//! Where a client is: GeoIP lookups in one or more memory-mapped MaxMind DB (`.mmdb`) files, and
//! the geography they are expressed in (coordinates, countries, continents, distances).
//!
//! This module owns reading GeoIP files and turning a record of either shape found in the wild
//! (GeoIP2/GeoLite2/DB-IP nested, or the flat ip-location-db one) into a [`Location`]. It knows
//! nothing of zones, regions or DNS; a lookup never fails the caller: an address no database
//! knows is [`Located::Unknown`], with the network over which that holds.

mod countries;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use maxminddb::{MaxMindDbError, Mmap, Reader};
use serde::Deserialize;

pub use countries::{CountryInfo, country_info};

/// A point on Earth in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

impl Coordinates {
    /// Great-circle distance in kilometres (haversine on a spherical Earth).
    pub fn distance_km(self, other: Coordinates) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// The seven continent codes used by GeoIP databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Continent {
    Africa,
    Antarctica,
    Asia,
    Europe,
    NorthAmerica,
    Oceania,
    SouthAmerica,
}

impl Continent {
    pub fn from_code(code: &str) -> Option<Continent> {
        Some(match code {
            "AF" => Continent::Africa,
            "AN" => Continent::Antarctica,
            "AS" => Continent::Asia,
            "EU" => Continent::Europe,
            "NA" => Continent::NorthAmerica,
            "OC" => Continent::Oceania,
            "SA" => Continent::SouthAmerica,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(code: &str) -> Option<CountryCode> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the databases say about one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Coordinates from the record, else the country's centroid; `None` when neither is known.
    pub coordinates: Option<Coordinates>,
    pub country: Option<CountryCode>,
    pub continent: Option<Continent>,
    /// Prefix length of the database network this answer holds for (the ECS scope).
    pub prefix_len: u8,
}

/// The outcome of a lookup: a location, or "unknown" over a network of `prefix_len` bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Located {
    Known(Location),
    Unknown { prefix_len: u8 },
}

impl Located {
    /// The prefix length over which this answer holds: the ECS scope of a decision based on it.
    pub fn prefix_len(&self) -> u8 {
        match self {
            Located::Known(location) => location.prefix_len,
            Located::Unknown { prefix_len } => *prefix_len,
        }
    }

    pub fn coordinates(&self) -> Option<Coordinates> {
        match self {
            Located::Known(location) => location.coordinates,
            Located::Unknown { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{path}: cannot open GeoIP database: {source}")]
    Open {
        path: PathBuf,
        source: MaxMindDbError,
    },
    #[error("no GeoIP database given")]
    NoDatabase,
}

/// One or more GeoIP databases, consulted in order.
pub struct GeoIp {
    databases: Vec<Database>,
}

struct Database {
    path: PathBuf,
    reader: Reader<Mmap>,
}

impl GeoIp {
    /// Memory-maps every file. Files are replaced by renaming a new file over the old one, never
    /// by rewriting in place, so a mapping stays valid for as long as it is held.
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
                    meta.build_epoch
                )
            })
            .collect()
    }

    /// Locates an address. Databases are tried in order; the first with data for the address
    /// decides. IPv6 addresses skip IPv4-only files. The prefix of the answer is the most
    /// specific network among the files consulted, since the answer holds only where all agree.
    pub fn locate(&self, ip: IpAddr) -> Located {
        let ip = ip.to_canonical();
        let mut prefix_len = 0;
        for db in &self.databases {
            let Some(found) = db.lookup(ip) else { continue };
            prefix_len = prefix_len.max(found.prefix_len);
            if let Some(location) = found.location {
                return Located::Known(Location {
                    prefix_len,
                    ..location
                });
            }
        }
        Located::Unknown { prefix_len }
    }
}

/// A lookup in one file: the network's prefix, and a location when the file has data for it.
struct Lookup {
    prefix_len: u8,
    location: Option<Location>,
}

impl Database {
    fn open(path: &Path) -> Result<Database, GeoError> {
        // SAFETY: the file is mapped read-only; operators replace GeoIP files by renaming a new
        // file into place (as geoipupdate does), which leaves this mapping intact.
        let reader = unsafe { Reader::open_mmap(path) }.map_err(|source| GeoError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Database {
            path: path.to_owned(),
            reader,
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
        let location = match result.decode::<GeoRecord>() {
            Ok(Some(record)) => record.into_location(prefix_len),
            Ok(None) | Err(_) => None,
        };
        Some(Lookup {
            prefix_len,
            location,
        })
    }
}

/// The fields regiondns reads from a record, in both shapes found in the wild: nested
/// (GeoIP2, GeoLite2, DB-IP: `location.latitude`, `country.iso_code`, `continent.code`) and flat
/// (ip-location-db: `country_code`, `latitude`, `longitude`). Other fields are skipped unread.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: IsoCode<'a>,
    #[serde(borrow)]
    registered_country: IsoCode<'a>,
    #[serde(borrow)]
    continent: ContinentCode<'a>,
    location: LatLon,
    country_code: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContinentCode<'a> {
    code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LatLon {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoRecord<'_> {
    /// `None` when the record tells nothing usable (no coordinates and no known country).
    fn into_location(self, prefix_len: u8) -> Option<Location> {
        let country = self
            .country
            .iso_code
            .or(self.country_code)
            .or(self.registered_country.iso_code)
            .and_then(CountryCode::parse);
        let info = country.and_then(|c| country_info(c.0));
        let coordinates = match (
            self.location.latitude.or(self.latitude),
            self.location.longitude.or(self.longitude),
        ) {
            (Some(lat), Some(lon)) if valid_coordinates(lat, lon) => Some(Coordinates { lat, lon }),
            _ => info.map(|i| i.centroid),
        };
        let continent = self
            .continent
            .code
            .and_then(Continent::from_code)
            .or(info.map(|i| i.continent));
        (coordinates.is_some() || country.is_some()).then_some(Location {
            coordinates,
            country,
            continent,
            prefix_len,
        })
    }
}

fn valid_coordinates(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}

#[cfg(test)]
mod tests {
    use mmdb_writer::{IpVersion, Writer};
    use serde_json::{Value, json};

    use super::*;

    const TOKYO: Coordinates = Coordinates {
        lat: 35.7,
        lon: 139.7,
    };
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
    fn geoip(files: &[(IpVersion, &[(&str, Value)])]) -> (tempfile::TempDir, GeoIp) {
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
