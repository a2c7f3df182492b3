//! The routing table: an immutable snapshot of everything a query needs (the zones' data and,
//! per service, its candidate regions with ready-made answer records and their health), and the
//! pure decision of which region answers a client.
//!
//! A [`Plan`] is compiled once per configuration; [`RoutingTable::build`] combines it with the
//! health of every region into a table, which is published with arc-swap. The query path only
//! reads a snapshot: nothing here does I/O, takes a lock or allocates while answering.

use std::sync::Arc;

use hickory_proto::rr::{
    LowerName, RData, Record, RecordType,
    rdata::{A, AAAA},
};
use prometheus_client::metrics::counter::Counter;

use crate::{
    config::{Region, Service, WhenAllDown, ZoneConfig},
    geo::Coordinates,
    health::{HealthMap, RegionKey, State},
    metrics::Metrics,
    zone::{RRset, ServiceId, ZoneData},
};

/// What a configuration compiles to, before health: zone data, answer records, counters.
pub struct Plan {
    zones: Vec<ZonePlan>,
}

struct ZonePlan {
    data: Arc<ZoneData>,
    counters: Arc<ZoneCounters>,
    services: Vec<ServicePlan>,
}

/// Responses of a zone that are not service answers.
#[derive(Debug)]
pub struct ZoneCounters {
    pub noerror: Counter,
    pub nxdomain: Counter,
}

struct ServicePlan {
    name: Arc<str>,
    when_all_down: WhenAllDown,
    regions: Vec<Arc<RegionRoute>>,
    servfail: Counter,
    fail_open: Counter,
}

/// A region as one service answers with it: addresses as records carrying the service's TTL.
#[derive(Debug)]
pub struct RegionRoute {
    pub key: RegionKey,
    pub location: Coordinates,
    a: RRset,
    aaaa: RRset,
    /// Answers given with this region.
    pub answered: Counter,
}

impl Plan {
    pub fn new(zones: &[ZoneConfig], metrics: &Metrics) -> Plan {
        let zones = zones
            .iter()
            .map(|zone| ZonePlan::new(zone, metrics))
            .collect();
        Plan { zones }
    }
}

impl ZonePlan {
    fn new(config: &ZoneConfig, metrics: &Metrics) -> ZonePlan {
        let zone = config.origin.to_string();
        let services = config
            .services
            .iter()
            .map(|service| {
                let name = service.name.to_string();
                ServicePlan {
                    when_all_down: service.when_all_down,
                    regions: service
                        .regions
                        .iter()
                        .filter_map(|&i| config.regions.get(i))
                        .map(|region| Arc::new(RegionRoute::new(&zone, service, region, metrics)))
                        .collect(),
                    servfail: metrics.query_counter(&zone, &name, "", "SERVFAIL"),
                    fail_open: metrics.fail_open_counter(&zone, &name),
                    name: name.into(),
                }
            })
            .collect();
        ZonePlan {
            data: Arc::new(ZoneData::build(config)),
            counters: Arc::new(ZoneCounters {
                noerror: metrics.query_counter(&zone, "", "", "NOERROR"),
                nxdomain: metrics.query_counter(&zone, "", "", "NXDOMAIN"),
            }),
            services,
        }
    }
}

impl RegionRoute {
    fn new(zone: &str, service: &Service, region: &Region, metrics: &Metrics) -> RegionRoute {
        let record = |rdata: RData| Record::from_rdata(service.name.clone(), service.ttl, rdata);
        let mut a = Vec::new();
        let mut aaaa = Vec::new();
        for ip in &region.addresses {
            match ip {
                std::net::IpAddr::V4(v4) => a.push(record(RData::A(A(*v4)))),
                std::net::IpAddr::V6(v6) => aaaa.push(record(RData::AAAA(AAAA(*v6)))),
            }
        }
        let service_name = service.name.to_string();
        RegionRoute {
            key: RegionKey {
                zone: zone.to_owned(),
                region: region.name.clone(),
            },
            location: region.location,
            a: RRset::new(a),
            aaaa: RRset::new(aaaa),
            answered: metrics.query_counter(zone, &service_name, &region.name, "NOERROR"),
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

/// Every zone served, most specific origin first so the first match is the closest enclosing.
#[derive(Debug)]
pub struct RoutingTable {
    zones: Vec<ZoneRoutes>,
}

#[derive(Debug)]
pub struct ZoneRoutes {
    pub data: Arc<ZoneData>,
    pub counters: Arc<ZoneCounters>,
    services: Vec<ServiceRoutes>,
}

#[derive(Debug)]
pub struct ServiceRoutes {
    name: Arc<str>,
    /// Candidates in the configured order.
    regions: Vec<Arc<RegionRoute>>,
    /// Indexes of the regions that may answer now.
    eligible: Vec<usize>,
    mode: Mode,
    pub servfail: Counter,
    pub fail_open: Counter,
}

/// How a service answers, given its regions' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the up regions, or the degraded ones when none is up.
    Normal,
    /// Every region is down: answer as if all were up.
    FailOpen,
    /// Every region is down and the service says `when_all_down: servfail`.
    ServFail,
}

/// Which region answers a client.
#[derive(Debug)]
pub enum Choice<'t> {
    Region(&'t RegionRoute),
    FailOpen(&'t RegionRoute),
    ServFail,
}

impl RoutingTable {
    pub fn build(plan: &Plan, health: &HealthMap) -> RoutingTable {
        let mut zones: Vec<ZoneRoutes> = plan
            .zones
            .iter()
            .map(|zone| ZoneRoutes {
                data: Arc::clone(&zone.data),
                counters: Arc::clone(&zone.counters),
                services: zone
                    .services
                    .iter()
                    .map(|s| ServiceRoutes::build(s, health))
                    .collect(),
            })
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(z.data.origin().num_labels()));
        RoutingTable { zones }
    }

    /// The zone that is authoritative for `name`, if any.
    pub fn zone_for(&self, name: &LowerName) -> Option<&ZoneRoutes> {
        self.zones.iter().find(|z| z.data.origin().zone_of(name))
    }

    /// Names of the services answering in fail-open mode.
    pub fn fail_open_services(&self) -> impl Iterator<Item = &str> {
        self.zones
            .iter()
            .flat_map(|z| z.services.iter())
            .filter(|s| s.mode == Mode::FailOpen)
            .map(|s| &*s.name)
    }
}

impl ZoneRoutes {
    pub fn service(&self, id: ServiceId) -> Option<&ServiceRoutes> {
        self.services.get(id)
    }
}

impl ServiceRoutes {
    fn build(plan: &ServicePlan, health: &HealthMap) -> ServiceRoutes {
        let states: Vec<State> = plan
            .regions
            .iter()
            .map(|r| {
                health
                    .get(&r.key)
                    .map_or(State::Up, |status| status.state())
            })
            .collect();
        let (eligible, mode) = eligible(&states, plan.when_all_down);
        ServiceRoutes {
            name: Arc::clone(&plan.name),
            regions: plan.regions.clone(),
            eligible,
            mode,
            servfail: plan.servfail.clone(),
            fail_open: plan.fail_open.clone(),
        }
    }

    /// The region that answers a client at `client` (`None`: location unknown).
    pub fn choose(&self, client: Option<Coordinates>) -> Choice<'_> {
        let candidates = self
            .eligible
            .iter()
            .filter_map(|&i| Some((i, self.regions.get(i)?.location)));
        let region = nearest(candidates, client).and_then(|i| self.regions.get(i));
        match (self.mode, region) {
            (Mode::Normal, Some(region)) => Choice::Region(region),
            (Mode::FailOpen, Some(region)) => Choice::FailOpen(region),
            (Mode::ServFail, _) | (_, None) => Choice::ServFail,
        }
    }

    /// Whether the answer can differ between clients; if not, its ECS scope is 0.
    pub fn depends_on_location(&self) -> bool {
        self.eligible.len() > 1
    }
}

/// The regions that may answer, by state: the up ones; else the degraded ones; else, every
/// region being down or drained, the down ones (fail open; all of them if all are drained) or
/// none (SERVFAIL), as the service says.
pub fn eligible(states: &[State], when_all_down: WhenAllDown) -> (Vec<usize>, Mode) {
    let with = |wanted: State| -> Vec<usize> {
        states
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == wanted)
            .map(|(i, _)| i)
            .collect()
    };
    for wanted in [State::Up, State::Degraded] {
        let regions = with(wanted);
        if !regions.is_empty() {
            return (regions, Mode::Normal);
        }
    }
    match when_all_down {
        WhenAllDown::ServFail => (Vec::new(), Mode::ServFail),
        WhenAllDown::Nearest => {
            let down = with(State::Down);
            let regions = if down.is_empty() {
                (0..states.len()).collect()
            } else {
                down
            };
            (regions, Mode::FailOpen)
        }
    }
}

/// The candidate nearest to `client` by great-circle distance: the first one when the client's
/// location is unknown, and the earlier one on a tie. Candidates are (index, location) pairs;
/// `None` only without candidates.
pub fn nearest(
    candidates: impl Iterator<Item = (usize, Coordinates)>,
    client: Option<Coordinates>,
) -> Option<usize> {
    let Some(client) = client else {
        return candidates.map(|(i, _)| i).next();
    };
    candidates
        .map(|(i, c)| (i, client.distance_km(c)))
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

    fn regions(list: &[Coordinates]) -> impl Iterator<Item = (usize, Coordinates)> + '_ {
        list.iter().copied().enumerate()
    }

    fn at(lat: f64, lon: f64) -> Option<Coordinates> {
        Some(Coordinates { lat, lon })
    }

    const ALL: [Coordinates; 3] = [VIRGINIA, DUBLIN, TOKYO];

    #[test]
    fn clients_go_to_the_nearest_region() {
        assert_eq!(
            nearest(regions(&ALL), at(35.0, 135.5)),
            Some(2),
            "Osaka -> Tokyo"
        );
        assert_eq!(
            nearest(regions(&ALL), at(51.5, -0.1)),
            Some(1),
            "London -> Dublin"
        );
        assert_eq!(
            nearest(regions(&ALL), at(40.7, -74.0)),
            Some(0),
            "New York -> Virginia"
        );
        assert_eq!(
            nearest(regions(&ALL), at(37.8, -122.4)),
            Some(0),
            "San Francisco -> Virginia"
        );
        assert_eq!(
            nearest(regions(&ALL), at(1.35, 103.8)),
            Some(2),
            "Singapore -> Tokyo"
        );
        assert_eq!(
            nearest(regions(&ALL), at(52.5, 13.4)),
            Some(1),
            "Berlin -> Dublin"
        );
    }

    #[test]
    fn only_the_given_candidates_compete() {
        let without_tokyo = regions(&ALL).filter(|(i, _)| *i != 2);
        assert_eq!(
            nearest(without_tokyo, at(35.0, 135.5)),
            Some(1),
            "Osaka -> Dublin"
        );
    }

    #[test]
    fn unknown_clients_get_the_first_candidate_in_list_order() {
        assert_eq!(nearest(regions(&ALL), None), Some(0));
        assert_eq!(nearest(regions(&ALL).skip(1), None), Some(1));
    }

    #[test]
    fn ties_go_to_the_earlier_region() {
        assert_eq!(nearest(regions(&[DUBLIN, DUBLIN]), at(0.0, 0.0)), Some(0));
    }

    #[test]
    fn no_candidates_no_choice() {
        assert_eq!(nearest(std::iter::empty(), at(0.0, 0.0)), None);
        assert_eq!(nearest(std::iter::empty(), None), None);
    }

    use State::{Degraded as G, Down as D, Drained as X, Up as U};
    use WhenAllDown::{Nearest, ServFail};

    #[test]
    fn up_regions_answer_and_degraded_ones_only_when_none_is_up() {
        assert_eq!(eligible(&[U, G, D, U], Nearest), (vec![0, 3], Mode::Normal));
        assert_eq!(eligible(&[G, D, G, X], Nearest), (vec![0, 2], Mode::Normal));
        assert_eq!(eligible(&[X, U], ServFail), (vec![1], Mode::Normal));
    }

    #[test]
    fn all_down_fails_open_to_the_down_regions_or_servfails() {
        assert_eq!(
            eligible(&[D, X, D], Nearest),
            (vec![0, 2], Mode::FailOpen),
            "drained stays out"
        );
        assert_eq!(eligible(&[X, X], Nearest), (vec![0, 1], Mode::FailOpen));
        assert_eq!(eligible(&[D, D], ServFail), (vec![], Mode::ServFail));
    }

    #[test]
    fn the_most_specific_zone_is_authoritative() {
        let zone = |origin: &str| {
            let text = format!(
                "origin: {origin}\nsoa: {{ primary: ns.example.net., contact: h.example.net. }}\nns: [ns.example.net.]\n"
            );
            crate::config::parse(std::path::Path::new("t.yaml"), &text, 1).expect("valid zone")
        };
        let zones = [zone("example.com."), zone("llm.example.com.")];
        let plan = Plan::new(&zones, &Metrics::new());
        let table = RoutingTable::build(&plan, &HealthMap::new());
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
