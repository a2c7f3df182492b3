//! The routing table: an immutable snapshot of everything a query needs (the zones' data and,
//! per service, its regions with ready-made answer records and their current state), and the
//! decision of which regions answer a client ([`ServiceRoutes::decide`]).
//!
//! A [`Plan`] (`plan`) is compiled once per configuration and GeoIP build (each service's
//! [`Geography`] compiled into a network map of [`Places`]); [`RoutingTable::build`], here,
//! combines it with the health of every region into a table, which is published with
//! arc-swap. The query path only reads a snapshot: nothing here does I/O, takes a lock or
//! allocates while answering.

mod evidence;
pub mod load_control;
mod place;
mod plan;
mod policy;
mod set;

use plan::Atlas;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::latency::LatencyTable;
use hickory_proto::rr::{Name, Record, RecordType};

pub use evidence::Evidence;
pub use load_control::{Loads, RegionLoad};
pub use place::{Geography, NEAREST_KEPT, Place, Places};
pub use plan::{
    AllowPlan, CanaryPlan, Compilation, GeoSource, LatencyAnswers, Plan, RegionRoute, RulePlan,
    ServicePlan, WeighedCounters, ZoneCounters,
};
pub use policy::{Client, Decision, Explain, MAX_ANSWERS, Picks, Weighed};
use policy::{Draws, MOVED};

use crate::{
    config::{Transfer, WhenAllDown},
    geo::{GeoIp, Located, LookupResult},
    region::{State, States},
    routing::set::RegionSet,
    wire::name::{is_within, label_count},
    zone::{Lookup, RRset, ServiceId, ZoneData},
};

/// Every zone served, most specific origin first so the first match is the closest enclosing.
#[derive(Debug)]
pub struct RoutingTable {
    /// Unique in this process: names the snapshot in per-worker memories of responses.
    pub id: u64,
    zones: Vec<ZoneRoutes>,
    /// The plan's GeoIP databases, while a zone answers `_explain`.
    pub explain_geo: Option<Arc<GeoIp>>,
    /// The latency table in force.
    pub latency: Option<Arc<LatencyTable>>,
}

#[derive(Debug)]
pub struct ZoneRoutes {
    pub data: Arc<ZoneData>,
    pub counters: Arc<ZoneCounters>,
    /// Whether `_explain.<service>` TXT queries are answered.
    pub explain: bool,
    /// Who may transfer the zone, when it may be.
    pub transfer: Option<Arc<Transfer>>,
    /// What secondaries receive, frozen with the serial it went out under; its SOA is the one
    /// every answer of the zone carries.
    pub transferred: Option<Arc<Transferred>>,
    services: Vec<ServiceRoutes>,
}

/// A service with the current state of each of its regions.
#[derive(Debug)]
pub struct ServiceRoutes {
    pub plan: Arc<ServicePlan>,
    /// By position in the service's list.
    pub states: Vec<State>,
    /// Every region, those up or degraded, and those down, by position.
    pub all: RegionSet,
    pub usable: RegionSet,
    pub down: RegionSet,
    /// By position, each region's load and the share of its clients it keeps; empty when the
    /// service has no load target.
    pub loads: Box<[RegionLoad]>,
    /// Where clients are, for this service.
    places: Arc<Places>,
    /// Each place's decision in this snapshot, when no subnet hash takes part in it but load
    /// weighing's.
    decided: Box<[Option<Decided>]>,
}

/// A decision to answer with regions, made for a place when the snapshot was built.
#[derive(Debug, Clone)]
struct Decided {
    picks: Picks,
    fail_open: bool,
    /// For `policy: latency`: the answer of the place's explored subnets.
    explore: Option<Explored>,
    /// When the place's answer weighs the subnet for a region's load: the draw that decides,
    /// and the answers of a moved subnet (`picks` is a kept one's).
    load: Option<Box<LoadAlternatives>>,
}

/// The explored subnets of a place: those whose draw falls in `share`, and their answer.
#[derive(Debug, Clone, Copy)]
struct Explored {
    share: f64,
    seed: u64,
    picks: Picks,
}

#[derive(Debug, Clone)]
struct LoadAlternatives {
    point: policy::LoadPoint,
    /// Moved to the first destination, to the second, and stuck (as [`LoadPoint::destination`]
    /// numbers them).
    ///
    /// [`LoadPoint::destination`]: policy::LoadPoint::destination
    moved: [(Picks, Option<Weighed>); 3],
}

impl LoadAlternatives {
    /// The picks of the subnet of `ip`, and how it was weighed.
    fn draw(&self, ip: IpAddr, kept: Picks) -> (Picks, Option<Weighed>) {
        let (keep, spread) = policy::load_draws(ip, self.point.seed);
        if self.point.keeps(keep) {
            (kept, None)
        } else {
            self.moved[self.point.destination(spread())]
        }
    }
}

/// Places whose decisions a snapshot makes in advance at most: beyond, each is made per query
/// (a health change must not wait for more).
const DECIDED_IN_ADVANCE: usize = 4096;

impl RoutingTable {
    pub fn build(plan: &Plan, states: &States, loads: &Loads) -> RoutingTable {
        let mut zones: Vec<ZoneRoutes> = plan
            .zones
            .iter()
            .map(|zone| ZoneRoutes {
                data: Arc::clone(&zone.data),
                counters: Arc::clone(&zone.counters),
                explain: zone.explain,
                transfer: zone.transfer.clone(),
                transferred: None,
                services: zone
                    .services
                    .iter()
                    .map(|s| ServiceRoutes::build(s, states, loads, &plan.atlas))
                    .collect(),
            })
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(label_count(z.data.origin())));
        static TABLES: AtomicU64 = AtomicU64::new(0);
        RoutingTable {
            id: TABLES.fetch_add(1, Ordering::Relaxed),
            zones,
            explain_geo: plan.explain_geo.clone(),
            latency: plan.latency.clone(),
        }
    }

    pub fn zones(&self) -> &[ZoneRoutes] {
        &self.zones
    }

    /// The zone that is authoritative for `name`, if any.
    /// `name` is in lower case wire form; the deepest zone that holds it answers.
    pub fn zone_for(&self, name: &[u8]) -> Option<&ZoneRoutes> {
        self.zones.iter().find(|z| is_within(name, z.data.origin()))
    }

    /// The zone whose apex is `origin`, if one is served.
    pub fn zone_at(&self, origin: &Name) -> Option<&ZoneRoutes> {
        let apex = crate::wire::NameKey::new(origin);
        self.zone_for(apex.wire())
            .filter(|zone| zone.data.origin() == apex.wire())
    }

    /// Names of the services whose every region is down (answering in fail-open mode).
    pub fn fail_open_services(&self) -> impl Iterator<Item = &str> {
        self.zones
            .iter()
            .flat_map(|z| z.services.iter())
            .filter(|s| s.plan.when_all_down == WhenAllDown::Nearest)
            .filter(|s| {
                !s.states
                    .iter()
                    .any(|st| matches!(st, State::Up | State::Degraded))
            })
            .map(|s| &*s.plan.name)
    }
}

/// A transferred zone's content at one serial: what AXFR sends (the SOA first), and the SOA
/// and negative-answer SOA with that serial.
#[derive(Debug)]
pub struct Transferred {
    pub serial: u32,
    pub records: Vec<Record>,
    pub soa: RRset,
    pub negative_soa: RRset,
    /// The differences from the last serials to this one, oldest first: what an IXFR sends.
    pub journal: Vec<Delta>,
}

/// What changed from one serial to the next (RFC 1995 2): each list without the SOA.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<Record>,
    pub added: Vec<Record>,
}

impl RoutingTable {
    /// Gives each transferred zone what `transferred` makes of it (its serial and content).
    pub fn with_transfers(
        mut self,
        mut transferred: impl FnMut(&ZoneRoutes) -> Option<Arc<Transferred>>,
    ) -> RoutingTable {
        for zone in &mut self.zones {
            zone.transferred = transferred(zone);
        }
        self
    }
}

impl ZoneRoutes {
    /// The zone's SOA: with the serial secondaries were given, when the zone is transferred.
    pub fn soa(&self) -> &RRset {
        self.transferred
            .as_ref()
            .map_or_else(|| self.data.soa(), |t| &t.soa)
    }

    /// The SOA of negative answers (RFC 2308 5), with the same serial as [`ZoneRoutes::soa`].
    pub fn negative_soa(&self) -> &RRset {
        self.transferred
            .as_ref()
            .map_or_else(|| self.data.negative_soa(), |t| &t.negative_soa)
    }

    pub fn services(&self) -> &[ServiceRoutes] {
        &self.services
    }

    pub fn service(&self, id: ServiceId) -> Option<&ServiceRoutes> {
        self.services.get(id)
    }

    /// The service called `name`, if any.
    pub fn service_named(&self, name: &[u8]) -> Option<&ServiceRoutes> {
        match self.data.lookup(name, RecordType::A) {
            Lookup::Service(id) => self.service(id),
            _ => None,
        }
    }
}

/// Each region's load and kept share for `plan`'s service, when it has a load target.
fn region_loads(plan: &ServicePlan, loads: &Loads) -> Box<[RegionLoad]> {
    if plan.load.is_none() {
        return Box::default();
    }
    let region_load = |region: &Arc<RegionRoute>| {
        let shift = load_control::ShiftKey {
            region: region.key.clone(),
            service: plan.name.to_string(),
        };
        let shares = loads.shares.get(&shift).copied().unwrap_or_default();
        RegionLoad::new(loads.load.get(&region.key).copied(), shares)
    };
    plan.regions.iter().map(region_load).collect()
}

impl ServiceRoutes {
    fn build(
        plan: &Arc<ServicePlan>,
        states: &States,
        loads: &Loads,
        atlas: &Atlas,
    ) -> ServiceRoutes {
        let states: Vec<State> = plan
            .regions
            .iter()
            .map(|r| states.get(&r.key).copied().unwrap_or(State::Up))
            .collect();
        let positions = |wanted: &[State]| -> RegionSet {
            let positions = states.iter().enumerate();
            positions
                .filter(|(_, state)| wanted.contains(state))
                .map(|(i, _)| i)
                .collect()
        };
        let mut routes = ServiceRoutes {
            plan: Arc::clone(plan),
            all: RegionSet::first(states.len()),
            usable: positions(&[State::Up, State::Degraded]),
            down: positions(&[State::Down]),
            loads: region_loads(plan, loads),
            states,
            places: atlas
                .places
                .get(&*plan.geography)
                .cloned()
                .unwrap_or_default(),
            decided: Box::default(),
        };
        routes.decided = routes.decide_in_advance();
        routes
    }

    /// Every place's decision, where it answers with regions and no subnet hash took part
    /// (its scope, asked with none, stays none).
    fn decide_in_advance(&self) -> Box<[Option<Decided>]> {
        let places = self.places.all();
        if places.len() > DECIDED_IN_ADVANCE {
            return Box::default();
        }
        let anyone = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let decide = |place: &Place| {
            let client = Client {
                place: *place,
                ..Client::unlocated(anyone)
            };
            let drawn = |keep, spread, explore| {
                let draws = Draws::Fixed {
                    keep,
                    spread,
                    explore,
                };
                match policy::decide_drawing(self, &client, &mut (), draws) {
                    (
                        Decision::Regions {
                            picks,
                            fail_open,
                            weighed,
                            ..
                        },
                        hashed,
                    ) if !hashed.other => Some((picks, fail_open, weighed, hashed)),
                    _ => None,
                }
            };
            let drawing = |keep, spread| {
                let (picks, fail_open, weighed, hashed) = drawn(keep, spread, false)?;
                Some((picks, fail_open, weighed, hashed.load))
            };
            let (picks, fail_open, _, hashed) = drawn(0.0, 0.0, false)?;
            let weighs = hashed.load;
            let explore = match hashed.explore {
                None => None,
                // A place both explored and weighed for load is decided per query.
                Some(_) if weighs.is_some() => return None,
                Some((share, seed)) => {
                    let (explored, _, _, hashed) = drawn(0.0, 0.0, true)?;
                    if hashed.load.is_some() {
                        return None;
                    }
                    Some(Explored {
                        share,
                        seed,
                        picks: explored,
                    })
                }
            };
            let load = match weighs {
                None => None,
                Some(_) => {
                    // A moved subnet's draw knows where it may go: the split is its.
                    let (first, _, first_weighed, point) = drawing(MOVED, 0.0)?;
                    let point = point?;
                    let (second, _, second_weighed, _) = drawing(MOVED, point.split)?;
                    let (stuck, _, stuck_weighed, _) = drawing(MOVED, MOVED)?;
                    let moved = [
                        (first, first_weighed),
                        (second, second_weighed),
                        (stuck, stuck_weighed),
                    ];
                    Some(Box::new(LoadAlternatives { point, moved }))
                }
            };
            Some(Decided {
                picks,
                fail_open,
                explore,
                load,
            })
        };
        places.iter().map(decide).collect()
    }

    /// Whether this service's answer can depend on where the client is.
    fn locates(&self) -> bool {
        self.plan.regions.len() > 1 || !self.plan.rules.is_empty()
    }

    /// The client at `ip` with its place from the compiled map, looked up only when this
    /// service's answer can depend on it; and how the lookup counts, if one was made.
    pub fn client(&self, ip: IpAddr) -> (Client, Option<LookupResult>) {
        if !self.locates() {
            return (Client::unlocated(ip), None);
        }
        let (leaf, place, scope) = self.places.find(ip);
        let client = Client {
            ip,
            place,
            leaf,
            scope,
            coordinates: None,
        };
        (client, Some(place.lookup))
    }

    /// The client at `ip` located one address at a time, as `located` says (for `explain`
    /// and to check the compiled map against).
    pub fn client_located(&self, ip: IpAddr, located: &Located, lookup: LookupResult) -> Client {
        if !self.locates() {
            return Client::unlocated(ip);
        }
        Client {
            ip,
            place: {
                // Rules' networks and the latency table see the address the map classified.
                let mapped = self.places.mapped_address(ip);
                let measured = self.places.measured(&self.plan.geography);
                let geography = &self.plan.geography;
                geography.place(located, mapped, lookup, measured.as_ref())
            },
            leaf: None,
            scope: located.prefix_len(),
            coordinates: located.coordinates(),
        }
    }

    /// For `explain`: what the latency table says of the client at `ip` (located as
    /// `located`), e.g. "latency: eu-central 41 ms (1204 samples, this network) < ap-south
    /// 63 ms (380 samples, same location); distance order ap-south, eu-central; answered by
    /// latency". `None` unless the service follows latency.
    pub fn latency_line(&self, ip: IpAddr, located: &Located) -> Option<String> {
        let measured = self.places.measured(&self.plan.geography);
        let geography = &self.plan.geography;
        // The address the map classified, as `client_located` sees it.
        let mapped = self.places.mapped_address(ip);
        let (candidates, ranked) = geography.latency_ranking(located, mapped, measured.as_ref())?;
        let name = |r: u16| self.plan.regions[usize::from(r)].key.region.as_str();
        let mut figures: Vec<(f64, String)> = candidates
            .iter()
            .zip(&ranked.estimates)
            .filter_map(|(c, e)| {
                let e = (*e)?;
                let text = format!(
                    "{} {:.0} ms ({} samples, {})",
                    name(c.region),
                    e.ms,
                    e.samples,
                    e.level.describe()
                );
                Some((e.ms, text))
            })
            .collect();
        figures.sort_by(|a, b| a.0.total_cmp(&b.0));
        let figures: Vec<String> = figures.into_iter().map(|(_, text)| text).collect();
        let distance: Vec<&str> = candidates.iter().map(|c| name(c.region)).collect();
        let by = match ranked.moved {
            true => "latency",
            false => "distance",
        };
        let measured = match figures.is_empty() {
            true => "nothing measured".to_owned(),
            false => figures.join(" < "),
        };
        Some(format!(
            "latency: {measured}; distance order {}; answered by {by}",
            distance.join(", ")
        ))
    }

    /// Which regions answer `client`, reporting each step to `explain`.
    pub fn decide<E: Explain>(&self, client: &Client, explain: &mut E) -> Decision<'_> {
        policy::decide(self, client, explain)
    }

    /// Which regions answer `client`, as [`ServiceRoutes::decide`] says, from the decision
    /// this snapshot made in advance for the client's place when it has one: the query path's
    /// way to ask.
    pub fn decision_for(&self, client: &Client) -> Decision<'_> {
        let decided = client.leaf.and_then(|leaf| self.decided.get(leaf as usize));
        let Some(Some(decided)) = decided else {
            return self.decide(client, &mut ());
        };
        let subnet_scope = || policy::subnet_scope(client.scope, client.ip.is_ipv4());
        let (picks, weighed, scope, explored) = match (&decided.load, &decided.explore) {
            (Some(load), _) => {
                let (picks, weighed) = load.draw(client.ip, decided.picks);
                (picks, weighed, subnet_scope(), false)
            }
            (None, Some(e)) if policy::explores(client.ip, e.share, e.seed) => {
                (e.picks, None, subnet_scope(), true)
            }
            (None, Some(_)) => (decided.picks, None, subnet_scope(), false),
            (None, None) => (decided.picks, None, client.scope, false),
        };
        Decision::Regions {
            picks,
            fail_open: decided.fail_open,
            scope,
            weighed,
            explored,
        }
    }

    pub fn region(&self, index: usize) -> Option<&RegionRoute> {
        self.plan.regions.get(index).map(|r| &**r)
    }
}

#[cfg(test)]
mod tests;
