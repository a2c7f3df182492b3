//! The command line: what operators type and script against (`serve`, `check`), and the
//! start-up sequence of the server. Errors here carry context for a human (anyhow); the
//! modules below report typed errors.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tracing::info;

use tokio::sync::mpsc;

use crate::{
    admin::{Admin, AdminListen},
    config::{self, ZoneConfig},
    dns::{DEFAULT_MAX_UDP_PAYLOAD, Handler, Listeners},
    geo::GeoIp,
    health::{Probers, Publisher, initial_health},
    metrics::Metrics,
    routing::Plan,
};

/// Environment variable holding the admin token when no --admin-token-file is given.
const TOKEN_VARIABLE: &str = "REGIONDNS_ADMIN_TOKEN";

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
}

#[derive(Subcommand)]
pub enum Command {
    /// Answer DNS queries for the zones in --zones.
    Serve(ServeArgs),
    /// Validate every zone file and print a summary of each; exit 1 on any error.
    Check(CheckArgs),
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
}

#[derive(Args)]
pub struct CheckArgs {
    /// Directory of zone files (*.yaml, *.yml).
    #[arg(long, default_value = "zones")]
    pub zones: PathBuf,
}

/// `regiondns check`: one summary line per zone on stdout, each error on stderr.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    match config::load_dir(&args.zones) {
        Ok(zones) => {
            for zone in &zones {
                println!("{}: {}", zone.source.display(), zone.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.len(), args.zones.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `regiondns serve`: load everything, bind, answer until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: ServeArgs) -> Result<()> {
    let zones = load_zones(&args.zones)?;
    let geo = GeoIp::open(&args.geoip)?;
    for line in geo.describe() {
        info!("GeoIP database {line}");
    }
    let token = admin_token(args.admin_token_file.as_deref())?;

    let metrics = Arc::new(Metrics::new());
    let plan = Arc::new(Plan::new(&zones, &metrics));
    let publisher = Publisher::new(plan, initial_health(&zones), Arc::clone(&metrics));
    let (table, board) = (publisher.table(), publisher.board());
    let (events, receiver) = mpsc::channel(1024);
    tokio::spawn(publisher.run(receiver));
    let probers = Probers::start(&zones, &events).context("cannot set up the health checks")?;
    log_configuration(&zones, probers.len());

    if let AdminListen::At(addr) = args.admin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the admin API"))?;
        let local = listener.local_addr().context("admin listener address")?;
        info!("admin API listening on http://{local}");
        let admin = Admin::new(board, events.clone(), Arc::clone(&metrics), token);
        tokio::spawn(async move {
            if let Err(error) = admin.serve(listener).await {
                tracing::error!("admin API stopped: {error}");
            }
        });
    }

    let listeners = Listeners::bind(&args.listen).await?;
    for addr in listeners.local_addrs() {
        info!("listening on {addr} (udp, tcp)");
    }
    let handler = Handler::new(table, Arc::new(geo), &metrics, args.edns_udp_size);
    let mut server = listeners.serve(handler);
    tokio::select! {
        result = server.block_until_done() => result.context("DNS server stopped")?,
        signal = shutdown_signal() => {
            info!("{}: shutting down", signal?);
            server.shutdown_gracefully().await.context("shutting down")?;
        }
    }
    drop(probers);
    Ok(())
}

/// The admin token from the file, else the environment; `None` disables mutating endpoints.
fn admin_token(file: Option<&std::path::Path>) -> Result<Option<String>> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?,
        None => std::env::var(TOKEN_VARIABLE).unwrap_or_default(),
    };
    let token = token.trim();
    if token.is_empty() && file.is_some() {
        bail!("the admin token file is empty");
    }
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

fn load_zones(dir: &std::path::Path) -> Result<Vec<ZoneConfig>> {
    match config::load_dir(dir) {
        Ok(zones) => Ok(zones),
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            bail!(
                "{} error(s) in the zone files of {}",
                errors.len(),
                dir.display()
            )
        }
    }
}

fn log_configuration(zones: &[ZoneConfig], checks: usize) {
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
        "serving zones [{}], services [{}], regions [{}], {checks} health checks",
        origins.join(", "),
        services.join(", "),
        regions.join(", ")
    );
}

async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT").context("cannot watch SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
