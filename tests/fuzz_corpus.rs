//! The fuzzers' kept corpus and past crashes (fuzz/corpus, fuzz/regressions), replayed through
//! the checks the fuzz targets make: on every test run, without a fuzzer.

use std::path::Path;

use crate::common::{
    fuzz_checks::{respond_checked, zone_checked},
    query_path::responder,
};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = format!("{dir}/{target}/{}", entry.file_name().to_string_lossy());
            inputs.push((name, std::fs::read(entry.path()).expect("read an input")));
        }
    }
    inputs
}

#[test]
fn every_kept_request_gets_a_response_to_it_or_none() {
    let responder = responder();
    let inputs = inputs("respond");
    assert!(inputs.len() >= 10, "the corpus is there: {}", inputs.len());
    let mut out = Vec::with_capacity(4096);
    let answered: usize = inputs
        .iter()
        .map(|(_, packet)| respond_checked(&responder, packet, &mut out))
        .sum();
    assert!(answered > 0);
}

#[test]
fn every_kept_zone_text_validates_or_says_why() {
    let inputs = inputs("zone");
    assert!(!inputs.is_empty(), "the corpus is there");
    for (_, bytes) in &inputs {
        if let Ok(text) = std::str::from_utf8(bytes) {
            zone_checked(text);
        }
    }
}
