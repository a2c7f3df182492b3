//! Test harness: runs the real `regiondns` binary on a temporary zone directory and a generated
//! GeoIP database, and queries it over real sockets (a Rust client, or `dig`).
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod endpoint;
pub mod fuzz_checks;
pub mod query_path;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    str::FromStr,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    },
};
use mmdb_writer::{Writer, ipnet::IpNet};
use regiondns::{
    cli::{self, Cli, Command as Cmd},
    server,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const BINARY: &str = env!("CARGO_BIN_EXE_regiondns");

/// Virginia, always up, and Dublin, checked at `check_url` every 100 ms (fall 2, rise 2), both
/// answering api.llm.example.com; `extra` is added at the end (more top-level keys).
pub fn dublin_checked_zone(check_url: &str, extra: &str) -> String {
    format!(
        r#"
origin: llm.example.com.
soa: {{ primary: ns1, contact: hostmaster@example.com }}
ns: [ns1]
records:
  ns1: {{ A: [198.51.100.53] }}
regions:
  us-east: {{ location: {{ lat: 37.4, lon: -79.1 }}, addresses: [203.0.113.10] }}
  eu-west:
    location: {{ lat: 53.3, lon: -6.3 }}
    addresses: [203.0.113.20]
    check: {{ http: "{check_url}", interval: 100ms, timeout: 80ms, fall: 2, rise: 2 }}
services:
  api: {{ regions: [us-east, eu-west] }}
{extra}"#
    )
}

/// The zone used by most tests: the README's example, plus a region without IPv6.
pub const ZONE: &str = r#"
origin: llm.example.com.
ttl: 3600
soa:
  primary: ns1.llm.example.com.
  contact: hostmaster.example.com.
  serial: 2026112401
  negative_ttl: 30
ns: [ns1.llm.example.com., ns2.llm.example.com.]
records:
  ns1: { A: [198.51.100.53], AAAA: ["2001:db8::53"] }
  ns2: { A: [198.51.100.54] }
  "@":
    TXT: ["v=spf1 -all"]
    MX: ["10 mail.example.com."]
    CAA: ['0 issue "letsencrypt.org"']
  docs: { CNAME: docs.example.net. }
  10.in-addr: { PTR: host.example.net. }
  _https._tcp.api: { SRV: ["10 5 443 api.llm.example.com."] }
  sub: { NS: [ns.sub, ns.other.example.net.] }
  ns.sub: { A: [192.0.2.53] }
regions:
  us-east:
    location: { lat: 37.4, lon: -79.1 }
    addresses: [203.0.113.10, "2001:db8:10::1"]
  eu-west:
    location: { lat: 53.3, lon: -6.3 }
    addresses: [203.0.113.20, "2001:db8:20::1"]
  ap-northeast:
    location: { lat: 35.7, lon: 139.7 }
    addresses: [203.0.113.30, 203.0.113.31]
services:
  api:
    ttl: 20
    regions: [us-east, eu-west, ap-northeast]
  solo:
    regions: [eu-west]
"#;

/// GeoIP fixture networks: (network, record). Both record shapes, and a country-only one.
pub fn fixture_networks() -> Vec<(&'static str, Value)> {
    let city = |country: &str, continent: &str, lat: f64, lon: f64| {
        json!({"country": {"iso_code": country}, "continent": {"code": continent},
               "location": {"latitude": lat, "longitude": lon, "accuracy_radius": 50}})
    };
    vec![
        ("133.242.0.0/16", city("JP", "AS", 35.69, 139.69)),
        ("81.2.69.0/24", city("GB", "EU", 51.51, -0.09)),
        ("8.8.8.0/24", city("US", "NA", 37.75, -97.82)),
        ("2001:218::/32", city("JP", "AS", 35.69, 139.69)),
        ("2a02:cf40::/29", city("NO", "EU", 62.0, 10.0)),
        (
            "1.0.0.0/24",
            json!({"country_code": "AU", "latitude": -33.87, "longitude": 151.21}),
        ),
        ("89.160.0.0/16", json!({"country_code": "SE"})),
    ]
}

/// Writes an `.mmdb` file (IPv6 tree, IPv4 under ::/96) holding `networks`.
pub fn write_mmdb(path: &Path, networks: &[(&str, Value)]) {
    let mut writer = Writer::builder("GeoIP2-City")
        .description(&[("en", "regiondns test fixture")])
        .build_epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .build();
    for (network, record) in networks {
        let network: IpNet = network.parse().expect("fixture network");
        writer.insert(network, record).expect("insert");
    }
    std::fs::write(path, writer.to_bytes().expect("encode mmdb")).expect("write mmdb");
}

/// A temporary directory holding `zones/llm.yaml` (the given zone) and `geo.mmdb` (the fixture
/// GeoIP database).
pub fn zone_dir(zone: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("zones dir");
    std::fs::write(dir.path().join("zones/llm.yaml"), zone).expect("write zone");
    write_mmdb(&dir.path().join("geo.mmdb"), &fixture_networks());
    dir
}

/// `serve` on a [`zone_dir`], on a kernel-chosen port of 127.0.0.1, followed by `extra`.
pub fn serve_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let zones = path_arg(&dir.join("zones"));
    let geoip = path_arg(&dir.join("geo.mmdb"));
    let args = [
        "serve",
        "--zones",
        &zones,
        "--geoip",
        &geoip,
        "--listen",
        "127.0.0.1:0",
    ];
    args.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// A running server: `server::run` in this process (most tests), or the real binary (tests of
/// signals, flags and the environment). Stopped on drop.
pub struct Server {
    running: Running,
    pub addr: SocketAddr,
    /// The admin API's address, when it listens.
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

enum Running {
    Process {
        child: Child,
        /// Reads stderr into `log` until the process closes it.
        reader: Option<std::thread::JoinHandle<()>>,
    },
    InProcess {
        stop: CancellationToken,
        /// The runtime's thread; it returns what `server::run` returned.
        thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    },
}

impl Server {
    /// Serves `zone` in this process (`server::run` on its own runtime, set up from the same
    /// command line as the binary's) with the fixture GeoIP database on 127.0.0.1, ports chosen
    /// by the kernel and known from the sockets, with the admin API.
    pub fn start(zone: &str) -> Server {
        Server::start_with(zone, &[])
    }

    /// As [`Server::start`], with the admin API's token.
    pub fn start_with_token(zone: &str, token: &str) -> Server {
        let dir = zone_dir(zone);
        let file = dir.path().join("admin-token");
        std::fs::write(&file, token).expect("write token");
        let file = path_arg(&file);
        Server::in_process(dir, &["--admin-token-file", &file])
    }

    /// As [`Server::start`], with more `serve` flags.
    pub fn start_with(zone: &str, flags: &[&str]) -> Server {
        Server::in_process(zone_dir(zone), flags)
    }

    /// As [`Server::start_with`], on a directory the test prepared as [`zone_dir`] does.
    pub fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Server {
        Server::in_process(dir, flags)
    }

    fn in_process(dir: tempfile::TempDir, flags: &[&str]) -> Server {
        let mut argv = vec!["regiondns".to_string()];
        argv.extend(serve_args(dir.path(), &["--admin", "127.0.0.1:0"]));
        argv.extend(flags.iter().map(|f| f.to_string()));
        let Some(Cmd::Serve(args)) = <Cli as clap::Parser>::parse_from(argv).command else {
            panic!("serve arguments");
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let dispatch = log_dispatch(Arc::clone(&log));
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let _log = tracing::dispatcher::set_default(&dispatch);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || {
                    // Each runtime thread logs into this server's log for its whole life.
                    std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                })
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let started = async {
                    let config = cli::server_config(&args)?;
                    let listeners = cli::bind(&args).await?;
                    anyhow::Ok((config, listeners))
                };
                let (config, listeners) = match started.await {
                    Ok(started) => started,
                    Err(error) => {
                        let _ = ready_tx.send(None);
                        return Err(format!("{error:#}"));
                    }
                };
                let dns = listeners.dns.local_addrs()[0];
                let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
                let _ = ready_tx.send(Some((dns, admin)));
                server::run(config, listeners, stopping)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let Ok(Some((addr, admin))) = ready_rx.recv_timeout(Duration::from_secs(20)) else {
            let outcome = thread.join();
            panic!("server did not start: {outcome:?}\n{}", lines(&log));
        };
        let server = Server {
            running: Running::InProcess {
                stop,
                thread: Some(thread),
            },
            addr,
            admin,
            dir,
            log,
        };
        // The sockets are bound; the server answers once it says where it listens, after the
        // GeoIP map is compiled (a real City database on the debug build, two tests at a time
        // on CI's two cores, takes more than 5 s).
        until_logged_within(&server, "listening on", 1, Duration::from_secs(60));
        server
    }

    /// Runs the binary on `zone` as `start` does in-process (for signal tests).
    pub fn binary(zone: &str) -> Server {
        let dir = zone_dir(zone);
        let args = serve_args(dir.path(), &["--admin", "127.0.0.1:0"]);
        Server::spawn(dir, &args, None)
    }

    /// Runs the binary with `args` in `cwd` (default: the temporary directory).
    pub fn spawn(dir: tempfile::TempDir, args: &[String], cwd: Option<&Path>) -> Server {
        Server::spawn_with_env(dir, args, cwd, &[])
    }

    /// As [`Server::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        dir: tempfile::TempDir,
        args: &[String],
        cwd: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(BINARY)
            .args(args)
            .current_dir(cwd.unwrap_or(dir.path()))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn regiondns");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let collected = Arc::clone(&log);
        let admin = Arc::new(Mutex::new(None));
        let admin_seen = Arc::clone(&admin);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("admin API listening on http://").nth(1) {
                    *admin_seen.lock().expect("admin lock") = addr.trim().parse().ok();
                } else if let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = ready_tx.send(addr.to_string());
                }
                collected.lock().expect("log lock").push(line);
            }
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", lines(&log));
            }
        };
        let admin = *admin.lock().expect("admin lock");
        Server {
            running: Running::Process {
                child,
                reader: Some(reader),
            },
            addr,
            admin,
            dir,
            log,
        }
    }

    pub fn log(&self) -> String {
        lines(&self.log)
    }

    /// The binary's process ID (only a server started as a process has one).
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process { child, .. } => child.id(),
            Running::InProcess { .. } => panic!("an in-process server has no process of its own"),
        }
    }

    /// Sends the binary a signal (`HUP`, `TERM`), as an operator's `kill -SIGNAL` does.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    /// Whether the server is still running (it must survive whatever the test sent).
    pub fn is_running(&mut self) -> bool {
        match &mut self.running {
            Running::Process { child, .. } => matches!(child.try_wait(), Ok(None)),
            Running::InProcess { thread, .. } => thread.as_ref().is_some_and(|t| !t.is_finished()),
        }
    }

    /// Waits up to `limit` for the binary to exit; its status, or `None` if it still runs.
    /// Once it has exited, the log holds every line it wrote.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let Running::Process { child, reader } = &mut self.running else {
            panic!("only a process exits");
        };
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                if let Some(reader) = reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks the server to stop as an operator does: SIGTERM, or the stop token in-process.
    pub fn begin_stop(&self) {
        match &self.running {
            Running::Process { .. } => self.signal("TERM"),
            Running::InProcess { stop, .. } => stop.cancel(),
        }
    }

    /// Stops the server ([`Server::begin_stop`]) and returns how it ended and its whole log:
    /// what it logged is then complete, with nothing left to race.
    pub fn stop(mut self) -> (Result<(), String>, String) {
        self.begin_stop();
        let ended = match &mut self.running {
            Running::Process { .. } => {
                let status = self.wait_exit(Duration::from_secs(10));
                let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM"));
                status.success().then_some(()).ok_or(format!("{status:?}"))
            }
            Running::InProcess { stop, thread } => {
                stop.cancel();
                let thread = thread.take().expect("running");
                thread
                    .join()
                    .unwrap_or_else(|_| Err("the server thread panicked".into()))
            }
        };
        (ended, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess { stop, thread } => {
                stop.cancel();
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

fn lines(log: &Mutex<Vec<String>>) -> String {
    log.lock().expect("log lock").join("\n")
}

/// A tracing dispatcher that writes each log line (text, no colours) into `log`.
fn log_dispatch(log: Arc<Mutex<Vec<String>>>) -> tracing::Dispatch {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || LineWriter {
            log: Arc::clone(&log),
            line: Vec::new(),
        })
        .finish();
    tracing::Dispatch::new(subscriber)
}

/// Collects one formatted event and appends its lines to the log when dropped.
struct LineWriter {
    log: Arc<Mutex<Vec<String>>>,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        if let Ok(mut log) = self.log.lock() {
            log.extend(text.lines().map(str::to_owned));
        }
    }
}

/// A loopback address no other test in this run uses (all of 127.0.0.0/8 is this host's): an
/// external server listening there cannot find its port taken by another test's port 0.
pub fn own_loopback() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = 100 + std::process::id() % 100;
    std::net::Ipv4Addr::new(127, run as u8, (n / 250) as u8, (n % 250 + 2) as u8).into()
}

pub fn path_arg(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

/// A query for `name`/`qtype`; with EDNS (payload 1232) and an ECS option when `subnet` is set.
pub fn query(name: &str, qtype: RecordType, subnet: Option<&str>) -> Message {
    let mut message = Message::query();
    message.metadata.id = rand_id();
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(subnet) = subnet {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let subnet = ClientSubnet::from_str(subnet).expect("subnet");
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        message.set_edns(edns);
    }
    message
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 65_521) as u16
}

pub fn udp_exchange_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let local = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).expect("bind udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Connected, so that a late answer another test's server sent to this port, when it was
    // another socket's, is not taken for this one (CI saw one).
    socket.connect(addr).expect("connect udp");
    socket.send(bytes).expect("send");
    let mut buffer = vec![0; 65_535];
    match socket.recv(&mut buffer) {
        Ok(n) => Some(buffer[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn tcp_exchange_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let length = u16::try_from(bytes.len()).expect("length");
    stream
        .write_all(&length.to_be_bytes())
        .expect("write length");
    stream.write_all(bytes).expect("write");
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).expect("read length");
    let mut response = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut response).expect("read response");
    response
}

pub fn udp(addr: SocketAddr, message: &Message) -> Message {
    let bytes = udp_exchange_raw(addr, &message.to_vec().expect("encode")).expect("a UDP response");
    let response = Message::from_vec(&bytes).expect("decode response");
    assert_eq!(response.metadata.id, message.metadata.id);
    response
}

pub fn tcp(addr: SocketAddr, message: &Message) -> Message {
    let bytes = tcp_exchange_raw(addr, &message.to_vec().expect("encode"));
    Message::from_vec(&bytes).expect("decode response")
}

/// The answer's addresses, in order, as text.
pub fn addresses(response: &Message) -> Vec<String> {
    response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(aaaa) => Some(aaaa.to_string()),
            _ => None,
        })
        .collect()
}

/// (source prefix, scope prefix) of the response's ECS option.
pub fn ecs(response: &Message) -> Option<(u8, u8)> {
    match response.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(subnet) => Some((subnet.source_prefix(), subnet.scope_prefix())),
        _ => None,
    }
}

pub fn record_types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(Record::record_type).collect()
}

/// Runs `dig` against the server (installed by scripts/test) and returns its output.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig must be installed (scripts/test installs bind9-dnsutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs the binary to completion (for `check` and failing starts).
pub fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], cwd: &Path) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn regiondns");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("regiondns {args:?} did not exit");
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A plain HTTP/1.1 request to the admin API: (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_with_body(addr, method, path, headers, "")
}

/// [`http`] with a request body.
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let length = body.len();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {length}\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls until a client in `subnet` gets `expected` for api.llm.example.com A; returns how long
/// it took, or `None` after `limit`.
pub fn until_answered(
    server: &Server,
    subnet: &str,
    expected: &[&str],
    limit: Duration,
) -> Option<Duration> {
    until_name_answered(server, "api.llm.example.com.", subnet, expected, limit)
}

/// [`until_answered`] for the A records of `name`.
pub fn until_name_answered(
    server: &Server,
    name: &str,
    subnet: &str,
    expected: &[&str],
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let response = udp(server.addr, &query(name, RecordType::A, Some(subnet)));
        if addresses(&response) == expected {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A health endpoint on 127.0.0.1 that answers 200 with `X-Load`: the figure given for the
/// instance whose probe asks (known by the name in its `User-Agent`), else `otherwise`. Its URL.
pub fn load_endpoint(
    figures: &'static [(&'static str, &'static str)],
    otherwise: &'static str,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut request = [0; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]).to_lowercase();
            let load = figures
                .iter()
                .find(|(name, _)| request.contains(&format!("({name})")))
                .map_or(otherwise, |(_, load)| load);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nX-Load: {load}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    format!("http://{addr}/health")
}

/// A region's load and the share of its clients api.llm.example.com. keeps, as the server's
/// `GET /regions` shows them.
pub fn region_load(server: &Server, region: &str) -> (Option<f64>, f64) {
    let (_, body) = http(server.admin.expect("admin"), "GET", "/regions", &[]);
    let body: Value = serde_json::from_str(&body).expect("regions JSON");
    let regions = body["regions"].as_array().expect("regions");
    let found = regions
        .iter()
        .find(|r| r["region"] == region)
        .expect("the region");
    let kept = found["kept"]["api.llm.example.com."]
        .as_f64()
        .unwrap_or(1.0);
    (found["load"].as_f64(), kept)
}

/// Waits up to 5 s until the server's log holds `text` at least `times` times.
pub fn until_logged(server: &Server, text: &str, times: usize) {
    until_logged_within(server, text, times, Duration::from_secs(5));
}

/// As [`until_logged`], waiting up to `limit`.
pub fn until_logged_within(server: &Server, text: &str, times: usize, limit: Duration) {
    let start = Instant::now();
    while server.log().matches(text).count() < times {
        assert!(
            start.elapsed() < limit,
            "never logged {text:?} {times} time(s):\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
