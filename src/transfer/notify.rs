//! NOTIFY (RFC 1996): each serial bump of a transferred zone is told to the zone's `notify`
//! targets at once, signed when the zone names a TSIG key, and retried with backoff until a
//! target answers. It reads the routing snapshot for the targets and the SOA; it never
//! answers a query. An inbound NOTIFY stays NOTIMP (the ordinary path).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{RecordType, TSigner},
};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinSet, time::timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{SerialBump, TsigKeys, unix_now};
use crate::{metrics::Metrics, routing::RoutingTable};

/// How long a target has to answer one NOTIFY, and how many are sent before giving up (the
/// wait doubling each time: 1 + 2 + 4 + 8 + 16 s; RFC 1996 3.6 leaves it to the server).
const FIRST_WAIT: Duration = Duration::from_secs(1);
const TRIES: u32 = 5;

/// Sends a NOTIFY for every bump from `bumps` until `shutdown`.
pub async fn run(
    table: Arc<ArcSwap<RoutingTable>>,
    keys: TsigKeys,
    metrics: Arc<Metrics>,
    mut bumps: mpsc::Receiver<SerialBump>,
    shutdown: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut sending = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            Some(bump) = bumps.recv() => {
                for (target, notify) in notifies(&table.load(), &keys, &bump) {
                    sending.spawn(send(target, notify, bump.clone(), Arc::clone(&metrics)));
                }
            }
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
            else => return Ok(()),
        }
    }
}

/// A NOTIFY of `bump` for each of its zone's targets, signed when the zone names a key.
fn notifies(
    table: &RoutingTable,
    keys: &TsigKeys,
    bump: &SerialBump,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let origin: Option<hickory_proto::rr::Name> = bump.zone.parse().ok();
    let zone = origin.and_then(|origin| table.zone_at(&origin));
    let Some((zone, policy)) = zone.and_then(|z| Some((z, z.transfer.as_ref()?))) else {
        return Vec::new();
    };
    let signer = policy.tsig.as_ref().and_then(|name| {
        let key = keys.get(name)?;
        TSigner::new(
            key.secret().to_vec(),
            key.algorithm.clone(),
            key.name.clone(),
            super::tsig::FUDGE,
        )
        .ok()
    });
    policy
        .notify
        .iter()
        .filter_map(|&target| {
            let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Notify);
            message.metadata.authoritative = true;
            message.add_query(Query::query(
                zone.data.origin_name().clone(),
                RecordType::SOA,
            ));
            message.insert_answers(zone.soa().records());
            if let Some(signer) = &signer
                && message.finalize(signer, unix_now()).is_err()
            {
                return None;
            }
            Some((target, message.to_vec().ok()?))
        })
        .collect()
}

fn rand_id() -> u16 {
    let mut id = [0; 2];
    let random = ring::rand::SystemRandom::new();
    let _ = ring::rand::SecureRandom::fill(&random, &mut id);
    u16::from_be_bytes(id)
}

/// Sends `notify` to `target` until it answers, [`TRIES`] times at most.
async fn send(target: SocketAddr, notify: Vec<u8>, bump: SerialBump, metrics: Arc<Metrics>) {
    let bind = match target {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    };
    let Ok(socket) = UdpSocket::bind(bind).await else {
        warn!(
            "NOTIFY of {} serial {} to {target}: no socket",
            bump.zone, bump.serial
        );
        return;
    };
    let id = u16::from_be_bytes([notify[0], notify[1]]);
    let started = Instant::now();
    let mut wait = FIRST_WAIT;
    for _ in 0..TRIES {
        let sent = socket.send_to(&notify, target).await.is_ok();
        if sent {
            metrics.count_notify(&bump.zone, "sent");
        }
        if !sent {
            tokio::time::sleep(wait).await;
        } else if let Ok(Some(rcode)) = timeout(wait, answer(&socket, target, id)).await {
            let took = started.elapsed().as_millis();
            metrics.count_notify(&bump.zone, "acknowledged");
            match rcode {
                ResponseCode::NoError => info!(
                    "NOTIFY of {} serial {} acknowledged by {target} in {took} ms",
                    bump.zone, bump.serial
                ),
                other => warn!(
                    "NOTIFY of {} serial {} answered {other} by {target}",
                    bump.zone, bump.serial
                ),
            }
            return;
        }
        wait *= 2;
    }
    metrics.count_notify(&bump.zone, "failed");
    warn!(
        "NOTIFY of {} serial {} to {target}: no answer after {TRIES} tries",
        bump.zone, bump.serial
    );
}

/// The rcode of `target`'s answer to the NOTIFY numbered `id` (other datagrams are ignored).
async fn answer(socket: &UdpSocket, target: SocketAddr, id: u16) -> Option<ResponseCode> {
    let mut buf = vec![0; 4096];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.ok()?;
        let Some(message) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
            continue;
        };
        if from == target
            && message.metadata.id == id
            && message.metadata.message_type == MessageType::Response
        {
            return Some(message.metadata.response_code);
        }
    }
}
