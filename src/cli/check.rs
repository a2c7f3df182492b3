//! `regiondns check` and `regiondns schema`: zone files and GeoIP files checked before they
//! are deployed, and the zone file's JSON Schema.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `regiondns schema`: the zone file's JSON Schema on stdout.
pub fn schema() -> Result<ExitCode> {
    let schema = serde_json::to_string_pretty(&config::schema()).context("encoding the schema")?;
    println!("{schema}");
    Ok(ExitCode::SUCCESS)
}

/// `regiondns check`: one summary line per zone on stdout, each error on stderr; with
/// `--geoip`, a report on each GeoIP file.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let mut ok = true;
    if !args.geoip.is_empty() {
        ok &= check_geoip(&args.geoip);
    }
    if args.zones.is_some() || args.geoip.is_empty() {
        let dir = args.zones.unwrap_or_else(|| PathBuf::from("zones"));
        ok &= check_zones(&dir, args.max_zone_file_mib << 20);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_zones(dir: &Path, max_file_size: u64) -> bool {
    match config::load_dir(dir, max_file_size) {
        (zones, errors) if errors.is_empty() => {
            for zone in &zones {
                println!("{}: {}", zone.source.display(), zone.summary());
            }
            true
        }
        (_, errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            false
        }
    }
}

/// Opens the GeoIP files as the server would and prints what they say of the sample; fails
/// when they cannot be opened or locate none of it.
fn check_geoip(paths: &[PathBuf]) -> bool {
    let geo = match GeoIp::open(paths) {
        Ok(geo) => geo,
        Err(error) => {
            eprintln!("{error}");
            return false;
        }
    };
    for line in geo.details() {
        println!("{line}");
    }
    let sample = geo.sample();
    for result in &sample {
        println!(
            "  {} ({}): {}",
            result.ip,
            result.operator,
            describe_located(result)
        );
    }
    let located = geo.sample_located();
    println!("located {located} of {} well-known addresses", sample.len());
    if located == 0 {
        eprintln!("{}", geo::sample_warning(&geo));
    }
    located > 0
}

fn describe_located(result: &geo::SampleResult) -> String {
    match result.located {
        Located::Known(location) => {
            let country = location.country.map_or("-".into(), |c| c.to_string());
            let continent = location.continent.map_or("-", |c| c.code());
            let coordinates = location
                .coordinates
                .map_or("-".into(), |c| format!("{:.2},{:.2}", c.lat, c.lon));
            format!(
                "{country} {continent} {coordinates} (network /{})",
                location.prefix_len
            )
        }
        Located::Unknown { prefix_len } if result.undecodable => {
            format!("record cannot be decoded (network /{prefix_len})")
        }
        Located::Unknown { prefix_len } => format!("not in the database (network /{prefix_len})"),
    }
}
