//! The routing plan as the publisher replaces it: zone reloads (keeping each region's health when
//! its check is unchanged) and GeoIP databases compiled into the plan's places. Both compile on
//! a blocking thread, so probes, peers' views and drains keep flowing meanwhile; a compilation
//! whose plan was replaced before it ended is made again from the new one. New geographies are
//! compiled only from the databases the GeoIP reloader accepted ([`crate::geo::Accepted`]), never from
//! whatever the files on disk hold now.

use super::fleet::config_hash;
use super::{HealthMap, Publisher, describe_drain, initial_health, states};
use crate::memory::release_freed_memory;
use crate::{
    config::{Check, ZoneConfig},
    events::Notice,
    geo::{GeoError, GeoIp},
    latency::LatencyTable,
    region::{RegionKey, State},
    routing::{Compilation, GeoSource, Plan},
};
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::oneshot;
use tracing::info;

/// A plan compiled off the publisher's loop.
pub(super) struct Compiled {
    /// The plan it was compiled from: if another has been published since, it is compiled
    /// again from that one.
    from: Arc<Plan>,
    plan: Result<Plan, GeoError>,
    change: Change,
    done: Reply,
}

/// Who waits for a compilation's outcome.
pub(super) enum Reply {
    /// The zone or GeoIP reloader.
    Geo(oneshot::Sender<Result<(), GeoError>>),
    /// The latency reloader, told why in words.
    Said(oneshot::Sender<Result<(), String>>),
}

impl Reply {
    fn send(self, result: Result<(), GeoError>) {
        match self {
            Reply::Geo(done) => drop(done.send(result)),
            Reply::Said(done) => drop(done.send(result.map_err(|e| e.to_string()))),
        }
    }
}

/// What a compilation applies.
enum Change {
    /// A zone reload: every zone, validated.
    Zones(Vec<ZoneConfig>),
    /// New GeoIP databases, accepted by the GeoIP reloader.
    Geo(GeoIp),
    /// A new latency table, read and checked by the latency reloader.
    Latency(Arc<LatencyTable>),
}

/// A region's health-related configuration.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RegionSettings {
    pub(super) check: Option<Check>,
    pub(super) drained: bool,
}

pub(super) fn region_settings(zones: &[ZoneConfig]) -> BTreeMap<RegionKey, RegionSettings> {
    let regions = zones.iter().flat_map(ZoneConfig::keyed_regions);
    regions
        .map(|(key, region)| {
            let settings = RegionSettings {
                check: region.check.clone(),
                drained: region.drained,
            };
            (key, settings)
        })
        .collect()
}

/// Logs what a compilation of places took, when the plan made one.
pub(super) fn log_compilation(compiled: Option<Compilation>, when: &str) {
    let Some(c) = compiled else { return };
    info!(
        "GeoIP networks compiled ({when}): {} networks into {} places for {} geographies, {} KB, in {} ms{}",
        c.figures.networks,
        c.places,
        c.geographies,
        c.bytes / 1024,
        c.took.as_millis(),
        match c.figures.undecodable {
            0 => String::new(),
            n => format!("; {n} records undecodable (their networks are unknown)"),
        }
    );
}

impl Publisher {
    /// Compiles the plan of a new configuration on a blocking thread (new geographies from the
    /// accepted databases); it applies when done ([`Publisher::compiled`]). The reloader sends
    /// one configuration at a time: it waits for `done`.
    pub(super) fn reload(&mut self, zones: Vec<ZoneConfig>, done: Reply) {
        self.waiting = None;
        let (from, geo, metrics) = (
            Arc::clone(&self.plan),
            self.geo.clone(),
            Arc::clone(&self.metrics),
        );
        self.compiling.spawn_blocking(move || {
            // `_explain` reads the databases this plan keeps, or the accepted files again.
            let plan = from
                .rebuilt(&zones, &metrics, GeoSource::Accepted(&geo))
                .and_then(|plan| {
                    let open = match (plan.explains(), from.explain_geo()) {
                        (false, _) => None,
                        (true, Some(open)) => Some(Arc::clone(open)),
                        (true, None) => Some(Arc::new(GeoIp::reopen(&geo)?)),
                    };
                    Ok(plan.keeping_geo(open))
                });
            Compiled {
                plan,
                from,
                change: Change::Zones(zones),
                done,
            }
        });
    }

    /// Compiles the places of the current plan against `geo` on a blocking thread.
    pub(super) fn relocate(&mut self, geo: GeoIp, done: Reply) {
        let from = Arc::clone(&self.plan);
        self.compiling.spawn_blocking(move || Compiled {
            plan: from.relocated(&geo),
            from,
            change: Change::Geo(geo),
            done,
        });
    }

    /// Compiles the latency services' places of the current plan with `table`, unless it names
    /// a region no zone serves.
    pub(super) fn take_latency(
        &mut self,
        table: Arc<LatencyTable>,
        done: oneshot::Sender<Result<(), String>>,
    ) {
        let served: Vec<&str> = self.settings.keys().map(|k| k.region.as_str()).collect();
        let unknown = table.unknown_regions(&served);
        if !unknown.is_empty() {
            let file = table.summary.file.display();
            let _ = done.send(Err(format!(
                "{file}: regions no zone serves: {} (served: {})",
                unknown.join(", "),
                served.join(", ")
            )));
            return;
        }
        self.compile_latency(table, Reply::Said(done));
    }

    fn compile_latency(&mut self, table: Arc<LatencyTable>, done: Reply) {
        let (from, geo) = (Arc::clone(&self.plan), self.geo.clone());
        self.compiling.spawn_blocking(move || Compiled {
            plan: from.with_latency(Some(Arc::clone(&table)), GeoSource::Accepted(&geo)),
            from,
            change: Change::Latency(table),
            done,
        });
    }

    /// Applies a compiled plan, if it is still the current plan's; else compiles it again.
    pub(super) fn compiled(&mut self, compiled: Compiled) {
        let Compiled {
            from,
            plan,
            change,
            done,
        } = compiled;
        if !Arc::ptr_eq(&from, &self.plan) {
            return match change {
                Change::Zones(zones) => self.reload(zones, done),
                Change::Geo(geo) => self.relocate(geo, done),
                Change::Latency(table) => self.compile_latency(table, done),
            };
        }
        drop(from);
        let plan = match (plan, change) {
            (Ok(plan), change) => (plan, change),
            (Err(error), change) => {
                // The databases compiled before, so this is not the configuration's fault.
                let what = match change {
                    Change::Zones(zones) => {
                        if matches!(error, GeoError::Changed { .. }) {
                            // Applied once the GeoIP reloader accepts what is on disk now.
                            self.waiting = Some(zones);
                        }
                        "zone reload"
                    }
                    Change::Geo(_) => "GeoIP reload",
                    Change::Latency(_) => "latency table reload",
                };
                tracing::error!("{what} not applied: {error}");
                done.send(Err(error));
                return;
            }
        };
        match plan {
            (plan, Change::Zones(zones)) => {
                log_compilation(plan.compiled, "reload");
                self.apply_reload(&zones, plan);
            }
            (plan, Change::Geo(geo)) => {
                self.fleet.geoip_build = geo.builds();
                self.geo = geo.accepted();
                log_compilation(plan.compiled, "GeoIP reload");
                self.plan = Arc::new(plan.keeping_geo(Some(Arc::new(geo))));
                self.publish();
                if let Some(zones) = self.waiting.take() {
                    info!("applying the zone reload that waited for a GeoIP database");
                    self.reload(zones, Reply::Geo(oneshot::channel().0));
                }
            }
            (plan, Change::Latency(table)) => {
                self.fleet.latency_table = table.summary.sha256.clone();
                self.metrics
                    .set_latency_table_loaded(table.summary.loaded_at);
                log_compilation(plan.compiled, "latency table reload");
                self.plan = Arc::new(plan);
                self.publish();
            }
        }
        done.send(Ok(()));
        release_freed_memory();
    }

    /// Swaps in a new configuration and its plan. A region keeps its health when its check is
    /// unchanged; every drain record applies again.
    fn apply_reload(&mut self, zones: &[ZoneConfig], plan: Plan) {
        let reread: Vec<&ZoneConfig> = zones
            .iter()
            .filter(|zone| !self.plan.has_data(&zone.data))
            .collect();
        self.plan = Arc::new(plan);
        let settings = region_settings(zones);
        self.take_zone_file_drains(&settings);
        let health = carried_over(&self.health, &self.settings, &settings, zones);
        let before: BTreeMap<RegionKey, State> = states(&self.health).into_iter().collect();
        self.settings = settings;
        self.health = health;
        let keys: Vec<RegionKey> = self.health.keys().cloned().collect();
        for key in &keys {
            self.apply_drain(key);
        }
        for key in before.keys().filter(|key| !self.health.contains_key(key)) {
            self.metrics.forget_region(&key.zone, &key.region);
        }
        for (key, status) in &self.health {
            if before.get(key) != Some(&status.state()) {
                self.metrics
                    .set_region_state(&key.zone, &key.region, status.state());
            }
        }
        self.forget_shifts();
        self.fleet.config_hash = config_hash(zones);
        self.publish();
        if let Some(notices) = &self.notices {
            notices.receivers(zones);
            for zone in reread {
                notices.send(Notice::reload(&zone.origin.to_string(), self.generation));
            }
        }
    }

    /// A zone file that changed a region's `drained` says what the operator wants now: it is
    /// taken as a drain record of this instance's, so that it outranks older records and
    /// reaches the peers (which read the same file and agree).
    fn take_zone_file_drains(&mut self, settings: &BTreeMap<RegionKey, RegionSettings>) {
        let changed = settings.iter().filter(|(key, now)| {
            self.settings
                .get(*key)
                .is_some_and(|before| before.drained != now.drained)
        });
        let by = format!("{} (zone file)", self.fleet.instance);
        let mut taken = false;
        for (key, now) in changed {
            match self.fleet.ledger.stamp(key, now.drained, &by) {
                Ok(_) => taken = true,
                Err(winner) => tracing::warn!(
                    zone = %key.zone, region = %key.region,
                    "{}: the zone file's drained: {} is older than the record in force ({}): this \
                     instance's clock is behind the one that wrote it",
                    key.region, now.drained, describe_drain(&winner)
                ),
            }
        }
        if taken {
            self.save_drains();
        }
    }
}

/// The health of the regions of `zones`: a region keeps its health when its check is the same
/// in both configurations; the others start afresh. Drains are applied after, from the ledger.
fn carried_over(
    health: &HealthMap,
    before: &BTreeMap<RegionKey, RegionSettings>,
    now: &BTreeMap<RegionKey, RegionSettings>,
    zones: &[ZoneConfig],
) -> HealthMap {
    let mut fresh = initial_health(zones);
    for (key, status) in fresh.iter_mut() {
        if let (Some(old), Some(before), Some(now)) =
            (health.get(key), before.get(key), now.get(key))
            && before.check == now.check
        {
            status.clone_from(old);
        }
    }
    fresh
}
