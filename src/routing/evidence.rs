//! The latency table joined with the GeoIP databases: every measured network located once,
//! its measurements pooled by location, by nearby cell and by country, so that a network with
//! too few of its own borrows from those GeoIP places with it. Made off the query path, when
//! a latency service's places are compiled; read by [`super::place`] for every network.

use std::{net::IpAddr, sync::Arc};

use crate::{
    geo::{CountryCode, GeoIp, Located, Location},
    latency::{
        LatencyTable, Measure,
        estimate::{Level, Tally},
    },
};

/// The pools are hashed once per measured network while compiling; their keys come from our
/// own databases and table.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// Cells of this many degrees of latitude and longitude; "nearby" is a cell and the eight
/// around it (about 300 km each way at mid latitudes).
const CELL_DEGREES: f64 = 2.0;

/// A location as GeoIP gives it: its coordinates and country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LocationKey {
    lat: u64,
    lon: u64,
    country: Option<CountryCode>,
}

/// Tallies by the table's region positions.
type Pool = Vec<Tally>;

/// Where networks are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PoolKey {
    Location(LocationKey),
    Cell(i32, i32),
    Country(CountryCode),
}

/// A pool's gaps between two regions (by table position, the lower first): the first's round
/// trip minus the second's, over the networks measured to both.
type Gaps = HashMap<(PoolKey, u16, u16), Tally>;

/// The table, located.
#[derive(Debug)]
pub struct Evidence {
    pub table: Arc<LatencyTable>,
    by_location: HashMap<LocationKey, Pool>,
    by_cell: HashMap<(i32, i32), Pool>,
    by_country: HashMap<CountryCode, Pool>,
    gaps: Gaps,
    /// Seeds the explored subnets' draw: another table, other subnets explored.
    pub seed: u64,
}

impl Evidence {
    /// Locates every network of `table` with `geo` and pools their measurements.
    pub fn prepare(table: Arc<LatencyTable>, geo: &GeoIp) -> Evidence {
        let regions = table.regions.len();
        let mut evidence = Evidence {
            by_location: HashMap::default(),
            by_cell: HashMap::default(),
            by_country: HashMap::default(),
            gaps: Gaps::default(),
            seed: seed_of(&table.summary.sha256),
            table: Arc::clone(&table),
        };
        for (network, measures) in table.networks() {
            let Located::Known(location) = geo.locate(network.network()) else {
                continue;
            };
            let pools = [
                Some(evidence.by_location.entry(key(&location)).or_default()),
                cell(&location).map(|c| evidence.by_cell.entry(c).or_default()),
                location
                    .country
                    .map(|c| evidence.by_country.entry(c).or_default()),
            ];
            for pool in pools.into_iter().flatten() {
                pool.resize(regions, Tally::default());
                for m in measures {
                    pool[usize::from(m.region)].add(f64::from(m.rtt_ms), m.samples);
                }
            }
            if measures.len() > 1 {
                evidence.add_gaps(&location, measures);
            }
        }
        evidence
    }

    /// Adds a network's gaps between every two regions it was measured to, to its pools.
    fn add_gaps(&mut self, location: &Location, measures: &[Measure]) {
        let pools = [
            Some(PoolKey::Location(key(location))),
            cell(location).map(|(lat, lon)| PoolKey::Cell(lat, lon)),
            location.country.map(PoolKey::Country),
        ];
        for (i, a) in measures.iter().enumerate() {
            for b in &measures[i + 1..] {
                let (low, high) = match a.region < b.region {
                    true => (a, b),
                    false => (b, a),
                };
                let gap = f64::from(low.rtt_ms) - f64::from(high.rtt_ms);
                for pool in pools.iter().flatten() {
                    let tally = self.gaps.entry((*pool, low.region, high.region));
                    tally.or_default().add(gap, low.samples.min(high.samples));
                }
            }
        }
    }

    /// The gap between the table's regions `region` and `nearest` (the first's round trip
    /// minus the second's) over networks measured to both, by [`Level`], for the clients at
    /// `ip`, located as `located`.
    pub fn gaps(&self, ip: IpAddr, located: &Located, region: u16, nearest: u16) -> [Tally; 4] {
        let mut gaps = [Tally::default(); 4];
        if region == nearest {
            return gaps;
        }
        let (low, high) = (region.min(nearest), region.max(nearest));
        let oriented = |t: Tally| if region == low { t } else { t.negated() };
        if let Some((_, measures)) = self.table.find(ip) {
            let of = |r: u16| measures.iter().find(|m| m.region == r);
            if let (Some(a), Some(b)) = (of(region), of(nearest)) {
                let gap = f64::from(a.rtt_ms) - f64::from(b.rtt_ms);
                gaps[Level::Network as usize].add(gap, a.samples.min(b.samples));
            }
        }
        let Located::Known(location) = located else {
            return gaps;
        };
        let of = |pool: PoolKey| self.gaps.get(&(pool, low, high)).copied().map(oriented);
        if let Some(t) = of(PoolKey::Location(key(location))) {
            gaps[Level::Location as usize] = t;
        }
        if let Some((lat, lon)) = cell(location) {
            for (dlat, dlon) in (-1..=1).flat_map(|a| (-1..=1).map(move |b| (a, b))) {
                let around = PoolKey::Cell(lat + dlat, (lon + dlon).rem_euclid(cells_around()));
                if let Some(t) = of(around) {
                    gaps[Level::Nearby as usize].merge(&t);
                }
            }
        }
        if let Some(t) = location.country.and_then(|c| of(PoolKey::Country(c))) {
            gaps[Level::Country as usize] = t;
        }
        gaps
    }

    /// What is known of the clients at `ip`, located as `located`, to the table's region
    /// `region`, by [`Level`].
    pub fn tallies(&self, ip: IpAddr, located: &Located, region: usize) -> [Tally; 4] {
        let mut tallies = [Tally::default(); 4];
        if let Some((_, measures)) = self.table.find(ip) {
            for m in measures.iter().filter(|m| usize::from(m.region) == region) {
                tallies[Level::Network as usize].add(f64::from(m.rtt_ms), m.samples);
            }
        }
        let Located::Known(location) = located else {
            return tallies;
        };
        let of = |pool: Option<&Pool>| pool.and_then(|p| p.get(region)).copied();
        if let Some(t) = of(self.by_location.get(&key(location))) {
            tallies[Level::Location as usize] = t;
        }
        if let Some((lat, lon)) = cell(location) {
            for (dlat, dlon) in (-1..=1).flat_map(|a| (-1..=1).map(move |b| (a, b))) {
                let around = (lat + dlat, (lon + dlon).rem_euclid(cells_around()));
                if let Some(t) = of(self.by_cell.get(&around)) {
                    tallies[Level::Nearby as usize].merge(&t);
                }
            }
        }
        if let Some(t) = location.country.and_then(|c| of(self.by_country.get(&c))) {
            tallies[Level::Country as usize] = t;
        }
        tallies
    }
}

fn key(location: &Location) -> LocationKey {
    let (lat, lon) = location
        .coordinates
        .map_or((0, 0), |c| (c.lat.to_bits(), c.lon.to_bits()));
    LocationKey {
        lat,
        lon,
        country: location.country,
    }
}

fn cells_around() -> i32 {
    (360.0 / CELL_DEGREES) as i32
}

fn cell(location: &Location) -> Option<(i32, i32)> {
    let c = location.coordinates?;
    let lat = (c.lat / CELL_DEGREES).floor() as i32;
    let lon = ((c.lon + 180.0) / CELL_DEGREES).floor() as i32;
    Some((lat, lon.rem_euclid(cells_around())))
}

fn seed_of(sha256: &str) -> u64 {
    u64::from_str_radix(sha256.get(..16).unwrap_or("0"), 16).unwrap_or(0)
}
