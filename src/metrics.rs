//! Prometheus metrics: one registry, every series regiondns exports, rendered as text for the
//! admin `/metrics` endpoint.
//!
//! Counters for the query path are created ahead of time and handed out as shared handles
//! ([`QueryCounter`]: an atomic per thread's shard), so counting a query is one atomic add to
//! a cache line no other worker writes: no label lookup, no lock.

use std::{
    sync::{Arc, Mutex, Weak, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    counter::{CounterTable, QueryCounter},
    geo::{Continent, LookupCounters},
    region::State,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    zone: String,
    service: String,
    region: String,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    zone: String,
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    zone: String,
    region: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContinentLabels {
    zone: String,
    service: String,
    region: String,
    continent: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    receiver: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    zone: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BasisLabels {
    zone: String,
    service: String,
    basis: String,
}

pub struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, QueryCounter>,
    region_state: Family<StateLabels, Gauge>,
    probe_duration: Family<RegionLabels, Histogram, fn() -> Histogram>,
    transitions: Family<StateLabels, Counter>,
    fail_open: Family<ServiceLabels, QueryCounter>,
    fail_closed: Family<ServiceLabels, QueryCounter>,
    reloads: Family<ResultLabels, Counter>,
    geoip_lookups: Family<ResultLabels, QueryCounter>,
    geoip_reloads: Family<ResultLabels, Counter>,
    latency_reloads: Family<ResultLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    notifies: Family<NotifyLabels, Counter>,
    zone_serial: Family<ZoneLabels, Gauge>,
    latency_answers: Family<BasisLabels, QueryCounter>,
    latency_moved: Family<ServiceRegionLabels, QueryCounter>,
    latency_table_loaded: Gauge,
    tcp_refused: Family<LimitLabels, Counter>,
    probes_not_made: Family<RegionLabels, Counter>,
    dropped: QueryCounter,
    rate_limited: Family<ActionLabels, QueryCounter>,
    remembered: QueryCounter,
    cookies: Family<ReasonLabels, QueryCounter>,
    events: Family<EventLabels, Counter>,
    shares: Arc<SharesCollector>,
    generation: Gauge,
    vantage_impaired: Gauge,
    fleet_peers: Family<PeerStateLabels, Gauge>,
    fleet_disagreements: Family<RegionLabels, Gauge>,
    fleet_mismatches: Family<MismatchLabels, Gauge>,
    fleet_refused_records: Family<ReasonLabels, Counter>,
    fleet_refused_views: Family<ReasonLabels, Counter>,
    fleet_clock_offset: Gauge<f64, AtomicU64>,
    region_load: Family<RegionLabels, Gauge<f64, AtomicU64>>,
    load_moved: Family<ServiceRegionLabels, Gauge<f64, AtomicU64>>,
    load_weighed: Family<WeighedLabels, QueryCounter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    zone: String,
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    zone: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeighedLabels {
    zone: String,
    service: String,
    region: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceRegionLabels {
    zone: String,
    service: String,
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MismatchLabels {
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerStateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Sets the gauge of `labels` to `value`, or removes its series when there is none.
fn set_or_forget<L>(family: &Family<L, Gauge<f64, AtomicU64>>, labels: &L, value: Option<f64>)
where
    L: Clone + std::hash::Hash + Eq,
{
    match value {
        Some(value) => {
            family.get_or_create(labels).set(value);
        }
        None => {
            family.remove(labels);
        }
    }
}

fn count_result(family: &Family<ResultLabels, Counter>, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    family
        .get_or_create(&ResultLabels {
            result: result.into(),
        })
        .inc();
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("regiondns");
        let queries = Family::<QueryLabels, QueryCounter>::default();
        registry.register(
            "queries",
            "DNS responses by zone, service, region and rcode (service and region empty for other names)",
            queries.clone(),
        );
        let region_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "region_state",
            "1 for the region's current state (up, degraded, down, drained), 0 for the others",
            region_state.clone(),
        );
        let probe_duration: Family<RegionLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.5, 12)));
        registry.register(
            "probe_duration_seconds",
            "Health probe latency, failures included",
            probe_duration.clone(),
        );
        let transitions = Family::<StateLabels, Counter>::default();
        registry.register(
            "region_transitions",
            "Region state changes, by the state entered",
            transitions.clone(),
        );
        let fail_open = Family::<ServiceLabels, QueryCounter>::default();
        registry.register(
            "fail_open_answers",
            "Answers given while every region of the service was down (fail open)",
            fail_open.clone(),
        );
        let fail_closed = Family::<ServiceLabels, QueryCounter>::default();
        registry.register(
            "fail_closed_answers",
            "Answers refused (or SERVFAIL/NODATA) because a rule allowed no region that could serve",
            fail_closed.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads: result ok, or error when a zone file did not validate (its last good version kept serving)",
            reloads.clone(),
        );
        let geoip_lookups = Family::<ResultLabels, QueryCounter>::default();
        registry.register(
            "geoip_lookups",
            "GeoIP lookups: located, unknown (no database has the address) or undecodable (a record regiondns cannot read)",
            geoip_lookups.clone(),
        );
        let geoip_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "geoip_reloads",
            "GeoIP file reloads: ok, or error when a new file was refused (the old one kept serving)",
            geoip_reloads.clone(),
        );
        let latency_answers = Family::<BasisLabels, QueryCounter>::default();
        registry.register(
            "latency_answers",
            "Answers of policy: latency services by what they rest on: measured round trips, distance (too little measured), or explore (a subnet sent to measure another region)",
            latency_answers.clone(),
        );
        let latency_moved = Family::<ServiceRegionLabels, QueryCounter>::default();
        registry.register(
            "latency_moved_answers",
            "Answers of policy: latency services with this region first where measured round trips put it before the region nearest on the map",
            latency_moved.clone(),
        );
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "Zone transfers asked of this server, by zone, kind (AXFR, IXFR, or SOA for a signed SOA query) and result (ok, refused)",
            transfers.clone(),
        );
        let notifies = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifies",
            "NOTIFY messages sent to secondaries, by zone and result: sent (each try), acknowledged, failed (no answer after every try)",
            notifies.clone(),
        );
        let zone_serial = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "zone_serial",
            "The SOA serial a transferred zone's secondaries are given",
            zone_serial.clone(),
        );
        let latency_table_loaded = Gauge::default();
        registry.register(
            "latency_table_loaded_seconds",
            "When the latency table in force was read, in seconds since the epoch (0: none); its age is time() minus this",
            latency_table_loaded.clone(),
        );
        let latency_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "latency_reloads",
            "Latency table reloads: ok, or error when a new table was refused (the old one kept serving)",
            latency_reloads.clone(),
        );
        let tcp_refused = Family::<LimitLabels, Counter>::default();
        registry.register(
            "tcp_refused",
            "TCP connections closed on arrival: limit connections (all at once) or per_network (one client network's share)",
            tcp_refused.clone(),
        );
        let probes_not_made = Family::<RegionLabels, Counter>::default();
        registry.register(
            "probes_not_made",
            "Health probes regiondns could not make (out of file descriptors, socket buffers or memory); they count neither for nor against the region",
            probes_not_made.clone(),
        );
        let dropped = QueryCounter::default();
        registry.register(
            "dropped_requests",
            "Packets given no answer: shorter than a DNS header, or responses (QR set), which must never be answered",
            dropped.clone(),
        );
        let remembered = QueryCounter::default();
        registry.register(
            "remembered_responses",
            "UDP responses copied from a worker's memory of responses to the same request under the same routing and GeoIP snapshots",
            remembered.clone(),
        );
        let cookies = Family::<ReasonLabels, QueryCounter>::default();
        registry.register(
            "cookies",
            "Queries with a DNS cookie: reason=\"valid\" (it returned a server cookie we made for its address within the hour: spared the rate limit), \"new\" (a client cookie alone) or \"invalid\" (a server cookie we did not make for it, or too old)",
            cookies.clone(),
        );
        let rate_limited = Family::<ActionLabels, QueryCounter>::default();
        registry.register(
            "rate_limited_responses",
            "UDP responses over the response rate limit: dropped, or slipped (sent truncated so that a real client retries over TCP)",
            rate_limited.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "failover_events",
            "Failover events per receiver: delivered, failed (given up after every attempt), or dropped (its queue was full; receiver \"notifier\": the notifier's own queue)",
            events.clone(),
        );
        let shares = Arc::new(SharesCollector::default());
        registry.register_collector(Box::new(Arc::clone(&shares)));
        let generation = Gauge::default();
        registry.register(
            "routing_generation",
            "Number of routing snapshots published since start",
            generation.clone(),
        );
        let vantage_impaired = Gauge::default();
        registry.register(
            "fleet_vantage_impaired",
            "1 when this instance's probes see several regions down that most of the fleet sees up",
            vantage_impaired.clone(),
        );
        let fleet_peers = Family::<PeerStateLabels, Gauge>::default();
        registry.register(
            "fleet_peers",
            "Peers by state: reachable (a view fetched in the last poll) or unreachable",
            fleet_peers.clone(),
        );
        let fleet_disagreements = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "fleet_disagreements",
            "Fresh views (this instance's included) whose probes disagree with the fleet's state of the region",
            fleet_disagreements.clone(),
        );
        let fleet_mismatches = Family::<MismatchLabels, Gauge>::default();
        registry.register(
            "fleet_mismatches",
            "Peers whose zone files (what=\"config\") or GeoIP build (what=\"geoip\") differ from this instance's",
            fleet_mismatches.clone(),
        );
        let fleet_refused_records = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "fleet_refused_records",
            "Drain records from peers refused, never merged: reason=\"clock_ahead\" (stamped beyond the allowed clock drift) or \"unknown_region\"",
            fleet_refused_records.clone(),
        );
        let fleet_refused_views = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "fleet_refused_views",
            "Peers' views refused: reason=\"own_instance\" (it names this instance), \"duplicate_instance\" (another peer's name) or \"load\" (a load figure out of range, ignored)",
            fleet_refused_views.clone(),
        );
        let fleet_clock_offset = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "fleet_clock_offset_seconds",
            "This instance's clock minus the median of its peers' (fresh views only; 0 alone)",
            fleet_clock_offset.clone(),
        );
        let region_load = Family::<RegionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "region_load",
            "The region's load as its probes report it, smoothed over the check's window (1 is its capacity); absent while unknown",
            region_load.clone(),
        );
        let load_moved = Family::<ServiceRegionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "load_moved_share",
            "The share of the region's clients the service moves to other regions because its load is above the service's load_target (0 to 1)",
            load_moved.clone(),
        );
        let load_weighed = Family::<WeighedLabels, QueryCounter>::default();
        registry.register(
            "load_weighed_answers",
            "Answers to clients of a region over its load target that are not in the share it keeps: moved to another region (outcome=\"moved\"), or stuck there because no region they may go to admitted them (outcome=\"stuck\"); and answers to clients another region moved to this one (outcome=\"moved_in\")",
            load_weighed.clone(),
        );
        // Both results from the start: an alert on `increase(...{result="error"})` then sees
        // the first error, and a dashboard shows a zero rather than no data.
        for result in ["ok", "error"] {
            let labels = ResultLabels {
                result: result.into(),
            };
            drop(reloads.get_or_create(&labels));
            drop(geoip_reloads.get_or_create(&labels));
            drop(latency_reloads.get_or_create(&labels));
        }
        Metrics {
            load_weighed,
            region_load,
            load_moved,
            fleet_mismatches,
            fleet_refused_records,
            fleet_refused_views,
            fleet_clock_offset,
            vantage_impaired,
            fleet_peers,
            fleet_disagreements,
            registry,
            queries,
            region_state,
            probe_duration,
            transitions,
            fail_open,
            fail_closed,
            reloads,
            geoip_lookups,
            geoip_reloads,
            latency_reloads,
            transfers,
            notifies,
            zone_serial,
            latency_answers,
            latency_moved,
            latency_table_loaded,
            tcp_refused,
            probes_not_made,
            dropped,
            rate_limited,
            remembered,
            cookies,
            events,
            shares,
            generation,
        }
    }

    /// The answers of `service` by region and client continent: the same table as before when
    /// the service's regions are unchanged (a reload keeps its counts), else a new one.
    pub fn answer_shares(
        &self,
        zone: &str,
        service: &str,
        regions: Vec<String>,
    ) -> Arc<AnswerShares> {
        let mut services = self.shares.lock();
        let same = |s: &AnswerShares| s.zone == zone && s.service == service;
        let slot = services
            .iter()
            .position(|w| w.upgrade().is_some_and(|s| same(&s)));
        if let Some(kept) = slot
            .and_then(|i| services[i].upgrade())
            .filter(|s| s.regions == regions)
        {
            return kept;
        }
        let shares = Arc::new(AnswerShares {
            zone: zone.to_owned(),
            service: service.to_owned(),
            table: CounterTable::new(regions.len() * CONTINENT_SLOTS),
            regions,
        });
        match slot {
            Some(i) => services[i] = Arc::downgrade(&shares),
            None => services.push(Arc::downgrade(&shares)),
        }
        shares
    }

    /// The counter of failover events with `result` for a receiver (a URL, or \"notifier\").
    pub fn event_counter(&self, receiver: &str, result: &str) -> Counter {
        self.events
            .get_or_create(&EventLabels {
                receiver: receiver.into(),
                result: result.into(),
            })
            .clone()
    }

    /// The counter of responses for these labels; keep it and `inc()` it per query.
    pub fn query_counter(
        &self,
        zone: &str,
        service: &str,
        region: &str,
        rcode: &str,
    ) -> QueryCounter {
        self.queries.get_or_create_owned(&QueryLabels {
            zone: zone.into(),
            service: service.into(),
            region: region.into(),
            rcode: rcode.into(),
        })
    }

    pub fn fail_open_counter(&self, zone: &str, service: &str) -> QueryCounter {
        self.fail_open.get_or_create_owned(&ServiceLabels {
            zone: zone.into(),
            service: service.into(),
        })
    }

    /// The counter of a latency service's answers resting on `basis`.
    pub fn latency_answers_counter(&self, zone: &str, service: &str, basis: &str) -> QueryCounter {
        self.latency_answers.get_or_create_owned(&BasisLabels {
            zone: zone.into(),
            service: service.into(),
            basis: basis.into(),
        })
    }

    pub fn latency_moved_counter(&self, zone: &str, service: &str, region: &str) -> QueryCounter {
        self.latency_moved
            .get_or_create_owned(&ServiceRegionLabels {
                zone: zone.into(),
                service: service.into(),
                region: region.into(),
            })
    }

    pub fn fail_closed_counter(&self, zone: &str, service: &str) -> QueryCounter {
        self.fail_closed.get_or_create_owned(&ServiceLabels {
            zone: zone.into(),
            service: service.into(),
        })
    }

    /// TCP connections refused by `limit`.
    pub fn tcp_refused_counter(&self, limit: &str) -> Counter {
        self.tcp_refused.get_or_create_owned(&LimitLabels {
            limit: limit.into(),
        })
    }

    /// The counters of GeoIP lookups by outcome.
    pub fn geoip_lookup_counters(&self) -> LookupCounters {
        let counter = |result: &str| {
            self.geoip_lookups.get_or_create_owned(&ResultLabels {
                result: result.into(),
            })
        };
        LookupCounters {
            located: counter("located"),
            unknown: counter("unknown"),
            undecodable: counter("undecodable"),
        }
    }

    pub fn count_geoip_reload(&self, ok: bool) {
        count_result(&self.geoip_reloads, ok);
    }

    /// When the latency table in force was read (seconds since the epoch; 0: none).
    pub fn set_latency_table_loaded(&self, at: u64) {
        self.latency_table_loaded
            .set(i64::try_from(at).unwrap_or(i64::MAX));
    }

    /// A transfer (or signed SOA query) of `zone`, of `kind`, answered or refused.
    pub fn count_transfer(&self, zone: &str, kind: &'static str, ok: bool) {
        let labels = TransferLabels {
            zone: zone.into(),
            kind,
            result: if ok { "ok" } else { "refused" },
        };
        self.transfers.get_or_create(&labels).inc();
    }

    /// A NOTIFY of `zone`: `sent`, `acknowledged` or `failed`.
    pub fn count_notify(&self, zone: &str, result: &'static str) {
        let labels = NotifyLabels {
            zone: zone.into(),
            result,
        };
        self.notifies.get_or_create(&labels).inc();
    }

    pub fn set_zone_serial(&self, zone: &str, serial: u32) {
        let labels = ZoneLabels { zone: zone.into() };
        self.zone_serial
            .get_or_create(&labels)
            .set(i64::from(serial));
    }

    pub fn count_latency_reload(&self, ok: bool) {
        count_result(&self.latency_reloads, ok);
    }

    pub fn count_reload(&self, ok: bool) {
        count_result(&self.reloads, ok);
    }

    pub fn set_region_state(&self, zone: &str, region: &str, current: State) {
        for state in State::ALL {
            let labels = StateLabels {
                zone: zone.into(),
                region: region.into(),
                state: state.as_str().into(),
            };
            self.region_state
                .get_or_create(&labels)
                .set(i64::from(state == current));
        }
    }

    /// The region's smoothed load; the series is removed while the load is unknown.
    pub fn set_region_load(&self, zone: &str, region: &str, load: Option<f64>) {
        let labels = RegionLabels {
            zone: zone.into(),
            region: region.into(),
        };
        set_or_forget(&self.region_load, &labels, load);
    }

    /// The counter of answers to a region's clients weighed for its load: `outcome` is moved or
    /// stuck.
    pub fn load_weighed_counter(
        &self,
        zone: &str,
        service: &str,
        region: &str,
        outcome: &str,
    ) -> QueryCounter {
        self.load_weighed.get_or_create_owned(&WeighedLabels {
            zone: zone.into(),
            service: service.into(),
            region: region.into(),
            outcome: outcome.into(),
        })
    }

    /// The share of a region's clients `service` moves for load; `None` forgets the series.
    pub fn set_load_moved(&self, zone: &str, service: &str, region: &str, moved: Option<f64>) {
        let labels = ServiceRegionLabels {
            zone: zone.into(),
            service: service.into(),
            region: region.into(),
        };
        set_or_forget(&self.load_moved, &labels, moved);
    }

    /// Drops the state series of a region that is no longer configured.
    pub fn forget_region(&self, zone: &str, region: &str) {
        self.set_region_load(zone, region, None);
        for state in State::ALL {
            self.region_state.remove(&StateLabels {
                zone: zone.into(),
                region: region.into(),
                state: state.as_str().into(),
            });
        }
    }

    pub fn count_transition(&self, zone: &str, region: &str, to: State) {
        let labels = StateLabels {
            zone: zone.into(),
            region: region.into(),
            state: to.as_str().into(),
        };
        self.transitions.get_or_create(&labels).inc();
    }

    pub fn observe_probe(&self, zone: &str, region: &str, latency: Duration) {
        let labels = RegionLabels {
            zone: zone.into(),
            region: region.into(),
        };
        self.probe_duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }

    /// The counter of responses the rate limit treated by `action` (dropped, slipped).
    pub fn rate_limited_counter(&self, action: &str) -> QueryCounter {
        self.rate_limited.get_or_create_owned(&ActionLabels {
            action: action.into(),
        })
    }

    /// The counter of queries whose cookie is `reason`: valid, new or invalid.
    pub fn cookie_counter(&self, reason: &'static str) -> QueryCounter {
        self.cookies.get_or_create_owned(&ReasonLabels { reason })
    }

    /// The counter of packets given no answer.
    pub fn remembered_responses_counter(&self) -> QueryCounter {
        self.remembered.clone()
    }

    pub fn dropped_counter(&self) -> QueryCounter {
        self.dropped.clone()
    }

    pub fn count_probe_not_made(&self, zone: &str, region: &str) {
        let labels = RegionLabels {
            zone: zone.into(),
            region: region.into(),
        };
        self.probes_not_made.get_or_create(&labels).inc();
    }

    pub fn set_vantage_impaired(&self, impaired: bool) {
        self.vantage_impaired.set(i64::from(impaired));
    }

    pub fn set_fleet_peers(&self, reachable: usize, unreachable: usize) {
        for (state, count) in [("reachable", reachable), ("unreachable", unreachable)] {
            let labels = PeerStateLabels {
                state: state.into(),
            };
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.fleet_peers.get_or_create(&labels).set(count);
        }
    }

    pub fn count_refused_record(&self, reason: &'static str) {
        let labels = ReasonLabels { reason };
        self.fleet_refused_records.get_or_create(&labels).inc();
    }

    pub fn count_refused_view(&self, reason: &'static str) {
        let labels = ReasonLabels { reason };
        self.fleet_refused_views.get_or_create(&labels).inc();
    }

    pub fn set_fleet_clock_offset(&self, seconds: f64) {
        self.fleet_clock_offset.set(seconds);
    }

    pub fn set_fleet_mismatches(&self, config: usize, geoip: usize, latency: usize) {
        for (what, count) in [("config", config), ("geoip", geoip), ("latency", latency)] {
            let labels = MismatchLabels { what: what.into() };
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.fleet_mismatches.get_or_create(&labels).set(count);
        }
    }

    pub fn set_fleet_disagreements(&self, zone: &str, region: &str, views: usize) {
        let labels = RegionLabels {
            zone: zone.into(),
            region: region.into(),
        };
        let views = i64::try_from(views).unwrap_or(i64::MAX);
        self.fleet_disagreements.get_or_create(&labels).set(views);
    }

    pub fn set_generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Client continents as answer shares count them: the seven, then unknown.
pub const CONTINENT_SLOTS: usize = Continent::ALL.len() + 1;

/// The label of a continent slot: its code, or `unknown`.
pub fn continent_label(slot: usize) -> &'static str {
    Continent::ALL.get(slot).map_or("unknown", |c| c.code())
}

/// One service's answers by region (its first choice) and client continent: the status page's
/// shares and `regiondns_answers_by_continent_total`. Bounded: regions x 8 cells.
#[derive(Debug)]
pub struct AnswerShares {
    pub zone: String,
    pub service: String,
    pub regions: Vec<String>,
    table: CounterTable,
}

impl AnswerShares {
    /// The cell of answers with the region at `region` for clients of `continent`.
    pub fn cell(region: usize, continent: Option<Continent>) -> usize {
        // `Continent::ALL` lists the continents in declaration order.
        let slot = continent.map_or(CONTINENT_SLOTS - 1, |c| c as usize);
        region * CONTINENT_SLOTS + slot
    }

    pub fn inc(&self, cell: usize) {
        self.table.inc(cell);
    }

    /// Per region, in the service's order, its answers per continent slot.
    pub fn counts(&self) -> Vec<[u64; CONTINENT_SLOTS]> {
        let sums = self.table.sums();
        sums.chunks(CONTINENT_SLOTS)
            .map(|c| std::array::from_fn(|slot| c.get(slot).copied().unwrap_or(0)))
            .collect()
    }
}

/// Every service's answer shares, for /metrics: each current one once.
#[derive(Debug, Default)]
struct SharesCollector {
    services: Mutex<Vec<Weak<AnswerShares>>>,
}

impl SharesCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AnswerShares>>> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services.retain(|w| w.strong_count() > 0);
        services
    }
}

impl Collector for SharesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services: Vec<Arc<AnswerShares>> =
            self.lock().iter().filter_map(Weak::upgrade).collect();
        let mut metric = encoder.encode_descriptor(
            "answers_by_continent",
            "Answers by region (the first chosen) and the client's continent (unknown: not located)",
            None,
            MetricType::Counter,
        )?;
        for shares in &services {
            for (region, counts) in shares.regions.iter().zip(shares.counts()) {
                for (slot, &count) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                    let labels = ContinentLabels {
                        zone: shares.zone.clone(),
                        service: shares.service.clone(),
                        region: region.clone(),
                        continent: continent_label(slot),
                    };
                    ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
