//! One probe of a region's health endpoint: an HTTP request or a TCP connect, on a new
//! connection each time, bounded by the check's timeout. Every fault (refused, timeout, TLS,
//! name resolution, reset, garbage, oversized body) becomes a failed probe with a reason.

use std::{error::Error as _, time::Duration};

use reqwest::{StatusCode, header::RETRY_AFTER};
use tokio::{net::TcpStream, time::Instant};

use super::{
    load_report::{self, LoadReading},
    tracker::{Outcome, ProbeResult},
};
use crate::config::{Check, CheckTarget, HttpCheck, LoadSource, Secrets};

/// Bodies are read up to this size, no further: enough for `body_contains`, bounded for memory.
pub const MAX_BODY: usize = 64 * 1024;

/// A prepared probe: for HTTP, a client that never reuses a connection and ignores proxies.
pub struct Probe {
    check: Check,
    client: Option<reqwest::Client>,
}

impl Probe {
    /// `user_agent` tells the endpoint's logs which instance asked ([`user_agent`]).
    pub fn new(check: Check, user_agent: &str) -> Result<Probe, reqwest::Error> {
        let client = match check.target {
            CheckTarget::Http(_) => Some(http_client(check.timeout, user_agent)?),
            CheckTarget::Tcp { .. } => None,
        };
        Ok(Probe { check, client })
    }

    pub async fn run(&self) -> ProbeResult {
        let start = Instant::now();
        let (outcome, load) = match (&self.check.target, &self.client) {
            (CheckTarget::Http(http), Some(client)) => {
                bounded(self.check.timeout, http_probe(client, http)).await
            }
            (CheckTarget::Tcp { host, port }, _) => {
                bounded(self.check.timeout, async {
                    (tcp_probe(host, *port).await, None)
                })
                .await
            }
            (CheckTarget::Http(_), None) => (Outcome::Failure("no HTTP client".into()), None),
        };
        ProbeResult {
            outcome: redacted(outcome, &self.check.secrets),
            latency: start.elapsed(),
            load,
        }
    }
}

/// Reasons are shown (log, `/regions`, status page): what came from `${VAR}` is not.
fn redacted(outcome: Outcome, secrets: &Secrets) -> Outcome {
    match outcome {
        Outcome::Success => Outcome::Success,
        Outcome::Overloaded(text) => Outcome::Overloaded(secrets.redact(&text)),
        Outcome::Failure(text) => Outcome::Failure(secrets.redact(&text)),
        Outcome::Unknown(text) => Outcome::Unknown(secrets.redact(&text)),
    }
}

/// The probes' `User-Agent`: `regiondns/VERSION (NAME)`, NAME the instance's.
pub fn user_agent(instance: &str) -> String {
    format!("regiondns/{} ({instance})", env!("CARGO_PKG_VERSION"))
}

fn http_client(timeout: Duration, user_agent: &str) -> Result<reqwest::Client, reqwest::Error> {
    super::install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(user_agent)
        .build()
}

/// The probe's outcome and load reading, or a failure once `timeout` has passed.
async fn bounded(
    timeout: Duration,
    probe: impl Future<Output = (Outcome, LoadReading)>,
) -> (Outcome, LoadReading) {
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| {
            let failure = Outcome::Failure(format!("timeout after {} ms", timeout.as_millis()));
            (failure, None)
        })
}

async fn tcp_probe(host: &str, port: u16) -> Outcome {
    match TcpStream::connect((host, port)).await {
        Ok(_) => Outcome::Success,
        Err(e) => failure(&e, format!("TCP connect to {host}:{port}: {e}")),
    }
}

/// A failed probe: the region's failure, or [`Outcome::Unknown`] when the cause is a shortage
/// in this process (a crowd of clients holding every descriptor must not fake a failover).
fn failure(error: &(dyn std::error::Error + 'static), text: String) -> Outcome {
    if local_shortage(error) {
        Outcome::Unknown(format!("probe not made: {text}"))
    } else {
        Outcome::Failure(text)
    }
}

/// Whether `error` or one of its causes is this process running out of file descriptors,
/// socket buffers or memory.
fn local_shortage(error: &(dyn std::error::Error + 'static)) -> bool {
    let shortage = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
    std::iter::successors(Some(error), |&e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| shortage.contains(&code))
    })
}

/// The outcome, and the load the response reports when the check reads one.
async fn http_probe(client: &reqwest::Client, check: &HttpCheck) -> (Outcome, LoadReading) {
    let mut load = None;
    let outcome = http_outcome(client, check, &mut load).await;
    (outcome, load)
}

async fn http_outcome(
    client: &reqwest::Client,
    check: &HttpCheck,
    load: &mut LoadReading,
) -> Outcome {
    let mut request = client.request(check.method.clone(), check.url.clone());
    for (name, value) in &check.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &check.body {
        request = request.body(body.clone());
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            // The URL is left out of reasons: it may carry a secret, in any encoding.
            let e = e.without_url();
            return failure(&e, describe(&e));
        }
    };
    let status = response.status();
    if !expected(check, status) {
        // An overloaded endpoint's header still says how loaded it is.
        if let Some(LoadSource::Header(_)) = &check.load {
            *load = check
                .load
                .as_ref()
                .map(|s| load_report::read(s, response.headers(), None));
        }
        return unexpected(status, response.headers().contains_key(RETRY_AFTER));
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY => {
                return Outcome::Failure(format!("body over {} KiB", MAX_BODY / 1024));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                let e = e.without_url();
                return failure(&e, format!("reading the body: {}", describe(&e)));
            }
        }
    }
    *load = check
        .load
        .as_ref()
        .map(|s| load_report::read(s, &headers, Some(&body)));
    match &check.body_contains {
        Some(needle) if !String::from_utf8_lossy(&body).contains(needle.as_str()) => {
            Outcome::Failure(format!(
                "HTTP {} body does not contain {needle:?}",
                status.as_u16()
            ))
        }
        _ => Outcome::Success,
    }
}

fn expected(check: &HttpCheck, status: StatusCode) -> bool {
    match &check.expect {
        Some(codes) => codes.contains(&status.as_u16()),
        None => status.is_success(),
    }
}

/// An LLM endpoint shedding load is overloaded, not down: 429, or 503 with Retry-After.
fn unexpected(status: StatusCode, retry_after: bool) -> Outcome {
    let overloaded = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after);
    let text = format!("HTTP {}", status.as_u16());
    if overloaded {
        Outcome::Overloaded(text)
    } else {
        Outcome::Failure(text)
    }
}

/// The error and its causes, innermost last: "error sending request: ... Connection refused".
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if error.is_timeout() {
        text.insert_str(0, "timeout: ");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn running_out_of_descriptors_is_unknown_not_a_failure() {
        let emfile = Wrapped(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(matches!(
            failure(&emfile, "connect".into()),
            Outcome::Unknown(text) if text == "probe not made: connect"
        ));
        let refused = Wrapped(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            failure(&refused, "connect".into()),
            Outcome::Failure("connect".into())
        );
    }

    #[test]
    fn overload_is_429_or_503_with_retry_after() {
        assert!(matches!(
            unexpected(StatusCode::TOO_MANY_REQUESTS, false),
            Outcome::Overloaded(_)
        ));
        assert!(matches!(
            unexpected(StatusCode::SERVICE_UNAVAILABLE, true),
            Outcome::Overloaded(_)
        ));
        assert!(matches!(
            unexpected(StatusCode::SERVICE_UNAVAILABLE, false),
            Outcome::Failure(_)
        ));
        assert_eq!(
            unexpected(StatusCode::INTERNAL_SERVER_ERROR, true),
            Outcome::Failure("HTTP 500".into())
        );
    }
}
