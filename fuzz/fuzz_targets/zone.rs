//! Zone file text to a validated configuration, then to the zone data and routing table the
//! server builds from it: no input may panic; invalid input is an error with a position.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use regiondns::{
    config,
    metrics::Metrics,
    publish,
    routing::{Plan, RoutingTable},
};

fuzz_target!(|text: &str| {
    match config::parse(Path::new("fuzz.yaml"), text, 1) {
        Ok(zone) => {
            let zones = [zone];
            let plan = Plan::new(&zones, &Metrics::new());
            let health = publish::initial_health(&zones);
            let _ = RoutingTable::build(&plan, &publish::states(&health));
        }
        Err(errors) => assert!(!errors.is_empty(), "an error says what is wrong"),
    }
});
