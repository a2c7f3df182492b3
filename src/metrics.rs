//! Prometheus metrics: one registry, every series regiondns exports, rendered as text for the
//! admin `/metrics` endpoint.
//!
//! Counters for the query path are created ahead of time and handed out as shared handles
//! ([`QueryCounter`]: an atomic per thread's shard), so counting a query is one atomic add to
//! a cache line no other worker writes: no label lookup, no lock.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{counter::QueryCounter, geo::LookupCounters, region::State};

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
struct ServiceLabels {
    zone: String,
    service: String,
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
    tcp_refused: Family<LimitLabels, Counter>,
    probes_not_made: Family<RegionLabels, Counter>,
    dropped: QueryCounter,
    rate_limited: Family<ActionLabels, QueryCounter>,
    generation: Gauge,
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
        let rate_limited = Family::<ActionLabels, QueryCounter>::default();
        registry.register(
            "rate_limited_responses",
            "UDP responses over the response rate limit: dropped, or slipped (sent truncated so that a real client retries over TCP)",
            rate_limited.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "routing_generation",
            "Number of routing snapshots published since start",
            generation.clone(),
        );
        Metrics {
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
            tcp_refused,
            probes_not_made,
            dropped,
            rate_limited,
            generation,
        }
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

    /// Drops the state series of a region that is no longer configured.
    pub fn forget_region(&self, zone: &str, region: &str) {
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

    /// The counter of packets given no answer.
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
