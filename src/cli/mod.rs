//! The command line: what operators type and script against (`serve`, `check`, `explain`,
//! `schema`, `dnssec`, `drill`), and the start-up steps `main` composes. This file holds the
//! flags; each command has a file of its own, `serve` its bootstrap (`serve.rs`), the signals
//! (`signals.rs`) and the descriptor limit (`limits.rs`). Errors here carry context for a
//! human (anyhow); the modules below report typed errors.

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
    latency::LatencyTable,
    metrics::Metrics,
    publish::{self, initial_health},
    routing::{Plan, RoutingTable},
    server,
    wire::NameKey,
};

mod check;
mod dnssec_keys;
mod drill_command;
mod explain_command;
mod latency_command;
mod limits;
mod serve;
mod signals;

pub use check::{check, schema};
pub use dnssec_keys::dnssec;
pub use drill_command::drill;
pub use explain_command::explain;
pub use latency_command::latency;
pub use serve::{admin_token, bind, load_latency, load_zones, nsid, open_geoip, server_config};
pub use signals::until_stopped;

/// `regiondns tsig keygen`: prints a new key.
pub fn tsig(command: TsigCommand) -> anyhow::Result<std::process::ExitCode> {
    let TsigCommand::Keygen(args) = command;
    let printed =
        crate::transfer::keys::keygen(&args.name, &args.algorithm).map_err(anyhow::Error::msg)?;
    print!("{printed}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// A domain name, absolute whether or not it ends in a dot.
fn absolute_name(text: &str) -> Result<Name, String> {
    let mut name: Name = text.parse().map_err(|e| format!("{e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

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
    Serve(Box<ServeArgs>),
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
    /// Latency tables from the regions' gateway logs.
    #[command(subcommand)]
    Latency(LatencyCommand),
    /// TSIG keys for zone transfers.
    #[command(subcommand)]
    Tsig(TsigCommand),
}

#[derive(Subcommand)]
pub enum TsigCommand {
    /// Make a TSIG key: print its entry for the --tsig-keys file and the same key for BIND's
    /// and Knot's configurations.
    Keygen(TsigKeygenArgs),
}

#[derive(Args)]
pub struct TsigKeygenArgs {
    /// The key's name, e.g. xfr.llm.example.com.
    pub name: Name,
    /// hmac-sha256 or hmac-sha512.
    #[arg(long, default_value = "hmac-sha256")]
    pub algorithm: String,
}

#[derive(Subcommand)]
pub enum LatencyCommand {
    /// Read gateway access logs (client address, then TCP round trip in microseconds) and
    /// write the latency table: per client /24 and /48, the median round trip to each region.
    Build(LatencyBuildArgs),
}

#[derive(Args)]
pub struct LatencyBuildArgs {
    /// A region's gateway log, as REGION=FILE; repeat for each region.
    #[arg(long = "log", required = true, value_parser = region_log)]
    pub logs: Vec<(String, PathBuf)>,
    /// The table the last build wrote: its measurements are kept, weighed down where new
    /// ones arrive.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// GeoIP databases: networks they do not locate are left out (nothing could borrow them).
    #[arg(long)]
    pub geoip: Vec<PathBuf>,
    /// Where to write the table (replaced by a rename, as the servers watching it expect).
    #[arg(long)]
    pub out: PathBuf,
}

fn region_log(text: &str) -> std::result::Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((region, file)) if !region.is_empty() && !file.is_empty() => {
            Ok((region.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("expected REGION=FILE, got '{text}'")),
    }
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
        Command::Serve(Box::new(Defaults::parse_from(["regiondns"]).serve))
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
    /// Latency table (CSV: network,region,rtt_ms,samples) for `policy: latency` services;
    /// reloaded when replaced and on SIGHUP. Made by `regiondns latency build`.
    #[arg(long)]
    pub latency: Option<PathBuf>,
    /// TSIG keys for zone transfers (YAML: a list of name, algorithm, secret in base64), as
    /// `regiondns tsig keygen` prints them; a zone's `transfer.tsig` names one.
    #[arg(long)]
    pub tsig_keys: Option<PathBuf>,
    /// The least time between two serials of a transferred zone: changes closer together
    /// (a flapping region) go out together.
    #[arg(long, default_value = "5s")]
    pub transfer_min_interval: humantime::Duration,
    /// Serve a catalog zone (RFC 9432) of this name listing every zone with `transfer`, so
    /// that secondaries add and remove those zones by themselves.
    #[arg(long, value_parser = absolute_name)]
    pub catalog: Option<Name>,
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
    /// The PEM CA certificate the peers' certificates must chain to: the only one trusted for
    /// them (the system's roots are not).
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
    /// Latency table, as `serve` takes it.
    #[arg(long)]
    pub latency: Option<PathBuf>,
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
