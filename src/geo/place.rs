//! The geography locations are expressed in: points and great-circle distances, continents,
//! country codes, and what a lookup says of an address ([`Located`]). Plain values; nothing
//! here reads a file or knows of zones and regions.

use std::fmt;

/// A point on Earth in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

impl Coordinates {
    /// The point as a unit vector from the Earth's centre. Of two places, the nearer to a point
    /// has the larger dot product with its vector (the cosine of the central angle), so nearest
    /// first is an order of dot products: no trigonometry per candidate.
    pub fn unit_vector(self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

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
    /// In declaration order: `ALL[c as usize] == c`.
    pub const ALL: [Continent; 7] = [
        Continent::Africa,
        Continent::Antarctica,
        Continent::Asia,
        Continent::Europe,
        Continent::NorthAmerica,
        Continent::Oceania,
        Continent::SouthAmerica,
    ];

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

    /// The two letters, upper case.
    pub fn letters(self) -> [u8; 2] {
        self.0
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
    /// The coordinates' [`Coordinates::unit_vector`], computed once per decoded record.
    direction: Option<[f64; 3]>,
}

impl Location {
    pub fn new(
        coordinates: Option<Coordinates>,
        country: Option<CountryCode>,
        continent: Option<Continent>,
        prefix_len: u8,
    ) -> Location {
        Location {
            coordinates,
            country,
            continent,
            prefix_len,
            direction: coordinates.map(Coordinates::unit_vector),
        }
    }

    /// The same place, said to hold over a network of `prefix_len` bits.
    pub fn holding_over(self, prefix_len: u8) -> Location {
        Location { prefix_len, ..self }
    }
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

    pub fn continent(&self) -> Option<Continent> {
        match self {
            Located::Known(location) => location.continent,
            Located::Unknown { .. } => None,
        }
    }

    pub fn coordinates(&self) -> Option<Coordinates> {
        match self {
            Located::Known(location) => location.coordinates,
            Located::Unknown { .. } => None,
        }
    }

    /// The coordinates as a unit vector: nearest first is an order of dot products with it.
    pub fn direction(&self) -> Option<[f64; 3]> {
        match self {
            Located::Known(location) => location.direction,
            Located::Unknown { .. } => None,
        }
    }
}
