//! DNS over TCP (RFC 7766): connections capped in total and per client network, so that a
//! crowd of clients can neither exhaust the process's file descriptors (which the health
//! probes and the admin API need) nor crowd out everyone else; idle and slow connections are
//! closed; requests on a connection are answered in order.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use super::{Responder, Transport, network_of};
use crate::transfer::{Outcome, unix_now};

/// How long a TCP connection may stay idle, or take to send one request.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long a TCP connection is given to deliver requests it has already sent.
const TCP_DRAIN_WAIT: Duration = Duration::from_millis(100);
/// After a failed accept (out of descriptors or memory), how long to wait before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Failed accepts are logged at most this often, with a count of those not logged.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How many TCP connections are served at once.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// In all.
    pub connections: usize,
    /// From one client network (/24 for IPv4, /56 for IPv6).
    pub per_network: usize,
    /// Connections closed at once, by the limit they hit.
    pub refused_total: Counter,
    pub refused_network: Counter,
}

/// Open connections by client network; a [`Slot`] holds one and gives it back when dropped.
struct Open {
    limits: TcpLimits,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_network: HashMap<[u8; 8], usize>,
}

struct Slot {
    open: Arc<Open>,
    network: [u8; 8],
}

impl Open {
    /// A slot for a connection from `ip`, unless a limit is reached. Called per connection,
    /// never per query: the lock is held for a map update.
    fn take(self: &Arc<Open>, ip: IpAddr) -> Option<Slot> {
        let network = network_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.connections {
            self.limits.refused_total.inc();
            return None;
        }
        let count = counts.by_network.entry(network).or_insert(0);
        if *count >= self.limits.per_network {
            self.limits.refused_network.inc();
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(Slot {
            open: Arc::clone(self),
            network,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .open
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(count) = counts.by_network.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                counts.by_network.remove(&self.network);
            }
        }
    }
}

/// Logs failed accepts: the first at once, then at most one line per [`ACCEPT_LOG_EVERY`].
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) {
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY);
        if due {
            tracing::warn!(
                %error,
                "cannot accept a TCP connection ({} more since the last report); waiting {} ms \
                 before the next",
                self.unlogged,
                ACCEPT_BACKOFF.as_millis()
            );
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// Serves `listener` until `shutdown`; a connection over a limit is closed at once (the
/// client sees the close and may retry), rather than left waiting in the backlog.
pub async fn serve(
    listener: TcpListener,
    responder: Arc<Responder>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let open = Arc::new(Open {
        limits,
        counts: Mutex::new(Counts::default()),
    });
    let mut accept_errors = AcceptErrors::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = open.take(peer.ip()) else {
                        continue;
                    };
                    let (responder, shutdown) = (Arc::clone(&responder), shutdown.clone());
                    connections.spawn(async move {
                        serve_connection(stream, peer, responder, shutdown).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of descriptors or memory: wait, never spin.
                    accept_errors.failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Requests on one connection are answered in order (RFC 7766 6.2.1.1 allows it); the
/// connection closes when idle, when the client closes it, or at shutdown once the requests
/// the client has already sent are answered.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) {
    let mut packet = Vec::new();
    let mut response = Vec::new();
    let mut frame = Vec::new();
    loop {
        let mut length = [0; 2];
        if !read_or_drain(&mut stream, &mut length, &shutdown).await {
            return;
        }
        packet.resize(usize::from(u16::from_be_bytes(length)), 0);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        if let Some(answered) = responder.transfers().answer(&packet, peer.ip(), unix_now()) {
            log_transfer(peer, &answered.outcome);
            for message in &answered.messages {
                if !write_framed(&mut stream, message, &mut frame).await {
                    return;
                }
            }
            continue;
        }
        if !responder.respond(&packet, peer.ip(), Transport::Tcp, &mut response) {
            continue;
        }
        if !write_framed(&mut stream, &response, &mut frame).await {
            return;
        }
    }
}

/// Writes `message` with its length before it; false when the connection is done.
async fn write_framed(stream: &mut TcpStream, message: &[u8], frame: &mut Vec<u8>) -> bool {
    let Ok(length) = u16::try_from(message.len()) else {
        return false;
    };
    frame.clear();
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    matches!(
        timeout(TCP_IDLE_TIMEOUT, stream.write_all(frame)).await,
        Ok(Ok(()))
    )
}

fn log_transfer(peer: SocketAddr, outcome: &Outcome) {
    match outcome {
        Outcome::Transferred {
            kind,
            zone,
            serial,
            since,
            records,
        } => {
            let since = since.map_or(String::new(), |s| format!(", the secondary at {s}"));
            tracing::info!(
                %peer,
                "{} of {zone} (serial {serial}{since}, {records} records) sent",
                kind.as_str()
            );
        }
        Outcome::Answered => {}
        Outcome::Refused(why) => tracing::warn!(%peer, "zone transfer refused: {why}"),
    }
}

/// Reads a request's length prefix. Idle connections wait up to [`TCP_IDLE_TIMEOUT`]; once
/// `shutdown` is cancelled, only [`TCP_DRAIN_WAIT`] more, for requests already on their way (a
/// read in progress is never cut, so no request is torn). False: the connection is done.
async fn read_or_drain(
    stream: &mut TcpStream,
    length: &mut [u8; 2],
    shutdown: &CancellationToken,
) -> bool {
    let wait = if shutdown.is_cancelled() {
        TCP_DRAIN_WAIT
    } else {
        TCP_IDLE_TIMEOUT
    };
    let mut read = std::pin::pin!(timeout(wait, stream.read_exact(length)));
    let read = if shutdown.is_cancelled() {
        read.await
    } else {
        tokio::select! {
            read = &mut read => read,
            () = shutdown.cancelled() => match timeout(TCP_DRAIN_WAIT, read).await {
                Ok(read) => read,
                Err(_) => return false,
            },
        }
    };
    matches!(read, Ok(Ok(_)))
}
