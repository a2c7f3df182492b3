//! DNS over UDP and TCP: binds the listen addresses and answers every request read from them.
//!
//! This module owns the sockets and the per-request path: [`Responder`] turns request bytes
//! into response bytes (checks, EDNS, Client Subnet, truncation) and delegates the decision of
//! what to answer to [`crate::answer::resolve`], a pure function of the routing snapshot. Nothing
//! here reads files or blocks; the wire format itself is [`crate::wire`]'s.

mod respond;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

pub use respond::{DEFAULT_MAX_UDP_PAYLOAD, Responder, Transport};

/// How long a TCP connection may stay idle, or take to send one request.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long a TCP connection is given to deliver requests it has already sent.
const TCP_DRAIN_WAIT: Duration = Duration::from_millis(100);
/// The largest DNS message, and so the receive buffer that never cuts one.
const MAX_MESSAGE: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// Bound UDP sockets and TCP listeners, one pair per listen address.
pub struct Listeners {
    pairs: Vec<(UdpSocket, TcpListener)>,
}

impl Listeners {
    /// Binds UDP and TCP on each address. Port 0 picks a free port, the same for both.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Listeners, BindError> {
        let mut pairs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            pairs.push(bind_pair(addr).await?);
        }
        Ok(Listeners { pairs })
    }

    /// The addresses actually bound (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.pairs
            .iter()
            .filter_map(|(udp, _)| udp.local_addr().ok())
            .collect()
    }

    /// Answers on every socket until `shutdown` is cancelled; requests already received (UDP
    /// datagrams queued on the socket, TCP requests a client has sent) are answered before it
    /// returns. Several tasks receive on each UDP socket, one per core.
    pub async fn serve(self, responder: Responder, shutdown: CancellationToken) -> io::Result<()> {
        let responder = Arc::new(responder);
        let receivers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut tasks = JoinSet::new();
        for (udp, tcp) in self.pairs {
            let udp = Arc::new(udp);
            for _ in 0..receivers {
                let (udp, responder) = (Arc::clone(&udp), Arc::clone(&responder));
                tasks.spawn(serve_udp(udp, responder, shutdown.clone()));
            }
            tasks.spawn(serve_tcp(tcp, Arc::clone(&responder), shutdown.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), BindError> {
    let error = |source| BindError { addr, source };
    // With port 0 the kernel picks the UDP port; that port may be taken for TCP, so try again.
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await.map_err(error)?;
        let port = udp.local_addr().map_err(error)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(error(
        last_error.unwrap_or_else(|| io::Error::other("no port")),
    ))
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut packet = vec![0; MAX_MESSAGE];
    let mut response = Vec::with_capacity(MAX_MESSAGE);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = socket.recv_from(&mut packet) => received,
        };
        // Errors here are about one datagram (e.g. an ICMP error for an earlier reply).
        let Ok((len, source)) = received else {
            continue;
        };
        if responder.respond(&packet[..len], source.ip(), Transport::Udp, &mut response)
            && let Err(error) = socket.send_to(&response, source).await
        {
            tracing::debug!(%error, %source, "cannot send a UDP response");
        }
    }
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
