//! UDP workers: one thread per core, each with its own socket bound with SO_REUSEPORT, so the
//! kernel spreads datagrams over them and no two workers share a socket. A worker receives up to
//! [`BATCH`] datagrams with one `recvmmsg`, answers them into buffers it reuses (a repeated
//! request from its [`ResponseCache`]), and sends the answers with one `sendmmsg`: no task is
//! spawned and nothing is allocated per query.
//!
//! This module owns the system calls and their buffers; what to answer is [`Responder`]'s.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{RateLimiter, Responder, ResponseCache};

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// The largest request read whole; a longer one is cut and answered FORMERR or dropped.
const MAX_REQUEST: usize = 4096;
/// Bytes from one request buffer to the next: a cache line more than a page, so the first
/// lines of the batch's requests (all that a query reads) do not all fall in one cache set.
const REQUEST_STRIDE: usize = MAX_REQUEST + 64;
/// Receive buffer asked for per socket: a burst of several thousand queries waits in it while
/// the worker is descheduled, instead of being dropped (the kernel caps it at rmem_max).
const RECEIVE_BUFFER: usize = 4 << 20;
/// How often a worker waiting for datagrams looks at the shutdown token.
const WAKE_UP: Duration = Duration::from_millis(100);
/// How long a worker answers what is queued on its socket after the stop: a sender that never
/// stops keeps the socket from ever being empty, and must not hold the stop.
const QUEUED_AT_STOP: Duration = Duration::from_millis(500);

/// Binds `workers` UDP sockets on `addr` with SO_REUSEPORT (one port for all). Port 0 is a
/// port no socket holds: the kernel picks it for a socket without SO_REUSEPORT first, since a
/// socket with it may be given a port whose sockets have it too (a stopping instance still
/// answering what it had queued, a Knot of the same user) and join their group.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(workers);
    let mut addr = addr;
    if addr.port() == 0 {
        addr = UdpSocket::bind(addr)?.local_addr()?;
    }
    for _ in 0..workers.max(1) {
        let socket = reuseport_socket(addr)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are separate listen addresses, each with its own sockets.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(WAKE_UP))?;
    // A smaller buffer than asked for is still a working socket.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Answers on `socket` until `shutdown`, then answers what is already queued on it, for at
/// most [`QUEUED_AT_STOP`].
pub fn serve(
    socket: UdpSocket,
    responder: &Responder,
    mut limiter: Option<RateLimiter>,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let mut batch = Batch::new();
    let mut cache = ResponseCache::default();
    let mut drain_until = None;
    loop {
        let stopping = shutdown.is_cancelled();
        if stopping {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + QUEUED_AT_STOP);
            if Instant::now() >= until {
                return Ok(());
            }
        }
        // Once stopping, take only what is already queued, without waiting.
        let flags = if stopping {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        let received = match batch.receive(&socket, flags) {
            Ok(received) => received,
            Err(error) if is_timeout_or_empty(&error) => {
                if stopping {
                    return Ok(());
                }
                continue;
            }
            // One datagram's trouble (an ICMP error for an earlier reply, a signal).
            Err(error) if is_transient(&error) => continue,
            Err(error) => return Err(error),
        };
        if let Some(limiter) = &mut limiter {
            limiter.set_now(Instant::now());
        }
        let answers = batch.answer(received, responder, limiter.as_mut(), &mut cache);
        batch.send(&socket, answers);
    }
}

fn is_timeout_or_empty(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINTR | libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

/// The buffers of one worker and the kernel's descriptions of them, set up once. Every
/// pointer in `received` and `outgoing` points into a boxed slice of this struct, which is
/// never reallocated, so moving the `Batch` keeps them valid.
struct Batch {
    requests: Box<[[u8; REQUEST_STRIDE]]>,
    responses: Box<[Vec<u8>]>,
    peers: Box<[libc::sockaddr_storage]>,
    request_iov: Box<[libc::iovec]>,
    response_iov: Box<[libc::iovec]>,
    received: Box<[libc::mmsghdr]>,
    outgoing: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers only ever point into the struct's own boxed buffers.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Batch {
        let mut batch = Batch {
            requests: vec![[0; REQUEST_STRIDE]; BATCH].into_boxed_slice(),
            responses: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_REQUEST))
                .collect(),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            peers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH].into_boxed_slice(),
            request_iov: vec![empty_iovec(); BATCH].into_boxed_slice(),
            response_iov: vec![empty_iovec(); BATCH].into_boxed_slice(),
            // SAFETY: mmsghdr is plain old data; all zeroes (null pointers) is a valid value.
            received: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH]
                .into_boxed_slice(),
            outgoing: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH]
                .into_boxed_slice(),
        };
        for i in 0..BATCH {
            batch.request_iov[i] = libc::iovec {
                iov_base: batch.requests[i].as_mut_ptr().cast(),
                iov_len: MAX_REQUEST,
            };
            let header = &mut batch.received[i].msg_hdr;
            header.msg_iov = &mut batch.request_iov[i];
            header.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to [`BATCH`] datagrams; how many.
    fn receive(&mut self, socket: &UdpSocket, flags: libc::c_int) -> io::Result<usize> {
        for i in 0..BATCH {
            let header = &mut self.received[i].msg_hdr;
            header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_flags = 0;
        }
        // SAFETY: `received` holds BATCH headers, each pointing at a buffer and an address of
        // this batch with their true lengths.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.received.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(count as usize)
    }

    /// Answers the first `received` datagrams; how many answers are ready in `outgoing`.
    fn answer(
        &mut self,
        received: usize,
        responder: &Responder,
        mut limiter: Option<&mut RateLimiter>,
        cache: &mut ResponseCache,
    ) -> usize {
        let mut ready = 0;
        for i in 0..received {
            let Some(peer) = peer_address(&self.peers[i]) else {
                continue;
            };
            // A request longer than the buffer is read in part: parsed, it is malformed.
            let len = (self.received[i].msg_len as usize).min(MAX_REQUEST);
            let request = &self.requests[i][..len];
            let response = &mut self.responses[ready];
            let limiter = limiter.as_deref_mut();
            let answered = responder.respond_udp(request, peer.ip(), limiter, cache, response);
            if !answered {
                continue;
            }
            self.response_iov[ready] = libc::iovec {
                iov_base: response.as_mut_ptr().cast(),
                iov_len: response.len(),
            };
            let header = &mut self.outgoing[ready].msg_hdr;
            header.msg_iov = &mut self.response_iov[ready];
            header.msg_iovlen = 1;
            header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = self.received[i].msg_hdr.msg_namelen;
            ready += 1;
        }
        ready
    }

    /// Sends the first `ready` answers; a failed one is skipped (its client retries).
    fn send(&mut self, socket: &UdpSocket, ready: usize) {
        let mut sent = 0;
        while sent < ready {
            // SAFETY: `outgoing[sent..ready]` point at answers and addresses of this batch.
            let count = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.outgoing[sent..].as_mut_ptr(),
                    (ready - sent) as libc::c_uint,
                    0,
                )
            };
            if count <= 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::EINTR) {
                    tracing::debug!(%error, "cannot send a UDP response");
                    sent += 1;
                }
                continue;
            }
            sent += count as usize;
        }
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// The address a datagram came from.
fn peer_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}
