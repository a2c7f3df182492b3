//! A [`Plan`]: what a configuration and the GeoIP databases compile to before health (zone
//! data, each service's regions with ready-made answer records, counters, rules and compiled
//! places). Compiled once per configuration, GeoIP build or latency table; the table built from
//! it and the health of the regions is [`super::RoutingTable`]'s concern, not this one's.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::counter::QueryCounter;
use crate::latency::{
    LatencyTable,
    estimate::{Basis, Settings as LatencySettings},
};
use hickory_proto::rr::{
    RData, Record, RecordType,
    rdata::{A, AAAA},
};

use super::{Evidence, Geography, MAX_ANSWERS, Places, place};

use crate::{
    config::{
        FailClosed, LoadTarget, Matcher, Policy, Region, Secondary, Service, Transfer, WhenAllDown,
        ZoneConfig,
    },
    dnssec::{OnDemand, RrsetSigner, remembered},
    geo::{self, Accepted, Coordinates, GeoError, GeoIp},
    metrics::{AnswerShares, Metrics},
    region::RegionKey,
    routing::set::RegionSet,
    wire::{WireRRset, encode_signed_rrset},
    zone::{RRset, ZoneData},
};

/// What a configuration and the GeoIP databases compile to, before health: zone data, answer
/// records, counters, and every service's places.
pub struct Plan {
    pub(super) zones: Vec<ZonePlan>,
    pub(super) atlas: Atlas,
    /// What the last compilation of places did, if this plan made one.
    pub compiled: Option<Compilation>,
    /// The GeoIP databases, kept open while a zone answers `_explain`: its lines say what the
    /// client's own record says (the compiled places keep no country or coordinates).
    pub(super) explain_geo: Option<Arc<GeoIp>>,
    /// The latency table in force, which latency services' places are compiled with.
    pub(super) latency: Option<Arc<LatencyTable>>,
}

/// Every geography of a plan compiled against the GeoIP databases.
#[derive(Default)]
pub(super) struct Atlas {
    pub(super) places: HashMap<Arc<Geography>, Arc<Places>>,
    /// The latency table located by the same databases, when a latency service has places.
    evidence: Option<Arc<Evidence>>,
}

/// Where a plan's places are compiled from: databases open, or the files accepted (read again
/// only when a geography is new, and let go once compiled).
#[derive(Clone, Copy)]
pub enum GeoSource<'g> {
    Opened(&'g GeoIp),
    Accepted(&'g Accepted),
}

/// Figures of a compilation of places, for the log.
#[derive(Debug, Clone, Copy)]
pub struct Compilation {
    pub geographies: usize,
    pub figures: geo::Compiled,
    pub places: usize,
    pub bytes: usize,
    pub took: Duration,
}

#[derive(Clone)]
pub(super) struct ZonePlan {
    pub(super) data: Arc<ZoneData>,
    pub(super) counters: Arc<ZoneCounters>,
    pub(super) services: Vec<Arc<ServicePlan>>,
    pub(super) explain: bool,
    pub(super) transfer: Option<Arc<Transfer>>,
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
    /// Unique in this process: names the plan in the per-thread memory of signed region sets.
    pub id: u64,
    pub name: Arc<str>,
    pub when_all_down: WhenAllDown,
    pub policy: Policy,
    /// How `policy: latency` weighs measurements and explores.
    pub latency: Option<LatencySettings>,
    /// A latency service's answers by what they rest on.
    pub latency_answers: Option<LatencyAnswers>,
    /// What a zone transfer carries for the name.
    pub secondary: Secondary,
    pub answers: usize,
    pub shed: f64,
    /// Clients moved away from regions above this load.
    pub load: Option<LoadTarget>,
    pub regions: Vec<Arc<RegionRoute>>,
    pub weights: Vec<u32>,
    pub canary: Option<CanaryPlan>,
    pub rules: Vec<RulePlan>,
    pub servfail: QueryCounter,
    pub fail_open: QueryCounter,
    pub fail_closed: QueryCounter,
    /// Answers by region and client continent.
    pub shares: Arc<AnswerShares>,
    /// What the service's places depend on.
    pub geography: Arc<Geography>,
    /// The zone's signer, when it is signed: for answers of several regions at once.
    signer: Option<RrsetSigner>,
}

/// A latency service's answers: by measured round trips, by distance, or explored.
#[derive(Debug)]
pub struct LatencyAnswers {
    measured: QueryCounter,
    distance: QueryCounter,
    explore: QueryCounter,
}

impl LatencyAnswers {
    /// Answers so far: measured, distance, explore.
    pub fn counts(&self) -> [u64; 3] {
        [&self.measured, &self.distance, &self.explore].map(QueryCounter::get)
    }

    /// The counter of an answer that `explored`, or whose order rested on `basis`.
    pub fn of(&self, explored: bool, basis: Option<Basis>) -> &QueryCounter {
        match (explored, basis) {
            (true, _) => &self.explore,
            (false, Some(Basis::Measured(_))) => &self.measured,
            (false, _) => &self.distance,
        }
    }
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
    /// Seeds the subnet hash that decides which of its clients it keeps under load: from its
    /// name, so that the same subnets move whatever the list's order.
    pub load_seed: u64,
    a: RRset,
    aaaa: RRset,
    /// Answers given with this region.
    pub answered: QueryCounter,
    /// Answers to clients weighed for this region's load that moved, and that had to stay;
    /// only for a service with a load target.
    pub weighed: Option<WeighedCounters>,
    /// Answers with this region first that latency moved here from the region nearest on the
    /// map; only for a `policy: latency` service.
    pub moved_by_latency: Option<QueryCounter>,
}

/// Answers to the clients a region moves for load: moved, or stuck (no region they may go to
/// admitted them); and answers to clients other regions moved to it.
#[derive(Debug)]
pub struct WeighedCounters {
    pub moved: QueryCounter,
    pub stuck: QueryCounter,
    pub moved_in: QueryCounter,
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
    /// zone's addresses are signed afresh at every reload. The places of every geography this
    /// plan has are kept; new ones are compiled from `geo` in one walk.
    pub fn rebuilt(
        &self,
        zones: &[ZoneConfig],
        metrics: &Metrics,
        geo: GeoSource<'_>,
    ) -> Result<Plan, GeoError> {
        let zones: Vec<ZonePlan> = zones
            .iter()
            .map(|zone| match self.zone_with(&zone.data) {
                Some(compiled) if zone.dnssec.is_none() => compiled.clone(),
                _ => ZonePlan::new(zone, metrics),
            })
            .collect();
        let (atlas, compiled) = self.atlas.for_zones(&zones, geo, self.latency.as_ref())?;
        Ok(Plan {
            zones,
            atlas,
            compiled,
            explain_geo: None,
            latency: self.latency.clone(),
        })
    }

    /// This plan with latency services' places compiled with `table` (from `geo`, the
    /// databases in force); the other places are kept.
    pub fn with_latency(
        &self,
        table: Option<Arc<LatencyTable>>,
        geo: GeoSource<'_>,
    ) -> Result<Plan, GeoError> {
        let (atlas, compiled) = self.atlas.for_zones(&self.zones, geo, table.as_ref())?;
        Ok(Plan {
            zones: self.zones.clone(),
            atlas,
            compiled,
            explain_geo: self.explain_geo.clone(),
            latency: table,
        })
    }

    /// The latency table in force.
    pub fn latency(&self) -> Option<&Arc<LatencyTable>> {
        self.latency.as_ref()
    }

    /// Whether a zone of this plan answers `_explain`.
    pub fn explains(&self) -> bool {
        self.zones.iter().any(|zone| zone.explain)
    }

    /// This plan keeping `geo` for `_explain` when a zone answers it (letting it go else).
    pub fn keeping_geo(mut self, geo: Option<Arc<GeoIp>>) -> Plan {
        self.explain_geo = geo.filter(|_| self.explains());
        self
    }

    /// The databases `_explain` reads, when this plan keeps them.
    pub fn explain_geo(&self) -> Option<&Arc<GeoIp>> {
        self.explain_geo.as_ref()
    }

    /// This plan with its places compiled against `geo` (new GeoIP databases), unless too
    /// many of their records cannot be read.
    pub fn relocated(&self, geo: &GeoIp) -> Result<Plan, GeoError> {
        let geo = GeoSource::Opened(geo);
        let (atlas, compiled) =
            Atlas::default().for_zones(&self.zones, geo, self.latency.as_ref())?;
        if let Some(compiled) = &compiled {
            geo::check_undecodable(compiled.figures)?;
        }
        Ok(Plan {
            zones: self.zones.clone(),
            atlas,
            compiled,
            explain_geo: None,
            latency: self.latency.clone(),
        })
    }

    /// Every service of every zone.
    pub fn services(&self) -> impl Iterator<Item = &ServicePlan> {
        self.zones
            .iter()
            .flat_map(|z| z.services.iter().map(|s| &**s))
    }

    /// The plan of `zones`, its places compiled from `geo` (and `latency`, for latency
    /// services).
    pub fn new(
        zones: &[ZoneConfig],
        metrics: &Metrics,
        geo: &GeoIp,
        latency: Option<Arc<LatencyTable>>,
    ) -> Result<Plan, GeoError> {
        let empty = Plan {
            zones: Vec::new(),
            atlas: Atlas::default(),
            compiled: None,
            explain_geo: None,
            latency,
        };
        empty.rebuilt(zones, metrics, GeoSource::Opened(geo))
    }
}

impl Atlas {
    /// The places of every service of `zones`: those this atlas has, the others compiled now
    /// from `geo`.
    /// A latency geography's places are compiled again when `table` is another table.
    fn for_zones(
        &self,
        zones: &[ZonePlan],
        geo: GeoSource<'_>,
        table: Option<&Arc<LatencyTable>>,
    ) -> Result<(Atlas, Option<Compilation>), GeoError> {
        let same_table = match (&self.evidence, table) {
            (Some(evidence), Some(table)) => Arc::ptr_eq(&evidence.table, table),
            (None, None) => true,
            _ => false,
        };
        let mut places = HashMap::new();
        let mut missing: Vec<Arc<Geography>> = Vec::new();
        let services = zones.iter().flat_map(|z| &z.services);
        for geography in services.map(|s| &s.geography) {
            if places.contains_key(&**geography) || missing.contains(geography) {
                continue;
            }
            let kept = self.places.get(&**geography);
            match kept.filter(|_| same_table || !geography.follows_latency()) {
                Some(compiled) => {
                    places.insert(Arc::clone(geography), Arc::clone(compiled));
                }
                None => missing.push(Arc::clone(geography)),
            }
        }
        let mut compilation = None;
        let mut evidence = self.evidence.clone().filter(|_| same_table);
        if !missing.is_empty() {
            let started = Instant::now();
            let opened;
            let geo = match geo {
                GeoSource::Opened(geo) => geo,
                GeoSource::Accepted(files) => {
                    opened = GeoIp::reopen(files)?;
                    &opened
                }
            };
            let measured = table.filter(|_| missing.iter().any(|g| g.follows_latency()));
            if let (Some(table), None) = (measured, &evidence) {
                evidence = Some(Arc::new(Evidence::prepare(Arc::clone(table), geo)));
            }
            let (compiled, figures) = place::compile(geo, &missing, evidence.as_ref())
                .map_err(|error| GeoError::Walk { error })?;
            let sizes = compiled.iter().map(Places::size);
            let (count, bytes) = sizes.fold((0, 0), |(p, b), (pp, bb)| (p + pp, b + bb));
            compilation = Some(Compilation {
                geographies: missing.len(),
                figures,
                places: count,
                bytes,
                took: started.elapsed(),
            });
            for (geography, compiled) in missing.into_iter().zip(compiled) {
                places.insert(geography, Arc::new(compiled));
            }
        }
        Ok((Atlas { places, evidence }, compilation))
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
            transfer: config.transfer.clone().map(Arc::new),
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
        let rules: Vec<RulePlan> = service
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
        let allowed = |rule: &RulePlan| {
            let allow = rule.allow.as_ref()?;
            Some(allow.regions.iter().map(|r| r as u16).collect())
        };
        let by_distance = matches!(service.policy, Policy::Nearest | Policy::Latency);
        let latency = service.latency.map(|settings| {
            let names = regions.iter().map(|r| r.name.clone()).collect();
            (settings, names)
        });
        let geography = Geography::new(
            regions.iter().map(|r| r.location.unit_vector()),
            by_distance && regions.len() > 1,
            rules.iter().map(|rule| (&rule.matcher, allowed(rule))),
            latency,
        );
        static PLANNED: AtomicU64 = AtomicU64::new(0);
        ServicePlan {
            id: PLANNED.fetch_add(1, Ordering::Relaxed),
            when_all_down: service.when_all_down,
            policy: service.policy,
            latency: service.latency,
            latency_answers: service.latency.map(|_| LatencyAnswers {
                measured: metrics.latency_answers_counter(zone, &name, "measured"),
                distance: metrics.latency_answers_counter(zone, &name, "distance"),
                explore: metrics.latency_answers_counter(zone, &name, "explore"),
            }),
            secondary: match service.secondary {
                // The plan's regions are the service's, in its order.
                Secondary::Region(r) => match service.regions.iter().position(|&x| x == r) {
                    Some(at) => Secondary::Region(at),
                    None => Secondary::Omit,
                },
                other => other,
            },
            answers: service.answers,
            shed: service.shed,
            load: service.load,
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
            geography: Arc::new(geography),
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
            load_seed: xxhash_rust::xxh3::xxh3_64(region.name.as_bytes()),
            a: RRset::signed(a, signer),
            aaaa: RRset::signed(aaaa, signer),
            answered: metrics.query_counter(zone, &service_name, &region.name, "NOERROR"),
            weighed: service.load.map(|_| WeighedCounters {
                moved: metrics.load_weighed_counter(zone, &service_name, &region.name, "moved"),
                stuck: metrics.load_weighed_counter(zone, &service_name, &region.name, "stuck"),
                moved_in: metrics.load_weighed_counter(
                    zone,
                    &service_name,
                    &region.name,
                    "moved_in",
                ),
            }),
            moved_by_latency: service
                .latency
                .map(|_| metrics.latency_moved_counter(zone, &service_name, &region.name)),
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
