//! The bootstrap of `serve`: zones and GeoIP loaded, tokens read, the fleet's settings and TLS,
//! the sockets bound: everything [`crate::server::run`] is given.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::transfer::TsigKeys;

/// The GeoIP databases, each logged, with a warning when they locate none of the sample.
pub fn open_geoip(paths: &[PathBuf]) -> Result<GeoIp> {
    let geo = GeoIp::open(paths)?;
    for line in geo.describe() {
        info!("GeoIP database {line}");
    }
    if geo.sample_located() == 0 {
        tracing::warn!("{}", geo::sample_warning(&geo));
    }
    Ok(geo)
}

/// The latency table at `path`, which must name only regions that `zones` serve.
pub fn load_latency(path: &Path, zones: &[ZoneConfig]) -> Result<LatencyTable> {
    let table = LatencyTable::read(path)?;
    let served: Vec<&str> = zones
        .iter()
        .flat_map(|z| z.regions.iter().map(|r| r.name.as_str()))
        .collect();
    let unknown = table.unknown_regions(&served);
    if !unknown.is_empty() {
        bail!(
            "{}: regions no zone serves: {}",
            path.display(),
            unknown.join(", ")
        );
    }
    info!(
        "latency table {}: {} rows, {} networks, {} regions, sha256 {}",
        path.display(),
        table.summary.rows,
        table.summary.networks,
        table.summary.regions,
        table.summary.sha256
    );
    Ok(table)
}

/// Everything `serve` needs, loaded and validated: zones, GeoIP, admin token, settings.
pub fn server_config(args: &ServeArgs) -> Result<server::Config> {
    let max_zone_file = args.max_zone_file_mib << 20;
    let metrics = Arc::new(Metrics::new());
    // The GeoIP files are read while the zone files are parsed: both take a while at start.
    let (zones, geo) = std::thread::scope(|scope| {
        let geo = scope.spawn(|| open_geoip(&args.geoip));
        let zones = load_zones(&args.zones, max_zone_file, args.strict);
        let geo = geo
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("opening the GeoIP files failed")));
        (zones, geo)
    });
    let (zones, unloaded) = zones?;
    let geo = geo?;
    let latency = args
        .latency
        .as_deref()
        .map(|path| load_latency(path, &zones))
        .transpose()?;
    let tsig_keys = match &args.tsig_keys {
        Some(path) => TsigKeys::read(path).map_err(anyhow::Error::msg)?,
        None => TsigKeys::default(),
    };
    missing_tsig_keys(&zones, &tsig_keys)?;
    crate::catalog::served(zones.clone(), args.catalog.as_ref()).map_err(anyhow::Error::msg)?;
    Ok(server::Config {
        zones_dir: args.zones.clone(),
        zones,
        geo,
        latency,
        tsig_keys,
        transfer_min_interval: args.transfer_min_interval.into(),
        catalog: args.catalog.clone(),
        metrics,
        admin_token: admin_token(args.admin_token_file.as_deref())?,
        max_udp_payload: args.edns_udp_size,
        nsid: nsid(args.nsid.as_deref()),
        drain_period: args.drain_period.into(),
        shutdown_timeout: args.shutdown_timeout.into(),
        tcp_connections: args
            .tcp_connections
            .map_or_else(super::limits::default_tcp_connections, |n| n as usize),
        tcp_connections_per_network: args.tcp_connections_per_network as usize,
        max_zone_file,
        unloaded,
        admin_header_timeout: args.admin_header_timeout.into(),
        rrl: RrlSettings {
            rate: args.rrl_rate,
            slip: args.rrl_slip,
            exempt: args.rrl_exempt.clone(),
        },
        fleet: fleet_config(args)?,
    })
}

/// The fleet's settings: a token is needed as soon as there are peers or a fleet listener.
fn fleet_config(args: &ServeArgs) -> Result<server::FleetConfig> {
    let token = secret(
        args.fleet_token_file.as_deref(),
        FLEET_TOKEN_VARIABLE,
        "fleet token",
    )?;
    let in_fleet = !args.peer.is_empty() || args.fleet_listen.is_some();
    if in_fleet && token.is_none() {
        bail!(
            "--peer and --fleet-listen need the fleet's token: --fleet-token-file FILE or \
             {FLEET_TOKEN_VARIABLE}"
        );
    }
    let peer_ca = match &args.peer_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the peer CA {}", path.display()))?;
            Some(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?,
            )
        }
        None => None,
    };
    Ok(server::FleetConfig {
        instance: crate::fleet::instance_name(nsid(args.nsid.as_deref()).as_deref()),
        peers: args.peer.iter().map(ToString::to_string).collect(),
        token,
        state_dir: args.state_dir.clone(),
        peer_ca,
        tls: fleet_tls(args)?,
    })
}

/// The fleet listener's TLS settings, from --fleet-tls-cert and --fleet-tls-key.
fn fleet_tls(args: &ServeArgs) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let (Some(cert), Some(key)) = (&args.fleet_tls_cert, &args.fleet_tls_key) else {
        return Ok(None);
    };
    crate::health::install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("{}: the key does not fit the certificate", cert.display()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Binds the DNS listen addresses (UDP and TCP) and the admin API.
pub async fn bind(args: &ServeArgs) -> Result<server::Listeners> {
    let workers = args.udp_workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    let dns = Listeners::bind(&args.listen, workers).await?;
    let admin = match args.admin {
        AdminListen::Off => None,
        AdminListen::At(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the admin API"))?,
        ),
    };
    let fleet = match args.fleet_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the fleet"))?,
        ),
        None => None,
    };
    Ok(server::Listeners { dns, admin, fleet })
}

/// The NSID text: as given, or the host's name for `hostname`.
pub fn nsid(arg: Option<&str>) -> Option<String> {
    match arg? {
        "hostname" => Some(gethostname::gethostname().to_string_lossy().into_owned()),
        text => Some(text.to_owned()),
    }
}

/// The admin token from the file, else the environment; `None` disables mutating endpoints.
pub fn admin_token(file: Option<&Path>) -> Result<Option<String>> {
    secret(file, TOKEN_VARIABLE, "admin token")
}

/// A secret from `file`, else from the environment variable `variable`.
fn secret(file: Option<&Path>, variable: &str, what: &str) -> Result<Option<String>> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?,
        None => std::env::var(variable).unwrap_or_default(),
    };
    let token = token.trim();
    if token.is_empty() && file.is_some() {
        bail!("the {what} file is empty");
    }
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// The zone files of `dir` that validate, and the errors of the others, each logged. With
/// `strict`, or when no file validates, any error stops the start. Logs what is served.
pub fn load_zones(
    dir: &Path,
    max_file_size: u64,
    strict: bool,
) -> Result<(Vec<ZoneConfig>, Vec<String>)> {
    let (zones, errors) = config::load_dir(dir, max_file_size);
    for error in &errors {
        let (line, column) = error.position.unwrap_or_default();
        tracing::error!(file = %error.path.display(), line, column, "{error}");
    }
    if !errors.is_empty() && (strict || zones.is_empty()) {
        bail!(
            "{} error(s) in the zone files of {}{}",
            errors.len(),
            dir.display(),
            if zones.is_empty() {
                ": no zone to serve"
            } else {
                " (--strict)"
            }
        );
    }
    if !errors.is_empty() {
        tracing::warn!(
            "serving the zone files that are valid; {} error(s) in the others (see above, and \
             /healthz): they are loaded once fixed",
            errors.len()
        );
    }
    log_configuration(&zones);
    Ok((zones, errors.iter().map(ToString::to_string).collect()))
}

fn log_configuration(zones: &[ZoneConfig]) {
    let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
    let services: Vec<String> = zones
        .iter()
        .flat_map(|z| z.services.iter().map(|s| s.name.to_string()))
        .collect();
    let regions: Vec<&str> = zones
        .iter()
        .flat_map(|z| z.regions.iter().map(|r| r.name.as_str()))
        .collect();
    info!(
        "serving zones [{}], services [{}], {} regions [{}]",
        origins.join(", "),
        services.join(", "),
        regions.len(),
        first_names(&regions)
    );
}

/// Names for a log line: all of them, or the first few of a long list.
fn first_names(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    match names.len() {
        0..=SHOWN => names.join(", "),
        more => format!("{}, and {} more", names[..SHOWN].join(", "), more - SHOWN),
    }
}

/// A zone whose transfers name a key the keys file does not hold could never be transferred.
fn missing_tsig_keys(zones: &[ZoneConfig], keys: &TsigKeys) -> Result<()> {
    for zone in zones {
        let wanted = zone.transfer.as_ref().and_then(|t| t.tsig.as_ref());
        if let Some(name) = wanted.filter(|name| keys.get(name).is_none()) {
            anyhow::bail!(
                "{}: transfer: tsig key {name} is not in the --tsig-keys file",
                zone.source.display()
            );
        }
    }
    Ok(())
}
