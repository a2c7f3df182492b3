//! A GeoIP record turned into a [`Location`]: the fields regiondns reads, in both shapes found
//! in the wild, with coordinates as 64- or 32-bit floats. It decodes one record given to it;
//! opening files and lookups are the owner's ([`super::GeoIp`]).

use std::fmt;

use serde::{Deserialize, Deserializer, de};

use super::{Continent, Coordinates, CountryCode, Location, country_info};

/// How a database lays out its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// GeoIP2, GeoLite2, DB-IP: `country.iso_code`, `location.latitude`.
    Nested,
    /// ip-location-db: `country_code`, `latitude`.
    Flat,
}

/// The fields regiondns reads from a record, in both shapes found in the wild: nested
/// (GeoIP2, GeoLite2, DB-IP: `location.latitude`, `country.iso_code`, `continent.code`) and flat
/// (ip-location-db: `country_code`, `latitude`, `longitude`). Other fields are skipped unread,
/// and once every field the record's shape needs is read, the rest of the record is not read
/// at all (compiling GeoLite2 City decodes some 450,000 records; their postal codes,
/// subdivisions and registered countries come after the location).
#[derive(Default)]
pub(super) struct GeoRecord<'a> {
    country: IsoCode<'a>,
    registered_country: IsoCode<'a>,
    continent: ContinentCode<'a>,
    location: LatLon,
    country_code: Option<&'a str>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl<'de: 'a, 'a> Deserialize<'de> for GeoRecord<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GeoRecord<'a>, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> de::Visitor<'de> for Visitor<'a> {
            type Value = GeoRecord<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GeoIP record (a map)")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<GeoRecord<'a>, A::Error> {
                let mut record = GeoRecord::default();
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "country" => record.country = map.next_value()?,
                        "registered_country" => record.registered_country = map.next_value()?,
                        "continent" => record.continent = map.next_value()?,
                        "location" => record.location = map.next_value()?,
                        "country_code" => record.country_code = map.next_value()?,
                        "latitude" => record.latitude = map.next_value()?,
                        "longitude" => record.longitude = map.next_value()?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                    if record.complete() {
                        // A record is decoded from its own offset: what follows is never read.
                        break;
                    }
                }
                Ok(record)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
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
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

/// A coordinate stored as MMDB `double` (MaxMind, DB-IP) or `float` (ip-location-db): the
/// decoder hands back whichever type the file has, so both are taken.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Degrees, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Degrees;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a coordinate (float, double or integer)")
            }
            fn visit_f64<E>(self, value: f64) -> Result<Degrees, E> {
                Ok(Degrees(value))
            }
            fn visit_f32<E>(self, value: f32) -> Result<Degrees, E> {
                Ok(Degrees(f64::from(value)))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Degrees, E> {
                Ok(Degrees(value as f64))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Degrees, E> {
                Ok(Degrees(value as f64))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl GeoRecord<'_> {
    /// Whether every field its shape can give has been read: the rest could change nothing.
    fn complete(&self) -> bool {
        let nested = self.country.iso_code.is_some()
            && self.continent.code.is_some()
            && self.location.latitude.is_some()
            && self.location.longitude.is_some();
        let flat =
            self.country_code.is_some() && self.latitude.is_some() && self.longitude.is_some();
        nested || flat
    }

    pub(super) fn shape(&self) -> Option<Shape> {
        if self.country.iso_code.is_some() || self.location.latitude.is_some() {
            Some(Shape::Nested)
        } else if self.country_code.is_some() || self.latitude.is_some() {
            Some(Shape::Flat)
        } else {
            None
        }
    }

    /// `None` when the record tells nothing usable (no coordinates and no known country).
    pub(super) fn into_location(self, prefix_len: u8) -> Option<Location> {
        let country = self
            .country
            .iso_code
            .or(self.country_code)
            .or(self.registered_country.iso_code)
            .and_then(CountryCode::parse);
        let info = country.and_then(|c| country_info(c.letters()));
        let coordinates = match (
            self.location.latitude.or(self.latitude),
            self.location.longitude.or(self.longitude),
        ) {
            (Some(Degrees(lat)), Some(Degrees(lon))) if valid_coordinates(lat, lon) => {
                Some(Coordinates { lat, lon })
            }
            _ => info.map(|i| i.centroid),
        };
        let continent = self
            .continent
            .code
            .and_then(Continent::from_code)
            .or(info.map(|i| i.continent));
        (coordinates.is_some() || country.is_some())
            .then(|| Location::new(coordinates, country, continent, prefix_len))
    }
}

fn valid_coordinates(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}
