//! Probe reports as the publisher takes them: a region's probed health, its error and slow rates,
//! its load figure, and the probes that could not be made.

use super::{NOT_PROBED_YET, Publisher, RegionStatus};
use crate::{
    health::{Outcome, ProbeReport},
    region::RegionKey,
};
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

/// Probes not made are logged at most this often (they come in crowds, under attack).
pub(super) const NOT_MADE_LOG_EVERY: Duration = Duration::from_secs(10);

impl Publisher {
    pub(super) fn probed(&mut self, report: ProbeReport) {
        let key = report.key;
        if let Outcome::Unknown(reason) = &report.result.outcome {
            self.metrics.count_probe_not_made(&key.zone, &key.region);
            self.log_not_made(&key, reason);
        } else {
            self.metrics
                .observe_probe(&key.zone, &key.region, report.result.latency);
        }
        let Some(status) = self.health.get_mut(&key) else {
            return;
        };
        let before = status.state();
        status.probed = report.health;
        status.probed_at = Some(Instant::now());
        status.last_probe = Some(report.result);
        status.probes += 1;
        status.error_rate = report.error_rate;
        status.slow_rate = report.slow_rate;
        status.probed_load = report.load;
        status.load_note = match &status.last_probe.as_ref().and_then(|p| p.load.as_ref()) {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        };
        let fresh = matches!(
            status.last_probe.as_ref().and_then(|p| p.load.as_ref()),
            Some(Ok(_))
        );
        if let Some(transition) = report.transition {
            status.probe_reason = transition.reason;
            if status.fleet.is_none() {
                status.reason.clone_from(&status.probe_reason);
                status.since = SystemTime::now();
            }
        } else if status.probe_reason == NOT_PROBED_YET
            && let Some(result) = &status.last_probe
            && !matches!(result.outcome, Outcome::Unknown(_))
        {
            // Still up, as every region starts, but no longer unknown.
            status.probe_reason = format!("up since the first probe ({result})");
            if status.reason == NOT_PROBED_YET {
                status.reason.clone_from(&status.probe_reason);
            }
        }
        self.reagree(&key);
        self.check_vantage();
        let load = self.fleet_load(&key);
        if let Some(status) = self.health.get_mut(&key) {
            status.load = load;
        }
        self.metrics.set_region_load(&key.zone, &key.region, load);
        let shifted = self.shift_load(&key, fresh);
        let state_changed = self.health.get(&key).map(RegionStatus::state) != Some(before);
        self.changed(&key, before);
        if shifted.republish && !state_changed {
            self.publish();
        }
        for (shift, reason) in shifted.started_or_stopped {
            self.record_load_shift(&key, shift, reason);
        }
    }

    pub(super) fn log_not_made(&mut self, key: &RegionKey, reason: &str) {
        match &mut self.not_made_logged {
            Some((at, since)) if at.elapsed() < NOT_MADE_LOG_EVERY => *since += 1,
            _ => {
                let since = self.not_made_logged.map_or(0, |(_, since)| since);
                warn!(
                    zone = %key.zone,
                    region = %key.region,
                    "{}: {reason}: counted as neither success nor failure ({since} more such \
                     probes since the last report)",
                    key.region
                );
                self.not_made_logged = Some((Instant::now(), 0));
            }
        }
    }
}
