//! The routing table: an immutable snapshot of everything a query needs (the zones' data and,
//! per service, its regions with ready-made answer records and their current state), and the
//! decision of which regions answer a client ([`ServiceRoutes::decide`]).
//!
//! A [`Plan`] is compiled once per configuration; [`RoutingTable::build`] combines it with the
//! health of every region into a table, which is published with arc-swap. The query path only
//! reads a snapshot: nothing here does I/O, takes a lock or allocates while answering.

mod memo;
mod nearest;
mod policy;
mod set;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::counter::QueryCounter;
use hickory_proto::rr::{
    RData, Record, RecordType,
    rdata::{A, AAAA},
};

pub use policy::{Client, Decision, Explain, MAX_ANSWERS, Picks};

use crate::{
    config::{FailClosed, Matcher, Policy, Region, Service, WhenAllDown, ZoneConfig},
    dnssec::{OnDemand, RrsetSigner, remembered},
    geo::{Coordinates, GeoIp, Located, LookupResult},
    metrics::{AnswerShares, Metrics},
    region::{RegionKey, State, States},
    routing::set::RegionSet,
    wire::{
        WireRRset, encode_signed_rrset,
        name::{is_within, label_count},
    },
    zone::{Lookup, RRset, ServiceId, ZoneData},
};

/// What a configuration compiles to, before health: zone data, answer records, counters.
pub struct Plan {
    zones: Vec<ZonePlan>,
}

#[derive(Clone)]
struct ZonePlan {
    data: Arc<ZoneData>,
    counters: Arc<ZoneCounters>,
    services: Vec<Arc<ServicePlan>>,
    explain: bool,
}

/// Responses of a zone that are not service answers.
#[derive(Debug)]
pub struct ZoneCounters {
    pub noerror: QueryCounter,
    pub nxdomain: QueryCounter,
}

/// A service compiled from its configuration: regions in list order (every region index below
/// is a position in that list), weights, canary and rules.
#[derive(Debug)]
pub struct ServicePlan {
    /// Unique in this process: names the plan in per-thread memories of its nearest regions.
    pub id: u64,
    pub name: Arc<str>,
    pub when_all_down: WhenAllDown,
    pub policy: Policy,
    pub answers: usize,
    pub shed: f64,
    pub regions: Vec<Arc<RegionRoute>>,
    pub weights: Vec<u32>,
    pub canary: Option<CanaryPlan>,
    pub rules: Vec<RulePlan>,
    pub servfail: QueryCounter,
    pub fail_open: QueryCounter,
    pub fail_closed: QueryCounter,
    /// Answers by region and client continent.
    pub shares: Arc<AnswerShares>,
    /// The zone's signer, when it is signed: for answers of several regions at once.
    signer: Option<RrsetSigner>,
}

#[derive(Debug, Clone, Copy)]
pub struct CanaryPlan {
    pub region: usize,
    pub share: f64,
}

#[derive(Debug)]
pub struct RulePlan {
    pub matcher: Matcher,
    pub allow: Option<AllowPlan>,
    pub when_none: FailClosed,
    pub prefer: Vec<usize>,
}

#[derive(Debug)]
pub struct AllowPlan {
    /// The allowed regions.
    pub regions: RegionSet,
    /// As written: `jurisdiction eu`.
    pub description: String,
    /// The Extended DNS Error text of a fail-closed answer.
    pub reason: String,
}

/// A region as one service answers with it: addresses as records carrying the service's TTL.
#[derive(Debug)]
pub struct RegionRoute {
    pub key: RegionKey,
    pub location: Coordinates,
    /// `location` as a unit vector, for ordering by distance without trigonometry.
    pub direction: [f64; 3],
    a: RRset,
    aaaa: RRset,
    /// Answers given with this region.
    pub answered: QueryCounter,
}

impl Plan {
    /// Whether a zone of this plan was built from `data` (the same reading of its file).
    pub fn has_data(&self, data: &Arc<ZoneData>) -> bool {
        self.zone_with(data).is_some()
    }

    fn zone_with(&self, data: &Arc<ZoneData>) -> Option<&ZonePlan> {
        self.zones.iter().find(|zone| Arc::ptr_eq(&zone.data, data))
    }

    /// The plan of `zones`, taking from this plan each unsigned zone that is the same reading
    /// of its file (its data shared, so every setting too) and compiling the rest: a signed
    /// zone's addresses are signed afresh at every reload.
    pub fn rebuilt(&self, zones: &[ZoneConfig], metrics: &Metrics) -> Plan {
        let zones = zones
            .iter()
            .map(|zone| match self.zone_with(&zone.data) {
                Some(compiled) if zone.dnssec.is_none() => compiled.clone(),
                _ => ZonePlan::new(zone, metrics),
            })
            .collect();
        Plan { zones }
    }

    pub fn new(zones: &[ZoneConfig], metrics: &Metrics) -> Plan {
        Plan { zones: Vec::new() }.rebuilt(zones, metrics)
    }
}

impl ZonePlan {
    fn new(config: &ZoneConfig, metrics: &Metrics) -> ZonePlan {
        let zone = config.origin.to_string();
        // The regions' addresses are signed when the plan is made, never per query.
        let signer = config
            .dnssec
            .as_ref()
            .map(|signing| signing.signer(&config.origin));
        ZonePlan {
            data: Arc::clone(&config.data),
            counters: Arc::new(ZoneCounters {
                noerror: metrics.query_counter(&zone, "", "", "NOERROR"),
                nxdomain: metrics.query_counter(&zone, "", "", "NXDOMAIN"),
            }),
            services: config
                .services
                .iter()
                .map(|service| {
                    let plan = ServicePlan::new(&zone, config, service, signer.as_ref(), metrics);
                    Arc::new(plan)
                })
                .collect(),
            explain: config.explain,
        }
    }
}

impl ServicePlan {
    fn new(
        zone: &str,
        config: &ZoneConfig,
        service: &Service,
        signer: Option<&RrsetSigner>,
        metrics: &Metrics,
    ) -> ServicePlan {
        let name = service.name.to_string();
        // A zone region index to its position in this service's list.
        let local = |zone_index: usize| service.regions.iter().position(|&r| r == zone_index);
        let regions: Vec<&Region> = service
            .regions
            .iter()
            .filter_map(|&i| config.regions.get(i))
            .collect();
        let rules = service
            .rules
            .iter()
            .map(|rule| RulePlan {
                matcher: rule.matcher.clone(),
                allow: rule.allow.as_ref().map(|allow| AllowPlan {
                    regions: allow.regions.iter().filter_map(|&r| local(r)).collect(),
                    reason: format!("no healthy region allowed for {}", allow.description),
                    description: allow.description.clone(),
                }),
                when_none: rule.when_none,
                prefer: rule.prefer.iter().filter_map(|&r| local(r)).collect(),
            })
            .collect();
        static PLANNED: AtomicU64 = AtomicU64::new(0);
        ServicePlan {
            id: PLANNED.fetch_add(1, Ordering::Relaxed),
            when_all_down: service.when_all_down,
            policy: service.policy,
            answers: service.answers,
            shed: service.shed,
            weights: regions.iter().map(|r| r.weight).collect(),
            canary: service.canary.as_ref().and_then(|c| {
                Some(CanaryPlan {
                    region: local(c.region)?,
                    share: c.share,
                })
            }),
            rules,
            regions: regions
                .iter()
                .map(|region| Arc::new(RegionRoute::new(zone, service, region, signer, metrics)))
                .collect(),
            servfail: metrics.query_counter(zone, &name, "", "SERVFAIL"),
            fail_open: metrics.fail_open_counter(zone, &name),
            fail_closed: metrics.fail_closed_counter(zone, &name),
            shares: metrics.answer_shares(
                zone,
                &name,
                regions.iter().map(|r| r.name.clone()).collect(),
            ),
            signer: signer.cloned(),
            name: name.into(),
        }
    }

    /// The `qtype` addresses of the regions at `positions`, as one RRset signed for them
    /// together (a validator sees every address of a name and type as one set). Made the first
    /// time a thread answers with these regions, and remembered; `None` when the zone is not
    /// signed.
    pub fn signed_together(&self, positions: &[u16], qtype: RecordType) -> Option<Arc<WireRRset>> {
        let signer = self.signer.as_ref()?;
        // Found without allocating: a worker asks for it on every such answer.
        let mut key = arrayvec::ArrayVec::<u8, { 2 * MAX_ANSWERS }>::new();
        for position in positions.iter().take(MAX_ANSWERS) {
            key.extend(position.to_be_bytes());
        }
        remembered(OnDemand::Regions, self.id, &key, u16::from(qtype), || {
            let regions = positions
                .iter()
                .filter_map(|&p| self.regions.get(usize::from(p)));
            let records: Vec<Record> = regions.flat_map(|r| r.records(qtype).records()).collect();
            let signature = signer.sign(&records)?;
            encode_signed_rrset(&records, &[signature])
        })
    }
}

impl RegionRoute {
    fn new(
        zone: &str,
        service: &Service,
        region: &Region,
        signer: Option<&RrsetSigner>,
        metrics: &Metrics,
    ) -> RegionRoute {
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
            direction: region.location.unit_vector(),
            a: RRset::signed(a, signer),
            aaaa: RRset::signed(aaaa, signer),
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
    /// Unique in this process: names the snapshot in per-worker memories of responses.
    pub id: u64,
    zones: Vec<ZoneRoutes>,
}

#[derive(Debug)]
pub struct ZoneRoutes {
    pub data: Arc<ZoneData>,
    pub counters: Arc<ZoneCounters>,
    /// Whether `_explain.<service>` TXT queries are answered.
    pub explain: bool,
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
    /// Unique in this process, when every client of one place gets the same decision from this
    /// snapshot (no subnet hash, no network rule): its decisions are then remembered per thread
    /// under this id.
    remembered_as: Option<u64>,
}

impl RoutingTable {
    pub fn build(plan: &Plan, states: &States) -> RoutingTable {
        let mut zones: Vec<ZoneRoutes> = plan
            .zones
            .iter()
            .map(|zone| ZoneRoutes {
                data: Arc::clone(&zone.data),
                counters: Arc::clone(&zone.counters),
                explain: zone.explain,
                services: zone
                    .services
                    .iter()
                    .map(|s| ServiceRoutes::build(s, states))
                    .collect(),
            })
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(label_count(z.data.origin())));
        static TABLES: AtomicU64 = AtomicU64::new(0);
        RoutingTable {
            id: TABLES.fetch_add(1, Ordering::Relaxed),
            zones,
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

impl ZoneRoutes {
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

impl ServiceRoutes {
    fn build(plan: &Arc<ServicePlan>, states: &States) -> ServiceRoutes {
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
        static BUILT: AtomicU64 = AtomicU64::new(0);
        let remembered_as =
            decided_by_place(plan, &states).then(|| BUILT.fetch_add(1, Ordering::Relaxed));
        ServiceRoutes {
            plan: Arc::clone(plan),
            all: RegionSet::first(states.len()),
            usable: positions(&[State::Up, State::Degraded]),
            down: positions(&[State::Down]),
            states,
            remembered_as,
        }
    }

    /// The client at `ip` with its location, looked up only when this service's answer can
    /// depend on it.
    pub fn locate(&self, geo: &GeoIp, ip: IpAddr) -> Client {
        self.locate_counted(geo, ip).0
    }

    /// As [`ServiceRoutes::locate`], and how the lookup was counted, if one was made.
    pub fn locate_counted(&self, geo: &GeoIp, ip: IpAddr) -> (Client, Option<LookupResult>) {
        if self.plan.regions.len() > 1 || !self.plan.rules.is_empty() {
            let (location, result) = geo.locate_counted(ip);
            (Client { ip, location }, Some(result))
        } else {
            let location = Located::Unknown { prefix_len: 0 };
            (Client { ip, location }, None)
        }
    }

    /// Which regions answer `client`, reporting each step to `explain`.
    pub fn decide<E: Explain>(&self, client: &Client, explain: &mut E) -> Decision<'_> {
        policy::decide(self, client, explain)
    }

    /// Which regions answer `client`, as [`ServiceRoutes::decide`] says, remembered per thread
    /// and place when the place alone decides: the query path's way to ask.
    pub fn decision_for(&self, client: &Client) -> Decision<'_> {
        let Some(id) = self.remembered_as else {
            return self.decide(client, &mut ());
        };
        let remembered = memo::decided(id, client, || {
            memo::Remembered::of(self.decide(client, &mut ()))
        });
        remembered.map_or_else(|decision| decision, memo::Remembered::decision)
    }

    pub fn region(&self, index: usize) -> Option<&RegionRoute> {
        self.plan.regions.get(index).map(|r| &**r)
    }
}

/// Whether every client of one place gets the same decision from `plan` in these `states`:
/// nothing in it hashes the client's subnet (a weighted order, a canary's share, a degraded
/// region's shed share) and no rule tests the client's network.
fn decided_by_place(plan: &ServicePlan, states: &[State]) -> bool {
    let sheds = plan.shed > 0.0 && states.contains(&State::Degraded);
    let network_rules = plan.rules.iter().any(|r| !r.matcher.networks.is_empty());
    plan.policy != Policy::Weighted && plan.canary.is_none() && !sheds && !network_rules
}

#[cfg(test)]
mod tests;
