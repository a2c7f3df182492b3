//! DNS over UDP and TCP: binds the listen addresses and runs hickory's server with our handler.
//!
//! This module owns the wire: request checks, EDNS (payload size, version, Client Subnet),
//! truncation and the response sections. The decision of what to answer is delegated to
//! [`answer::resolve`], a pure function of the routing snapshot; nothing here reads files or
//! blocks.

mod answer;
mod handler;

use std::{io, net::SocketAddr, time::Duration};

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

pub use answer::{AddressSource, ClientAddress, decision_answer, locate, resolve};
pub use handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler};

/// How long an idle TCP connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Starts serving; the returned server runs until shut down.
    pub fn serve(self, handler: Handler) -> Server<Handler> {
        let mut server = Server::new(handler);
        for (udp, tcp) in self.pairs {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, usize::from(u16::MAX));
        }
        server
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
