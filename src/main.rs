//! The `regiondns` binary: parse the command line, set up logging, run the command.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use regiondns::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let command = cli.command.unwrap_or_else(Command::default_serve);
    let result = match command {
        Command::Serve(args) => regiondns::cli::serve(args),
        Command::Check(args) => regiondns::cli::check(args),
        Command::Explain(args) => regiondns::cli::explain(args),
        Command::Schema => regiondns::cli::schema(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("regiondns: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG`. hickory logs every response at info: keep it
/// at warn unless asked.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}
