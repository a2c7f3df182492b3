//! The `regiondns` binary. The whole server starts in [`serve`]: load the configuration, bind
//! the sockets, run the supervised server ([`regiondns::server`]) until a signal stops it.

use std::{io::IsTerminal, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use regiondns::{
    cli::{self, Cli, Command, LogFormat, ServeArgs},
    server,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    regiondns::memory::map_large_allocations();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command.unwrap_or_else(Command::default_serve) {
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(serve(*args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Check(args) => cli::check(args),
        Command::Explain(args) => cli::explain(args),
        Command::Schema => cli::schema(),
        Command::Dnssec(command) => cli::dnssec(command),
        Command::Drill(args) => cli::drill(args),
        Command::Latency(command) => cli::latency(command),
        Command::Tsig(command) => cli::tsig(command),
    };
    result.unwrap_or_else(|error| {
        eprintln!("regiondns: {error:#}");
        ExitCode::FAILURE
    })
}

/// Parse, bind, run: serves until SIGTERM or SIGINT; a second signal exits at once.
async fn serve(args: ServeArgs) -> Result<()> {
    let config = cli::server_config(&args)?;
    let listeners = cli::bind(&args).await?;
    let stop = CancellationToken::new();
    cli::until_stopped(server::run(config, listeners, stop.clone()), stop).await
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
