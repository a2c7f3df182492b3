//! A health endpoint served by the test itself on 127.0.0.1, switchable between the behaviours
//! a region's real endpoint can show.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with body "ok".
    Ok,
    /// 503 without Retry-After: down.
    Fail,
    /// 429: overloaded.
    TooMany,
    /// 503 with Retry-After: overloaded.
    RetryAfter,
    /// 200 after 300 ms.
    Slow,
    /// Accepts and never answers.
    Hang,
    /// The port is closed: connections are refused.
    Closed,
    /// Promises 1000 bytes of body, sends 7, closes.
    Reset,
    /// Not HTTP at all.
    Garbage,
    /// 200 with a 100 KB body.
    Huge,
    /// 200 with body "nope".
    WrongBody,
    /// 503 and 200 in turn, one per request.
    Flap,
}

const MODES: [Mode; 12] = [
    Mode::Ok,
    Mode::Fail,
    Mode::TooMany,
    Mode::RetryAfter,
    Mode::Slow,
    Mode::Hang,
    Mode::Closed,
    Mode::Reset,
    Mode::Garbage,
    Mode::Huge,
    Mode::WrongBody,
    Mode::Flap,
];

pub struct Endpoint {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    requests: Arc<AtomicUsize>,
    last_request: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    pub fn start(mode: Mode) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
        let addr = listener.local_addr().expect("endpoint address");
        let endpoint = Endpoint {
            addr,
            mode: Arc::new(AtomicU8::new(mode as u8)),
            requests: Arc::new(AtomicUsize::new(0)),
            last_request: Arc::new(Mutex::new(String::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, requests, last, stop) = (
            Arc::clone(&endpoint.mode),
            Arc::clone(&endpoint.requests),
            Arc::clone(&endpoint.last_request),
            Arc::clone(&endpoint.stop),
        );
        std::thread::spawn(move || {
            accept_loop(Some(listener), addr, &mode, &requests, &last, &stop)
        });
        endpoint
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The last request received, head and body, as text.
    pub fn last_request(&self) -> String {
        self.last_request.lock().expect("lock").clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn mode_of(mode: &AtomicU8) -> Mode {
    MODES[usize::from(mode.load(Ordering::SeqCst))]
}

fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    mode: &Arc<AtomicU8>,
    requests: &Arc<AtomicUsize>,
    last: &Arc<Mutex<String>>,
    stop: &AtomicBool,
) {
    let mut accepted = 0;
    while !stop.load(Ordering::SeqCst) {
        if mode_of(mode) == Mode::Closed {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(open) = listener.as_ref() else {
            // Reopen the same port (std sets SO_REUSEADDR on Unix).
            listener = TcpListener::bind(addr).ok();
            if let Some(l) = &listener {
                l.set_nonblocking(true).expect("nonblocking");
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        open.set_nonblocking(true).expect("nonblocking");
        match open.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let (mode, last, requests) =
                    (mode_of(mode), Arc::clone(last), Arc::clone(requests));
                std::thread::spawn(move || respond(stream, mode, accepted - 1, &last, &requests));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Reads the request, records it (then counts it, so that a counted request can be looked at),
/// and answers as `mode` says.
fn respond(
    mut stream: TcpStream,
    mode: Mode,
    n: usize,
    last: &Mutex<String>,
    requests: &AtomicUsize,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    *last.lock().expect("lock") = read_request(&mut stream);
    requests.fetch_add(1, Ordering::SeqCst);
    let reply: Vec<u8> = match mode {
        Mode::Ok => http(200, "", "ok"),
        Mode::Fail => http(503, "", "down"),
        Mode::TooMany => http(429, "", "slow down"),
        Mode::RetryAfter => http(503, "Retry-After: 1\r\n", "busy"),
        Mode::Slow => {
            std::thread::sleep(Duration::from_millis(300));
            http(200, "", "ok")
        }
        Mode::Hang => {
            std::thread::sleep(Duration::from_secs(5));
            return;
        }
        Mode::Closed => return,
        Mode::Reset => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial".to_vec(),
        Mode::Garbage => b"GARBAGE GARBAGE\r\n\r\n".to_vec(),
        Mode::Huge => http(200, "", &"x".repeat(100_000)),
        Mode::WrongBody => http(200, "", "nope"),
        Mode::Flap if n.is_multiple_of(2) => http(503, "", "down"),
        Mode::Flap => http(200, "", "ok"),
    };
    let _ = stream.write_all(&reply);
}

fn http(status: u16, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads the head and as much body as Content-Length says.
fn read_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        // A TLS handshake (record type 22) to this plain-HTTP port: answer in plain text at once.
        if data.first() == Some(&0x16) {
            return "TLS handshake".into();
        }
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&data).to_string(),
            Ok(n) => data.extend_from_slice(&buffer[..n]),
        }
    }
}
