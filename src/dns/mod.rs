//! DNS over UDP and TCP: binds the listen addresses and answers every request read from them.
//!
//! This module owns the sockets and the per-request path: [`Responder`] turns request bytes
//! into response bytes (checks, EDNS, Client Subnet, truncation) and delegates the decision of
//! what to answer to [`crate::answer::resolve`], a pure function of the routing snapshot. Nothing
//! here reads files or blocks; the wire format itself is [`crate::wire`]'s.

mod cache;
mod cookie;
mod respond;
mod rrl;
mod tcp;
mod udp;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::counter;

pub use cache::ResponseCache;
pub use respond::{DEFAULT_MAX_UDP_PAYLOAD, Responder, Transport};
pub use rrl::{RateKey, RateLimiter, ResponseClass, RrlCounters, RrlSettings, Verdict};
pub use tcp::TcpLimits;

#[derive(Debug, thiserror::Error)]
// The cause is in the message, not also a `source` (a chain would print it twice).
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: io::Error,
}

/// What protects the server from a hostile internet.
pub struct Limits {
    pub tcp: TcpLimits,
    pub rrl: RrlSettings,
    pub rrl_counters: RrlCounters,
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
    pub async fn serve(
        self,
        responder: Responder,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let responder = Arc::new(responder);
        let mut tasks = JoinSet::new();
        let mut workers = 0..;
        for (udp_sockets, tcp) in self.addresses {
            let per_address = udp_sockets.len();
            for (socket, worker) in udp_sockets.into_iter().zip(&mut workers) {
                let (responder, shutdown) = (Arc::clone(&responder), shutdown.clone());
                let limiter =
                    RateLimiter::new(&limits.rrl, per_address, limits.rrl_counters.clone());
                tasks.spawn_blocking(move || {
                    counter::claim_shard(worker);
                    udp::serve(socket, &responder, limiter, &shutdown)
                });
            }
            let (responder, tcp_limits) = (Arc::clone(&responder), limits.tcp.clone());
            tasks.spawn(tcp::serve(tcp, responder, tcp_limits, shutdown.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

/// The network a client address stands for, as one key: its /24 (IPv4) or /56 (IPv6).
fn network_of(ip: IpAddr) -> [u8; 8] {
    let mut key = [0; 8];
    match ip.to_canonical() {
        IpAddr::V4(v4) => key[..3].copy_from_slice(&v4.octets()[..3]),
        IpAddr::V6(v6) => {
            key[..7].copy_from_slice(&v6.octets()[..7]);
            key[7] = 6;
        }
    }
    key
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
