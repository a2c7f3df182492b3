//! `regiondns explain`: one client's decision from the server's own code, with health taken
//! from a running server's admin API when asked (its typed `/regions` body).

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::routing::{
    Loads,
    load_control::{Controller, ShiftKey},
};

/// `regiondns explain`: the decision for one client, from the same code the server runs.
pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let (zones, _) = load_zones(&args.zones, config::DEFAULT_MAX_ZONE_FILE, true)?;
    let geo = GeoIp::open(&args.geoip)?;
    let qtype: RecordType = args
        .qtype
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("unknown query type '{}'", args.qtype))?;
    let name = Name::from_ascii(&args.name)
        .map(|n| n.to_lowercase())
        .with_context(|| format!("invalid name '{}'", args.name))?;
    let name = if name.is_fqdn() {
        name
    } else {
        name.append_domain(&Name::root())?
    };
    let key = NameKey::new(&name);

    let mut health = initial_health(&zones);
    let mut loads = Loads::default();
    if let Some(url) = &args.admin {
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(health_from_admin(url, &mut health, &mut loads))?;
    }
    let latency = args
        .latency
        .as_deref()
        .map(|path| load_latency(path, &zones).map(Arc::new))
        .transpose()?;
    let plan = Plan::new(&zones, &Metrics::new(), &geo, latency)?;
    let table = RoutingTable::build(&plan, &publish::states(&health), &loads);

    let Some(zone) = table.zone_for(key.wire()) else {
        println!("{name} is in no zone served here: REFUSED");
        return Ok(ExitCode::SUCCESS);
    };
    let client = ClientAddress {
        ip: args.client,
        source: AddressSource::Given,
    };
    match zone.service_named(key.wire()) {
        Some(service) => {
            for line in explain::service_lines(zone, service, &geo, client, qtype) {
                println!("{line}");
            }
        }
        None => {
            let answer = resolve(&table, key.wire(), qtype, client);
            println!("{name} is not a service: its answer does not depend on the client");
            let records: Vec<String> = answer
                .answer_records()
                .iter()
                .map(ToString::to_string)
                .collect();
            let rcode = answer.rcode.name();
            println!("answer: {rcode} {}", records.join("; "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Overwrites `health` and `loads` with the states, loads and kept shares reported by a running
/// server's `GET /regions`.
async fn health_from_admin(
    url: &str,
    health: &mut publish::HealthMap,
    loads: &mut Loads,
) -> Result<()> {
    let url = format!("{}/regions", url.trim_end_matches('/'));
    crate::health::install_crypto_provider();
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .error_for_status()?
        .text()
        .await
        .with_context(|| format!("cannot read the answer of {url}"))?;
    let body: crate::admin::body::Regions = serde_json::from_str(&text)
        .with_context(|| format!("{url} did not answer the regions as this version reads them"))?;
    for region in body.regions {
        let key = crate::region::RegionKey {
            zone: region.zone,
            region: region.region,
        };
        let Some(status) = health.get_mut(&key) else {
            continue;
        };
        status.drained = region.drained;
        status.health = region.health;
        for (service, kept) in region.kept {
            let admits = region.admits.get(&service).copied().unwrap_or(1.0);
            let shift = ShiftKey {
                region: key.clone(),
                service,
            };
            loads
                .shares
                .insert(shift, Controller::with_shares(kept, admits));
        }
        if let Some(load) = region.load {
            loads.load.insert(key, load);
        }
    }
    Ok(())
}
