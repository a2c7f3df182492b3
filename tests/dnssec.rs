//! DNSSEC keys as an operator makes them: `regiondns dnssec keygen` writes a key file only its
//! owner can read and prints the DS for the parent. Knot's `keymgr`, which we did not write,
//! imports the same file and must compute the same key tag, DNSKEY and DS.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::run;

/// What `keymgr` (Knot DNS) says of a PEM key imported for `zone`: its DNSKEY and SHA-256 DS.
fn knot_records(kasp: &Path, zone: &str, pem: &Path, algorithm: u8) -> (String, String) {
    let keymgr = |args: &[&str]| {
        let out = Command::new("keymgr")
            .arg("-D")
            .arg(kasp)
            .arg(zone)
            .args(args)
            .output()
            .expect("keymgr (from the knot package) runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pem = pem.to_str().expect("utf-8 path");
    let imported = keymgr(&[
        "import-pem",
        pem,
        &format!("algorithm={algorithm}"),
        "ksk=true",
    ]);
    let id = imported
        .lines()
        .next()
        .expect("the key's id")
        .trim()
        .to_owned();
    let ds = keymgr(&["ds", &id]);
    let sha256 = ds.lines().find(|l| l.contains(&format!(" {algorithm} 2 ")));
    let dnskey = keymgr(&["dnskey", &id]);
    (
        dnskey.trim().to_owned(),
        sha256.expect("a SHA-256 DS").to_owned(),
    )
}

/// `name TTL IN TYPE rdata` -> (`TYPE`, rdata in lower case), for comparing presentations.
fn type_and_rdata(line: &str) -> (String, String) {
    let fields: Vec<&str> = line.trim_start_matches("; ").split_whitespace().collect();
    let at = fields
        .iter()
        .position(|f| *f == "DS" || *f == "DNSKEY")
        .expect("a DS or DNSKEY record");
    (
        fields[at].to_owned(),
        fields[at + 1..].join(" ").to_lowercase(),
    )
}

#[test]
fn keygen_writes_a_private_key_whose_ds_knot_agrees_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (algorithm, number) in [("ecdsa-p256", 13), ("ed25519", 15)] {
        let key = dir.path().join(format!("{algorithm}.pem"));
        let args = [
            "dnssec",
            "keygen",
            "--zone",
            "llm.example.com",
            "--algorithm",
            algorithm,
        ];
        let out = run(
            &[&args[..], &["--out", key.to_str().expect("path")]].concat(),
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(&key)
            .expect("the key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");

        let stdout = String::from_utf8_lossy(&out.stdout);
        let ds_line = stdout
            .lines()
            .find(|l| l.contains(" DS "))
            .expect("a DS line");
        assert!(
            ds_line.starts_with("llm.example.com. 3600 IN DS "),
            "{ds_line}"
        );
        let dnskey_line = stdout
            .lines()
            .find(|l| l.contains(" DNSKEY "))
            .expect("DNSKEY");

        let kasp = dir.path().join(format!("kasp-{algorithm}"));
        std::fs::create_dir(&kasp).expect("kasp dir");
        let (knot_dnskey, knot_ds) = knot_records(&kasp, "llm.example.com.", &key, number);
        assert_eq!(type_and_rdata(ds_line), type_and_rdata(&knot_ds));
        assert_eq!(type_and_rdata(dnskey_line), type_and_rdata(&knot_dnskey));

        // Run again, it refuses to overwrite the key.
        let again = run(
            &[&args[..], &["--out", key.to_str().expect("path")]].concat(),
            dir.path(),
        );
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("cannot write key file"));
    }
}
