//! The routing table: an immutable snapshot of everything a query needs (the zones' data and,
//! per service, its candidate regions with ready-made answer records), and the pure decision of
//! which region answers a client.
//!
//! A table is built whole from the configuration by [`RoutingTable::build`] and published with
//! arc-swap; the query path only reads a snapshot. Nothing here does I/O, takes a lock or
//! allocates while answering.

use std::sync::Arc;

use hickory_proto::rr::{
    LowerName, RData, Record, RecordType,
    rdata::{A, AAAA},
};

use crate::{
    config::{Region, Service, ZoneConfig},
    geo::Coordinates,
    zone::{RRset, ServiceId, ZoneData},
};

/// Every zone served, most specific origin first so the first match is the closest enclosing.
#[derive(Debug)]
pub struct RoutingTable {
    zones: Vec<ZoneRoutes>,
}

#[derive(Debug)]
pub struct ZoneRoutes {
    pub data: Arc<ZoneData>,
    services: Vec<ServiceRoutes>,
}

#[derive(Debug)]
pub struct ServiceRoutes {
    /// Candidates in the configured order.
    regions: Vec<RegionRoute>,
}

/// A region as one service answers with it: addresses as records carrying the service's TTL.
#[derive(Debug)]
pub struct RegionRoute {
    pub name: Arc<str>,
    pub location: Coordinates,
    a: RRset,
    aaaa: RRset,
}

impl RoutingTable {
    pub fn build(zones: &[ZoneConfig]) -> RoutingTable {
        let mut zones: Vec<ZoneRoutes> = zones.iter().map(ZoneRoutes::build).collect();
        zones.sort_by_key(|z| std::cmp::Reverse(z.data.origin().num_labels()));
        RoutingTable { zones }
    }

    /// The zone that is authoritative for `name`, if any.
    pub fn zone_for(&self, name: &LowerName) -> Option<&ZoneRoutes> {
        self.zones.iter().find(|z| z.data.origin().zone_of(name))
    }
}

impl ZoneRoutes {
    fn build(config: &ZoneConfig) -> ZoneRoutes {
        ZoneRoutes {
            data: Arc::new(ZoneData::build(config)),
            services: config
                .services
                .iter()
                .map(|s| ServiceRoutes::build(s, &config.regions))
                .collect(),
        }
    }

    pub fn service(&self, id: ServiceId) -> Option<&ServiceRoutes> {
        self.services.get(id)
    }
}

impl ServiceRoutes {
    fn build(service: &Service, regions: &[Region]) -> ServiceRoutes {
        let regions = service
            .regions
            .iter()
            .filter_map(|&i| regions.get(i))
            .map(|region| RegionRoute::build(service, region))
            .collect();
        ServiceRoutes { regions }
    }

    /// The region that answers a client at `client` (`None`: location unknown).
    pub fn choose(&self, client: Option<Coordinates>) -> Option<&RegionRoute> {
        let locations = self.regions.iter().map(|r| r.location);
        nearest(locations, client).and_then(|i| self.regions.get(i))
    }

    /// Whether the answer can differ between clients; if not, its ECS scope is 0.
    pub fn depends_on_location(&self) -> bool {
        self.regions.len() > 1
    }
}

impl RegionRoute {
    fn build(service: &Service, region: &Region) -> RegionRoute {
        let record = |rdata: RData| Record::from_rdata(service.name.clone(), service.ttl, rdata);
        let a = region
            .addresses
            .iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V4(v4) => Some(record(RData::A(A(*v4)))),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let aaaa = region
            .addresses
            .iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V6(v6) => Some(record(RData::AAAA(AAAA(*v6)))),
                std::net::IpAddr::V4(_) => None,
            })
            .collect();
        RegionRoute {
            name: region.name.as_str().into(),
            location: region.location,
            a: RRset::new(a),
            aaaa: RRset::new(aaaa),
        }
    }

    /// The region's records of `qtype` (A or AAAA; ANY gets A, or AAAA when it has no IPv4).
    pub fn records(&self, qtype: RecordType) -> &RRset {
        match qtype {
            RecordType::AAAA => &self.aaaa,
            RecordType::ANY if self.a.is_empty() => &self.aaaa,
            _ => &self.a,
        }
    }
}

/// Index of the candidate nearest to `client` by great-circle distance; the first candidate
/// when the client's location is unknown or on a tie. `None` only without candidates.
pub fn nearest(
    candidates: impl Iterator<Item = Coordinates>,
    client: Option<Coordinates>,
) -> Option<usize> {
    let Some(client) = client else {
        return candidates.enumerate().next().map(|(i, _)| i);
    };
    candidates
        .map(|c| client.distance_km(c))
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, d)| match best {
            Some((_, best_d)) if best_d <= d => best,
            _ => Some((i, d)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRGINIA: Coordinates = Coordinates {
        lat: 37.4,
        lon: -79.1,
    };
    const DUBLIN: Coordinates = Coordinates {
        lat: 53.3,
        lon: -6.3,
    };
    const TOKYO: Coordinates = Coordinates {
        lat: 35.7,
        lon: 139.7,
    };
    const REGIONS: [Coordinates; 3] = [VIRGINIA, DUBLIN, TOKYO];

    fn at(lat: f64, lon: f64) -> Option<Coordinates> {
        Some(Coordinates { lat, lon })
    }

    #[test]
    fn clients_go_to_the_nearest_region() {
        assert_eq!(
            nearest(REGIONS.into_iter(), at(35.0, 135.5)),
            Some(2),
            "Osaka -> Tokyo"
        );
        assert_eq!(
            nearest(REGIONS.into_iter(), at(51.5, -0.1)),
            Some(1),
            "London -> Dublin"
        );
        assert_eq!(
            nearest(REGIONS.into_iter(), at(40.7, -74.0)),
            Some(0),
            "New York -> Virginia"
        );
        assert_eq!(
            nearest(REGIONS.into_iter(), at(37.8, -122.4)),
            Some(0),
            "San Francisco -> Virginia"
        );
        assert_eq!(
            nearest(REGIONS.into_iter(), at(1.35, 103.8)),
            Some(2),
            "Singapore -> Tokyo"
        );
        assert_eq!(
            nearest(REGIONS.into_iter(), at(52.5, 13.4)),
            Some(1),
            "Berlin -> Dublin"
        );
    }

    #[test]
    fn unknown_clients_get_the_first_region_in_list_order() {
        assert_eq!(nearest(REGIONS.into_iter(), None), Some(0));
        assert_eq!(nearest([TOKYO, DUBLIN].into_iter(), None), Some(0));
    }

    #[test]
    fn ties_go_to_the_earlier_region() {
        assert_eq!(nearest([DUBLIN, DUBLIN].into_iter(), at(0.0, 0.0)), Some(0));
    }

    #[test]
    fn no_candidates_no_choice() {
        assert_eq!(nearest(std::iter::empty(), at(0.0, 0.0)), None);
        assert_eq!(nearest(std::iter::empty(), None), None);
    }

    #[test]
    fn the_most_specific_zone_is_authoritative() {
        let zone = |origin: &str| {
            let text = format!(
                "origin: {origin}\nsoa: {{ primary: ns.example.net., contact: h.example.net. }}\nns: [ns.example.net.]\n"
            );
            crate::config::parse(std::path::Path::new("t.yaml"), &text, 1).expect("valid zone")
        };
        let table = RoutingTable::build(&[zone("example.com."), zone("llm.example.com.")]);
        let name = |s: &str| LowerName::new(&s.parse().expect("name"));
        let origin_of = |s: &str| {
            table
                .zone_for(&name(s))
                .map(|z| z.data.origin().to_string())
        };
        assert_eq!(
            origin_of("api.llm.example.com."),
            Some("llm.example.com.".into())
        );
        assert_eq!(origin_of("www.example.com."), Some("example.com.".into()));
        assert_eq!(origin_of("example.org."), None);
    }
}
