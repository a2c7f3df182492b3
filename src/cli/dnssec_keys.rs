//! `regiondns dnssec keygen`: a zone's signing key and the DS record for its parent.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `regiondns dnssec keygen`: the key file, then the DNSKEY and DS records on stdout.
pub fn dnssec(command: DnssecCommand) -> Result<ExitCode> {
    let DnssecCommand::Keygen(args) = command;
    let mut zone = args.zone;
    zone.set_fqdn(true);
    let out = args.out.unwrap_or_else(|| {
        let name = zone.to_string();
        PathBuf::from(format!("{}.key.pem", name.trim_end_matches('.')))
    });
    let key = dnssec::generate(args.algorithm, &out)?;
    let ds = key.ds(&zone)?;
    eprintln!(
        "wrote {} (key tag {}); give the parent zone this DS record:",
        out.display(),
        key.key_tag()
    );
    println!("{zone} 3600 IN DS {ds}");
    println!("; the key, as regiondns will publish it at the apex:");
    println!("; {zone} 3600 IN DNSKEY {}", key.dnskey());
    Ok(ExitCode::SUCCESS)
}
