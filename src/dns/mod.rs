//! DNS over UDP and TCP: binds the listen addresses and answers every request read from them.
//!
//! This module owns the sockets and the per-request path: [`Responder`] turns request bytes
//! into response bytes (checks, EDNS, Client Subnet, truncation) and delegates the decision of
//! what to answer to [`crate::answer::resolve`], a pure function of the routing snapshot. Nothing
//! here reads files or blocks; the wire format itself is [`crate::wire`]'s.

mod respond;
mod udp;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use crate::counter;

pub use respond::{DEFAULT_MAX_UDP_PAYLOAD, Responder, Transport};

/// How long a TCP connection may stay idle, or take to send one request.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long a TCP connection is given to deliver requests it has already sent.
const TCP_DRAIN_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
// The cause is in the message, not also a `source` (a chain would print it twice).
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: io::Error,
}

/// Bound sockets, per listen address: one UDP socket per worker and a TCP listener.
pub struct Listeners {
    addresses: Vec<(Vec<std::net::UdpSocket>, TcpListener)>,
}

impl Listeners {
    /// Binds each address for UDP (`udp_workers` sockets with SO_REUSEPORT) and TCP. Port 0
    /// picks a free port, the same for both.
    pub async fn bind(addrs: &[SocketAddr], udp_workers: usize) -> Result<Listeners, BindError> {
        let mut addresses = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            addresses.push(bind_address(addr, udp_workers).await?);
        }
        Ok(Listeners { addresses })
    }

    /// The addresses actually bound (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addresses
            .iter()
            .filter_map(|(udp, _)| udp.first()?.local_addr().ok())
            .collect()
    }

    /// Answers on every socket until `shutdown` is cancelled; requests already received (UDP
    /// datagrams queued on the sockets, TCP requests a client has sent) are answered before it
    /// returns. Each UDP socket has its own worker thread.
    pub async fn serve(self, responder: Responder, shutdown: CancellationToken) -> io::Result<()> {
        let responder = Arc::new(responder);
        let mut tasks = JoinSet::new();
        let mut workers = 0..;
        for (udp_sockets, tcp) in self.addresses {
            for (socket, worker) in udp_sockets.into_iter().zip(&mut workers) {
                let (responder, shutdown) = (Arc::clone(&responder), shutdown.clone());
                tasks.spawn_blocking(move || {
                    counter::claim_shard(worker);
                    udp::serve(socket, &responder, &shutdown)
                });
            }
            tasks.spawn(serve_tcp(tcp, Arc::clone(&responder), shutdown.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

async fn bind_address(
    addr: SocketAddr,
    udp_workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, TcpListener), BindError> {
    let error = |error| BindError { addr, error };
    // With port 0 the kernel picks the UDP port; that port may be taken for TCP, so try again.
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = udp::bind(addr, udp_workers).map_err(error)?;
        let port = udp[0].local_addr().map_err(error)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(error(
        last_error.unwrap_or_else(|| io::Error::other("no port")),
    ))
}

async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (responder, shutdown) = (Arc::clone(&responder), shutdown.clone());
                    connections.spawn(serve_connection(stream, peer, responder, shutdown));
                }
                Err(error) => {
                    // Out of descriptors or memory: give the process a moment, never spin.
                    tracing::warn!(%error, "cannot accept a TCP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        if !responder.respond(&packet, peer.ip(), Transport::Tcp, &mut response) {
            continue;
        }
        let Ok(length) = u16::try_from(response.len()) else {
            return;
        };
        frame.clear();
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&response);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.write_all(&frame)).await,
            Ok(Ok(()))
        ) {
            return;
        }
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
