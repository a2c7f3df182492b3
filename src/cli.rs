//! The command line: what operators type and script against (`serve`, `check`, `explain`,
//! `schema`), and the start-up steps `main` composes. Errors here carry context for a human
//! (anyhow); the modules below report typed errors.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hickory_proto::rr::{Name, RecordType};
use tracing::info;

use crate::{
    admin::AdminListen,
    answer::{AddressSource, ClientAddress, resolve},
    config::{self, ZoneConfig},
    dns::{DEFAULT_MAX_UDP_PAYLOAD, Listeners, RrlSettings},
    dnssec::{self, KeyAlgorithm},
    drill::Drill,
    explain,
    geo::{self, GeoIp, Located},
    metrics::Metrics,
    publish::{self, initial_health},
    routing::{Plan, RoutingTable},
    server,
    wire::NameKey,
};

/// Environment variable holding the admin token when no --admin-token-file is given.
const TOKEN_VARIABLE: &str = "REGIONDNS_ADMIN_TOKEN";
const FLEET_TOKEN_VARIABLE: &str = "REGIONDNS_FLEET_TOKEN";

#[derive(Parser)]
#[command(
    name = "regiondns",
    version,
    about = "Authoritative DNS that sends each client to the nearest healthy region"
)]
pub struct Cli {
    /// Without a command, `serve` runs with its defaults.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines as human-readable text, or as one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Answer DNS queries for the zones in --zones.
    Serve(ServeArgs),
    /// Validate every zone file and print a summary of each; exit 1 on any error.
    Check(CheckArgs),
    /// Show how a name is answered for a client, step by step, from the server's own code.
    Explain(ExplainArgs),
    /// Print the JSON Schema of the zone file (for editors and CI).
    Schema,
    /// DNSSEC key management.
    #[command(subcommand)]
    Dnssec(DnssecCommand),
    /// Rehearse a failover against a running server: drain a region, wait until clients'
    /// answers move, undrain it, wait until they come back; print the times.
    Drill(DrillArgs),
}

#[derive(Args)]
pub struct DrillArgs {
    /// The server's admin API.
    #[arg(long, default_value = "http://127.0.0.1:8053")]
    pub admin: String,
    /// File holding the admin API's bearer token (default: the REGIONDNS_ADMIN_TOKEN
    /// environment variable).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Where the server answers DNS.
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub dns: SocketAddr,
    /// The zone of the region, e.g. llm.example.com.
    #[arg(long)]
    pub zone: String,
    /// The region to drain.
    #[arg(long)]
    pub region: String,
    /// The service name to ask, e.g. api.llm.example.com.
    #[arg(long)]
    pub name: Name,
    #[arg(long = "type", default_value = "A")]
    pub qtype: RecordType,
    /// A client network answered with the region (sent as ECS); repeat for several.
    #[arg(long = "client", required = true)]
    pub clients: Vec<ipnet::IpNet>,
    /// How long an answer may take to move away, and to come back.
    #[arg(long, default_value = "30s")]
    pub limit: humantime::Duration,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand)]
pub enum DnssecCommand {
    /// Make a zone's signing key (a CSK) in a new file only its owner can read, and print the
    /// DS record to give the parent zone.
    Keygen(KeygenArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The zone the key signs, e.g. llm.example.com.
    #[arg(long)]
    pub zone: Name,
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcdsaP256)]
    pub algorithm: KeyAlgorithm,
    /// Where to write the key (default: ZONE.key.pem in the current directory); never
    /// overwritten.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl Command {
    /// `serve` with every default, as if typed without options.
    pub fn default_serve() -> Command {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Command::Serve(Defaults::parse_from(["regiondns"]).serve)
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Directory of zone files (*.yaml, *.yml).
    #[arg(long, default_value = "zones")]
    pub zones: PathBuf,
    /// GeoIP database (.mmdb); repeat for several (e.g. an IPv4 and an IPv6 file), tried in order.
    #[arg(long, default_value = "geoip/dbip-country.mmdb")]
    pub geoip: Vec<PathBuf>,
    /// Address to answer on, over UDP and TCP; repeat for several. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads per listen address, each with its own socket (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub udp_workers: Option<u16>,
    /// Largest UDP response, in bytes; larger answers are truncated (TC) for a TCP retry.
    #[arg(long, default_value_t = DEFAULT_MAX_UDP_PAYLOAD, value_parser = clap::value_parser!(u16).range(512..))]
    pub edns_udp_size: u16,
    /// Admin HTTP API (regions, drain, metrics, liveness): ADDR:PORT, or `off`.
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub admin: AdminListen,
    /// File holding the bearer token of the admin API's mutating endpoints (default: the
    /// REGIONDNS_ADMIN_TOKEN environment variable; without either they are disabled).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// After SIGTERM or SIGINT, how long DNS keeps answering while `/healthz` says 503 (set it
    /// behind a load balancer or an orchestrator that polls /healthz, e.g. 10s).
    #[arg(long, default_value = "0s")]
    pub drain_period: humantime::Duration,
    /// After the drain period, how long the server may take to stop; then it exits anyway.
    #[arg(long, default_value = "5s")]
    pub shutdown_timeout: humantime::Duration,
    /// Name Server Identifier sent to clients that ask for it (RFC 5001, `dig +nsid`), so that
    /// an operator can tell which instance answered: a text, or `hostname` for the host's name.
    #[arg(long)]
    pub nsid: Option<String>,
    /// Most TCP connections served at once; more are closed at once (default: 1000, or half
    /// the open-files limit when that is lower, so probes and the admin API keep descriptors).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_connections: Option<u32>,
    /// Zone files larger than this many MiB are refused without being read.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_zone_file_mib: u64,
    /// How long the admin API waits for a request's headers, or for the next request on an
    /// idle connection, before it closes the connection.
    #[arg(long, default_value = "10s")]
    pub admin_header_timeout: humantime::Duration,
    /// Refuse to start when any zone file is invalid (by default the valid ones are served,
    /// and the server exits only when none is).
    #[arg(long)]
    pub strict: bool,
    /// Most TCP connections at once from one client network (/24, /56).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_connections_per_network: u32,
    /// Response rate limit: UDP responses per second to one client network (/24, /56), of one
    /// class (answer, NODATA, NXDOMAIN per zone, error), for one name; 0 turns it off.
    #[arg(long, default_value_t = 1000)]
    pub rrl_rate: u32,
    /// Every N-th response over the rate limit is sent truncated, so that a real client retries
    /// over TCP; the others are dropped (0: drop all, 1: truncate all).
    #[arg(long, default_value_t = 2)]
    pub rrl_slip: u32,
    /// A client network the rate limit never applies to (CIDR); repeat for several.
    #[arg(long)]
    pub rrl_exempt: Vec<ipnet::IpNet>,
    /// This instance's endpoint for its peers (ADDR:PORT): a listener of its own, apart from
    /// the admin API, so that the admin API can stay on loopback.
    #[arg(long)]
    pub fleet_listen: Option<SocketAddr>,
    /// Another instance's fleet endpoint (http:// or https://); repeat for every peer.
    #[arg(long)]
    pub peer: Vec<reqwest::Url>,
    /// File holding the fleet's shared secret (default: the REGIONDNS_FLEET_TOKEN environment
    /// variable). Not the admin token.
    #[arg(long)]
    pub fleet_token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for the peers' certificates (a private CA).
    #[arg(long)]
    pub peer_ca: Option<PathBuf>,
    /// The fleet listener's certificate chain (PEM): it then serves HTTPS (rustls).
    #[arg(long, requires = "fleet_tls_key")]
    pub fleet_tls_cert: Option<PathBuf>,
    /// The private key of --fleet-tls-cert (PEM).
    #[arg(long, requires = "fleet_tls_cert")]
    pub fleet_tls_key: Option<PathBuf>,
    /// Where this instance keeps what must survive a restart (the drains).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Directory of zone files (*.yaml, *.yml); default `zones`, unless only --geoip is given.
    #[arg(long)]
    pub zones: Option<PathBuf>,
    /// A GeoIP database (.mmdb) to check before deploying it: its type, record shape, size,
    /// and what it says of well-known public addresses. Repeat for several, tried in order.
    #[arg(long)]
    pub geoip: Vec<PathBuf>,
    /// Zone files larger than this many MiB are refused without being read.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_zone_file_mib: u64,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Directory of zone files (*.yaml, *.yml).
    #[arg(long, default_value = "zones")]
    pub zones: PathBuf,
    /// GeoIP database (.mmdb); repeat for several, tried in order.
    #[arg(long, default_value = "geoip/dbip-country.mmdb")]
    pub geoip: Vec<PathBuf>,
    /// The client's address: the ECS address a resolver sends, else the resolver's own.
    #[arg(long)]
    pub client: std::net::IpAddr,
    /// Take region health from a running server's admin API (e.g. http://127.0.0.1:8053);
    /// without it every region counts as up (or drained, as the zone file says).
    #[arg(long)]
    pub admin: Option<String>,
    /// The name to explain, e.g. api.llm.example.com.
    pub name: String,
    /// The query type.
    #[arg(default_value = "A")]
    pub qtype: String,
}

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
    if let Some(url) = &args.admin {
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(health_from_admin(url, &mut health))?;
    }
    let plan = Plan::new(&zones, &Metrics::new(), &geo)?;
    let table = RoutingTable::build(&plan, &publish::states(&health));

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
            for line in explain::service_lines(zone, service, Some(&geo), client, qtype) {
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

/// Names for a log line: all of them, or the first few of a long list.
fn first_names(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    match names.len() {
        0..=SHOWN => names.join(", "),
        more => format!("{}, and {} more", names[..SHOWN].join(", "), more - SHOWN),
    }
}

/// Overwrites `health` with the states reported by a running server's `GET /regions`.
async fn health_from_admin(url: &str, health: &mut publish::HealthMap) -> Result<()> {
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
    }
    Ok(())
}

/// `regiondns schema`: the zone file's JSON Schema on stdout.
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

/// `regiondns drill`: a line per client network (its answer before, while drained, and the
/// times), then the verdict; exits 1 when an answer did not move or come back in time.
pub fn drill(args: DrillArgs) -> Result<ExitCode> {
    let mut name = args.name;
    name.set_fqdn(true);
    let drill = Drill {
        admin: args.admin,
        token: admin_token(args.admin_token_file.as_deref())?,
        dns: args.dns,
        zone: args.zone,
        region: args.region,
        name,
        qtype: args.qtype,
        clients: args.clients,
        limit: args.limit.into(),
    };
    if args.dry_run {
        for (step, line) in drill.plan().iter().enumerate() {
            println!("{}. {line}", step + 1);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let outcomes = runtime.block_on(drill.run())?;
    let addresses = |list: &[std::net::IpAddr]| {
        let text: Vec<String> = list.iter().map(ToString::to_string).collect();
        if text.is_empty() {
            "nothing".to_owned()
        } else {
            text.join(" ")
        }
    };
    for outcome in &outcomes {
        let before = addresses(&outcome.before);
        let line = match (&outcome.moved, outcome.back) {
            (Some((during, moved)), Some(back)) => format!(
                "{before} -> {} after {:.2} s; back after {:.2} s",
                addresses(during),
                moved.as_secs_f64(),
                back.as_secs_f64()
            ),
            (Some((during, moved)), None) => format!(
                "{before} -> {} after {:.2} s; NOT BACK within {:?}",
                addresses(during),
                moved.as_secs_f64(),
                drill.limit
            ),
            (None, _) => format!("{before}: DID NOT MOVE within {:?}", drill.limit),
        };
        println!("{}: {line}", outcome.client);
    }
    let passed = outcomes.iter().all(|o| o.passed());
    println!(
        "{}: {} drained and undrained",
        if passed { "passed" } else { "FAILED" },
        drill.region
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

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
    Ok(server::Config {
        zones_dir: args.zones.clone(),
        zones,
        geo,
        metrics,
        admin_token: admin_token(args.admin_token_file.as_deref())?,
        max_udp_payload: args.edns_udp_size,
        nsid: nsid(args.nsid.as_deref()),
        drain_period: args.drain_period.into(),
        shutdown_timeout: args.shutdown_timeout.into(),
        tcp_connections: args
            .tcp_connections
            .map_or_else(default_tcp_connections, |n| n as usize),
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

/// 1000 TCP connections, or half the open-files limit (raised to its hard maximum first, as
/// Knot and NSD do) when that is lower.
fn default_tcp_connections() -> usize {
    let files = raise_open_files_limit();
    usize::try_from(files / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, 1000)
}

/// Raises the soft open-files limit to the hard one; the limit in force.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
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

/// Runs the server until it fails, or until SIGINT or SIGTERM stops it gracefully; a second
/// signal exits at once.
pub async fn until_stopped(
    server: impl Future<Output = Result<(), server::ServerError>>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let mut server = std::pin::pin!(server);
    let mut signals = Signals::new()?;
    tokio::select! {
        result = &mut server => return Ok(result?),
        signal = signals.next() => info!("{signal}: shutting down"),
    }
    stop.cancel();
    tokio::select! {
        result = &mut server => Ok(result?),
        signal = signals.next() => {
            tracing::warn!("{signal} again: exiting now");
            std::process::exit(1);
        }
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
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
