//! Request bytes to response bytes, as the UDP and TCP paths call it, on the example zone and
//! the bundled GeoIP database: no input may panic, and every response is a response to it.

#![no_main]
// Each target uses its own part of the shared test helpers.
#![allow(dead_code)]

#[path = "../../tests/common/fuzz_checks.rs"]
mod fuzz_checks;
#[path = "../../tests/common/query_path.rs"]
mod query_path;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use regiondns::dns::Responder;

static RESPONDER: LazyLock<Responder> = LazyLock::new(query_path::responder);

fuzz_target!(|packet: &[u8]| {
    let mut out = Vec::with_capacity(4096);
    fuzz_checks::respond_checked(&RESPONDER, packet, &mut out);
});
