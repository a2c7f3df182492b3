//! The `regiondns` binary. The whole server starts in [`serve`]: configuration, health,
//! hot reload, admin API, DNS.

use std::{io::IsTerminal, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::Parser;
use regiondns::{
    admin::{Admin, AdminListen},
    cli::{self, Cli, Command, LogFormat, ServeArgs},
    dns::Responder,
    health::Publisher,
    metrics::Metrics,
    reload::{GeoipReloader, Reloader},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command.unwrap_or_else(Command::default_serve) {
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(serve(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Check(args) => cli::check(args),
        Command::Explain(args) => cli::explain(args),
        Command::Schema => cli::schema(),
    };
    result.unwrap_or_else(|error| {
        eprintln!("regiondns: {error:#}");
        ExitCode::FAILURE
    })
}

/// Serves until SIGINT or SIGTERM.
async fn serve(args: ServeArgs) -> Result<()> {
    let zones = cli::load_zones(&args.zones)?;
    let metrics = Arc::new(Metrics::new());
    let geo = cli::open_geoip(&args.geoip, metrics.geoip_lookup_counters())?;
    let geo = Arc::new(ArcSwap::from_pointee(geo));
    let token = cli::admin_token(args.admin_token_file.as_deref())?;

    // Health owns the routing table: it publishes a new snapshot on every state change.
    let publisher = Publisher::new(&zones, Arc::clone(&metrics));
    let (table, board) = (publisher.table(), publisher.board());
    let (events, health_events) = mpsc::channel(1024);
    tokio::spawn(publisher.run(health_events));

    // Probers and zone file changes feed the publisher.
    let reloader = Reloader::start(&args.zones, zones, events.clone(), Arc::clone(&metrics))
        .context("cannot set up hot reload and the health checks")?;
    cli::spawn_reloader(reloader, &args.zones);
    let geoip_reloader = GeoipReloader::start(Arc::clone(&geo), Arc::clone(&metrics))
        .context("cannot watch the GeoIP files")?;
    cli::spawn_geoip_reloader(geoip_reloader);

    if let AdminListen::At(addr) = args.admin {
        let admin = Admin::new(
            Arc::clone(&table),
            board,
            events,
            Arc::clone(&metrics),
            token,
        );
        cli::start_admin(addr, admin).await?;
    }

    // DNS answers from whatever snapshot is published when a query arrives.
    let listeners = cli::bind_dns(&args.listen).await?;
    let nsid = cli::nsid(args.nsid.as_deref());
    let responder = Responder::new(table, geo, &metrics, args.edns_udp_size, nsid.as_deref());
    let shutdown = CancellationToken::new();
    cli::until_shutdown(listeners.serve(responder, shutdown.clone()), shutdown).await
}

/// Logs go to stderr, filtered by `RUST_LOG`.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}
