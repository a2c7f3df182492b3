//! SIGINT and SIGTERM: the first stops the server gracefully, a second exits at once.

#[allow(clippy::wildcard_imports)]
use super::*;

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
