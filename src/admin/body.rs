//! The admin API's JSON bodies as types, shared by the server that writes them and the clients
//! that read them (`explain --admin`, `drill`): a field renamed on one side is a compile error,
//! and a state the client does not know is an error, never read as "up".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{health::Health, region::State};

/// `GET /regions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regions {
    pub regions: Vec<RegionBody>,
}

/// One region of `GET /regions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionBody {
    pub zone: String,
    pub region: String,
    /// What routing acts on: the health, unless drained.
    pub state: State,
    pub health: Health,
    pub drained: bool,
    pub checked: bool,
    pub reason: String,
    /// RFC 3339, and as seconds since the epoch.
    pub since: String,
    pub since_unix: u64,
    pub probes: u64,
    pub last_probe: Option<String>,
    pub last_probe_ms: Option<f64>,
    pub error_rate: f64,
    pub slow_rate: f64,
    pub location: Option<LatLon>,
    /// The load its probes report, smoothed (1 is its capacity); absent while unknown.
    #[serde(default)]
    pub load: Option<f64>,
    /// Why the last probe gave no load figure, when the check reads one.
    #[serde(default)]
    pub load_note: Option<String>,
    /// Per service with a load target (its name): the share of the region's clients it keeps.
    #[serde(default)]
    pub kept: BTreeMap<String, f64>,
    /// And the share of the clients other regions move to it that it takes.
    #[serde(default)]
    pub admits: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// The reply to a drain or an undrain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drained {
    pub zone: String,
    pub region: String,
    pub state: State,
    /// On how many instances of the fleet it applied, this one included, of how many.
    pub applied_on: usize,
    pub instances: usize,
    /// The same, for people: "applied on 3 of 3".
    pub applied: String,
    /// What each peer answered: "merged", "known", "older: drained at ns2, ...", "refused:
    /// ...", or why it could not be asked.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// The record taken, as peers received it.
    #[serde(default)]
    pub record: Option<crate::fleet::DrainRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_state_is_an_error_not_up() {
        let body = r#"{"zone":"z.","region":"r","state":"melting","health":"up","drained":false,
            "checked":true,"reason":"","since":"","since_unix":0,"probes":0,"last_probe":null,
            "last_probe_ms":null,"error_rate":0,"slow_rate":0,"location":null}"#;
        assert!(serde_json::from_str::<RegionBody>(body).is_err());
        let known = body.replace("melting", "drained");
        let region: RegionBody = serde_json::from_str(&known).expect("a known state");
        assert_eq!(region.state, State::Drained);
    }
}
