//! Zone file text to a validated configuration, then to the zone data and routing table the
//! server builds from it: no input may panic; invalid input is an error.

#![no_main]
// Each target uses its own part of the shared test helpers.
#![allow(dead_code)]

#[path = "../../tests/common/fuzz_checks.rs"]
mod fuzz_checks;
#[path = "../../tests/common/query_path.rs"]
mod query_path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| fuzz_checks::zone_checked(text));
