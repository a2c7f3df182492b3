//! `regiondns latency build`: reads the logs and the previous table, writes the new table
//! ([`crate::latency::build`] makes it).

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::latency::{
    LatencyTable,
    build::{Samples, table_text},
};

pub fn latency(command: LatencyCommand) -> Result<ExitCode> {
    match command {
        LatencyCommand::Build(args) => build(args),
    }
}

fn build(args: LatencyBuildArgs) -> Result<ExitCode> {
    let previous = match &args.previous {
        Some(path) if path.exists() => Some(LatencyTable::read(path)?),
        Some(path) => {
            eprintln!("{}: no previous table yet; starting afresh", path.display());
            None
        }
        None => None,
    };
    let geo = match args.geoip.is_empty() {
        true => None,
        false => Some(GeoIp::open(&args.geoip).context("cannot open the GeoIP databases")?),
    };
    let mut samples = Samples::default();
    for (region, path) in &args.logs {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let tally = samples.add_log(region, text.lines());
        for (line, shown) in &tally.shown {
            eprintln!(
                "{}:{line}: not an address and a round trip in µs: {shown}",
                path.display()
            );
        }
        eprintln!(
            "{}: {region}: {} lines, {} unreadable and skipped",
            path.display(),
            tally.lines,
            tally.bad
        );
        if tally.mostly_bad() {
            bail!(
                "{}: {} of {} lines are unreadable: is it `$remote_addr $tcpinfo_rtt`?",
                path.display(),
                tally.bad,
                tally.lines
            );
        }
    }
    let mut rows = samples.rows(previous.as_ref());
    if let Some(geo) = &geo {
        let before = rows.len();
        rows.retain(|row| matches!(geo.locate(row.network.network()), Located::Known(_)));
        eprintln!(
            "{} rows of networks GeoIP does not locate left out",
            before - rows.len()
        );
    }
    let text = table_text(&rows);
    write_replacing(&args.out, text.as_bytes())?;
    let networks: std::collections::BTreeSet<_> = rows.iter().map(|r| r.network).collect();
    println!(
        "{}: {} rows, {} networks",
        args.out.display(),
        rows.len(),
        networks.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` beside `path` and renames it over: a reader sees the old table or the new.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().context("--out names no file")?;
    let temporary = dir.join(format!(".{}.new", name.to_string_lossy()));
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
