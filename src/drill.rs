//! `regiondns drill`: a failover rehearsal against a running server, as an operator runs one
//! before trusting it. It drains a region through the admin API, asks the server as clients
//! from given networks (ECS) until their answers move, undrains the region and waits until the
//! answers come back; it says how long each took, and fails when an answer did not move or
//! come back within the limit.
//!
//! It talks only to the server it is pointed at (the admin API over HTTP, DNS over UDP), reads
//! no zone file, and always undrains what it drained.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RData, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use ipnet::IpNet;
use tokio::net::UdpSocket;

/// How often the clients ask again while waiting for their answers to change.
const POLL: Duration = Duration::from_millis(100);
/// How long one DNS query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// What to rehearse.
#[derive(Debug, Clone)]
pub struct Drill {
    /// The admin API, e.g. `http://127.0.0.1:8053`.
    pub admin: String,
    pub token: Option<String>,
    pub dns: SocketAddr,
    pub zone: String,
    pub region: String,
    pub name: Name,
    pub qtype: RecordType,
    /// Client networks expected to be answered with `region`, sent as ECS.
    pub clients: Vec<IpNet>,
    /// How long an answer may take to move away, and to come back.
    pub limit: Duration,
}

/// What happened to one client network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome {
    pub client: IpNet,
    pub before: Vec<IpAddr>,
    /// The answer while drained, and how long after the drain it came.
    pub moved: Option<(Vec<IpAddr>, Duration)>,
    /// How long after the undrain the first answer came back.
    pub back: Option<Duration>,
}

impl ClientOutcome {
    pub fn passed(&self) -> bool {
        self.moved.is_some() && self.back.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("admin API {url}: {reason}")]
    Admin { url: String, reason: String },
    #[error("DNS at {addr}: {reason}")]
    Dns { addr: SocketAddr, reason: String },
}

impl Drill {
    /// What the drill would do, a line per step.
    pub fn plan(&self) -> Vec<String> {
        let clients: Vec<String> = self.clients.iter().map(ToString::to_string).collect();
        let ask = format!(
            "ask {} {} at {} as {} every {} ms",
            self.name,
            self.qtype,
            self.dns,
            clients.join(", "),
            POLL.as_millis()
        );
        vec![
            format!("{ask}, to learn their answers"),
            format!("POST {}", self.action_url("drain")),
            format!("{ask} until every answer moves (at most {:?})", self.limit),
            format!("POST {}", self.action_url("undrain")),
            format!(
                "{ask} until every answer is back (at most {:?})",
                self.limit
            ),
        ]
    }

    /// Runs the drill. The region is undrained whatever happens once it was drained.
    pub async fn run(&self) -> Result<Vec<ClientOutcome>, DrillError> {
        let mut outcomes = Vec::new();
        for &client in &self.clients {
            let before = self.ask(client).await?;
            outcomes.push(ClientOutcome {
                client,
                before,
                moved: None,
                back: None,
            });
        }
        self.post("drain").await?;
        let moved = self
            .until(&mut outcomes, |o, answer| o.before != *answer, true)
            .await;
        let undrained = self.post("undrain").await;
        moved?;
        undrained?;
        self.until(&mut outcomes, |o, answer| o.before == *answer, false)
            .await?;
        Ok(outcomes)
    }

    /// Asks every client whose outcome is still open until `done` says its answer is what is
    /// awaited, or the limit passes; records when (as `moved` or `back`).
    async fn until(
        &self,
        outcomes: &mut [ClientOutcome],
        done: impl Fn(&ClientOutcome, &Vec<IpAddr>) -> bool,
        moving: bool,
    ) -> Result<(), DrillError> {
        let start = Instant::now();
        loop {
            let mut waiting = false;
            for outcome in outcomes.iter_mut() {
                let open = if moving {
                    outcome.moved.is_none()
                } else {
                    outcome.moved.is_some() && outcome.back.is_none()
                };
                if !open {
                    continue;
                }
                let answer = self.ask(outcome.client).await?;
                if done(outcome, &answer) {
                    if moving {
                        outcome.moved = Some((answer, start.elapsed()));
                    } else {
                        outcome.back = Some(start.elapsed());
                    }
                } else {
                    waiting = true;
                }
            }
            if !waiting || start.elapsed() >= self.limit {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn action_url(&self, action: &str) -> String {
        format!(
            "{}/regions/{}/{}/{action}",
            self.admin.trim_end_matches('/'),
            self.zone,
            self.region
        )
    }

    async fn post(&self, action: &str) -> Result<(), DrillError> {
        let url = self.action_url(action);
        let error = |reason: String| DrillError::Admin {
            url: url.clone(),
            reason,
        };
        crate::health::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(QUERY_TIMEOUT * 5)
            .build()
            .map_err(|e| error(e.to_string()))?;
        let mut request = client.post(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| error(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(error(format!("{status}: {}", body.trim())));
        }
        Ok(())
    }

    /// The addresses the server answers `client`'s network with, sorted.
    async fn ask(&self, client: IpNet) -> Result<Vec<IpAddr>, DrillError> {
        let error = |reason: String| DrillError::Dns {
            addr: self.dns,
            reason,
        };
        let local = if self.dns.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| error(e.to_string()))?;
        let request = query(&self.name, self.qtype, client);
        let bytes = request.to_vec().map_err(|e| error(e.to_string()))?;
        // Connected: only the server's datagrams are read.
        socket
            .connect(self.dns)
            .await
            .map_err(|e| error(e.to_string()))?;
        socket
            .send(&bytes)
            .await
            .map_err(|e| error(e.to_string()))?;
        let mut buffer = vec![0; 4096];
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        // A datagram that is not the response to this query (another ID: a late answer to an
        // earlier one, or forged) is skipped, not taken for the answer.
        let response = loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
                .await
                .map_err(|_| error("no answer within 1 s".into()))?
                .map_err(|e| error(e.to_string()))?;
            match Message::from_vec(&buffer[..received]) {
                Ok(response) if response.metadata.id == request.metadata.id => break response,
                _ => continue,
            }
        };
        let mut addresses: Vec<IpAddr> = response
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        addresses.sort();
        Ok(addresses)
    }
}

/// A query for `name`/`qtype` as a resolver sends it for clients of `client` (ECS).
fn query(name: &Name, qtype: RecordType, client: IpNet) -> Message {
    let mut message = Message::query();
    message.metadata.id = rand_id();
    message.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Ok(subnet) = ClientSubnet::from_str(&client.to_string()) {
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    message.set_edns(edns);
    message
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 65_521) as u16
}
