//! Zone transfers to secondaries at other providers (RFC 5936 AXFR; RFC 1995 IXFR from the
//! journal of the last serials, the whole zone when a secondary is further behind). It owns who
//! may transfer (the zone's `transfer.to` and its TSIG key), what they receive ([`content`],
//! [`signed`] for a signed zone) and the messages that carry it, each signed. It runs on the
//! TCP path only, reads one routing snapshot per transfer and changes nothing; it never answers
//! an ordinary query.

pub mod content;
pub mod keys;
pub mod notify;
pub mod signed;
pub mod tsig;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, RData, Record, RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};

use crate::metrics::Metrics;
use crate::routing::{RoutingTable, Transferred, ZoneRoutes};
pub use keys::{TsigKey, TsigKeys};
use tsig::Signer;

/// A transferred zone's new serial, for its secondaries to hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialBump {
    pub zone: String,
    pub serial: u32,
}

/// A transfer message holds records up to about this many bytes (RFC 5936 leaves the size to
/// the server; BIND and Knot fill about 16 KB).
const MESSAGE_BYTES: usize = 16_000;

/// The UDP payload a refusal's OPT advertises: the DNS flag day's 1232 bytes, as the ordinary
/// path's default (this module answers only TCP transfers and signed queries).
const REFUSAL_PAYLOAD: u16 = 1232;

/// RFC 8914 Extended DNS Error "Prohibited".
const EDE_PROHIBITED: u16 = 18;

/// What answers transfer requests: the routing snapshot in force and the TSIG keys.
pub struct Transfers {
    table: Arc<ArcSwap<RoutingTable>>,
    keys: TsigKeys,
    metrics: Arc<Metrics>,
    /// Each secondary's last transfer, for the admin API.
    seen: Arc<ArcSwap<SecondaryLog>>,
}

/// The last transfer each secondary (by address) made of each zone (by origin).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SecondaryLog(pub BTreeMap<String, BTreeMap<IpAddr, LastTransfer>>);

/// A secondary's last transfer of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LastTransfer {
    pub kind: &'static str,
    /// The serial it took.
    pub serial: u32,
    /// When, in seconds since the epoch.
    pub at: u64,
}

/// The messages that answer a transfer request, in order, and what to log of it.
#[derive(Debug)]
pub struct Answered {
    pub messages: Vec<Vec<u8>>,
    pub outcome: Outcome,
}

/// How a zone went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Axfr,
    Ixfr,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Axfr => "AXFR",
            Kind::Ixfr => "IXFR",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The zone went out: whole or as differences since a serial, at its serial.
    Transferred {
        kind: Kind,
        zone: String,
        serial: u32,
        /// The secondary's serial, for an IXFR.
        since: Option<u32>,
        records: usize,
    },
    /// A signed query answered.
    Answered,
    /// Refused, and why.
    Refused(String),
}

impl Transfers {
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        keys: TsigKeys,
        metrics: Arc<Metrics>,
    ) -> Transfers {
        Transfers {
            table,
            keys,
            metrics,
            seen: Arc::default(),
        }
    }

    /// Each secondary's last transfer, as the admin API shows it.
    pub fn secondaries(&self) -> Arc<ArcSwap<SecondaryLog>> {
        Arc::clone(&self.seen)
    }

    /// Remembers that `peer` took `zone` at `serial` (a transfer is rare: the log is copied).
    fn remember(&self, peer: IpAddr, zone: &str, last: LastTransfer) {
        self.seen.rcu(|log| {
            let mut log = SecondaryLog::clone(log);
            log.0
                .entry(zone.to_owned())
                .or_default()
                .insert(peer.to_canonical(), last);
            log
        });
    }

    /// Counts `answered`, the answer to `request` (`None`: unreadable), in
    /// `regiondns_transfers_total`.
    fn counted(&self, request: Option<&Message>, answered: Answered) -> Answered {
        let asked = request.and_then(|r| r.queries.first());
        let kind = match (&answered.outcome, asked.map(Query::query_type)) {
            (Outcome::Transferred { kind, .. }, _) => kind.as_str(),
            (_, Some(RecordType::AXFR)) => "AXFR",
            (_, Some(RecordType::IXFR)) => "IXFR",
            _ => "SOA",
        };
        let ok = !matches!(answered.outcome, Outcome::Refused(_));
        let zone = asked.map_or(String::new(), |q| q.name().to_lowercase().to_string());
        self.metrics.count_transfer(&zone, kind, ok);
        answered
    }

    /// Answers `packet` from `peer` when it asks to transfer a zone that has `transfer`;
    /// `None` for any other request, which the ordinary path answers (a transfer of a zone
    /// without `transfer` is refused there, as it always was). `now` is seconds since the
    /// epoch.
    pub fn answer(&self, packet: &[u8], peer: IpAddr, now: u64) -> Option<Answered> {
        if !asks_for_transfer(packet) {
            return None;
        }
        let table = self.table.load();
        let request = Message::from_vec(packet).ok()?;
        let name = request.queries.first()?.name();
        table.zone_at(name)?.transfer.as_ref()?;
        let answered = answer(&request, packet, peer, &table, &self.keys, now);
        if let Outcome::Transferred {
            kind, zone, serial, ..
        } = &answered.outcome
        {
            let last = LastTransfer {
                kind: kind.as_str(),
                serial: *serial,
                at: now,
            };
            self.remember(peer, zone, last);
        }
        Some(self.counted(Some(&request), answered))
    }

    /// Answers a request signed with TSIG (its last record): a secondary's SOA query for a
    /// transferred zone, signed back; anything else is refused, saying why.
    pub fn answer_signed(&self, packet: &[u8], peer: IpAddr, now: u64) -> Answered {
        let Ok(request) = Message::from_vec(packet) else {
            return self.counted(None, refused_unread(packet));
        };
        let answered = self.signed(&request, packet, peer, now);
        self.counted(Some(&request), answered)
    }

    fn signed(&self, request: &Message, packet: &[u8], peer: IpAddr, now: u64) -> Answered {
        let table = self.table.load();
        let (query, zone) = match admitted(request, peer, &table) {
            Ok(admitted) => admitted,
            Err(why) => return refused(request, why),
        };
        if query.query_type() != RecordType::SOA {
            return refused(
                request,
                "only SOA queries and transfers are answered signed".into(),
            );
        }
        let Some(wanted) = zone.transfer.as_ref().and_then(|t| t.tsig.as_ref()) else {
            return refused(request, "the zone's transfers are not signed".into());
        };
        let mut signer = match tsig::verify(packet, &self.keys, wanted, now) {
            Ok(verified) => Signer::new(verified, now),
            Err(refusal) => return refused(request, refusal.to_string()),
        };
        let mut message = response(request, Some(query));
        message.insert_answers(zone.soa().records());
        let Ok(mut bytes) = message.to_vec() else {
            return refused(request, "the SOA could not be encoded".into());
        };
        if let Err(e) = signer.sign(&mut bytes) {
            return refused(request, format!("the answer could not be signed: {e}"));
        }
        Answered {
            messages: vec![bytes],
            outcome: Outcome::Answered,
        }
    }
}

/// RFC 1982 serial number arithmetic: whether `a` comes before `b`.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// Seconds since the epoch, as TSIG counts time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The question of `request` and the zone it names, when that zone is transferred to `peer`.
fn admitted<'r, 't>(
    request: &'r Message,
    peer: IpAddr,
    table: &'t RoutingTable,
) -> Result<(&'r Query, &'t ZoneRoutes), String> {
    let query = request
        .queries
        .first()
        .filter(|q| q.query_class == DNSClass::IN)
        .ok_or("a transfer asks one question of class IN")?;
    let name = query.name();
    let zone = table
        .zone_at(name)
        .ok_or_else(|| format!("{name} is not a zone served here"))?;
    let policy = zone
        .transfer
        .as_ref()
        .ok_or_else(|| format!("{name} is not transferred (no transfer in its zone file)"))?;
    if !policy
        .to
        .iter()
        .any(|net| net.contains(&peer.to_canonical()))
    {
        return Err(format!("{peer} is not in {name}'s transfer.to"));
    }
    Ok((query, zone))
}

fn refused_unread(packet: &[u8]) -> Answered {
    let id = packet
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let formerr = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
    Answered {
        messages: formerr.to_vec().into_iter().collect(),
        outcome: Outcome::Refused("unreadable request".into()),
    }
}

/// Whether `packet` is a query whose question asks AXFR or IXFR: read from the wire without
/// decoding the rest, as every TCP request is asked.
fn asks_for_transfer(packet: &[u8]) -> bool {
    let question = packet.get(4..6) == Some(&[0, 1]);
    let qtype = crate::wire::skip_name(packet, 12)
        .and_then(|at| packet.get(at..at + 2))
        .map(|t| u16::from_be_bytes([t[0], t[1]]));
    question
        && matches!(
            qtype.map(RecordType::from),
            Some(RecordType::AXFR | RecordType::IXFR)
        )
}

/// The answer to `request` (as received: `packet`), a transfer request from `peer`, from
/// `table`.
fn answer(
    request: &Message,
    packet: &[u8],
    peer: IpAddr,
    table: &RoutingTable,
    keys: &TsigKeys,
    now: u64,
) -> Answered {
    let (query, zone) = match admitted(request, peer, table) {
        Ok(admitted) => admitted,
        Err(why) => return refused(request, why),
    };
    let wanted = zone.transfer.as_ref().and_then(|p| p.tsig.as_ref());
    let signer = match wanted {
        None => None,
        Some(wanted) => match tsig::verify(packet, keys, wanted, now) {
            Ok(verified) => Some(Signer::new(verified, now)),
            Err(refusal) => return refused(request, refusal.to_string()),
        },
    };
    transferred(request, query, zone, signer)
}

/// The zone, SOA to SOA, in as many messages as it takes, each signed when `signer` is given.
fn transferred(
    request: &Message,
    query: &Query,
    zone: &ZoneRoutes,
    signer: Option<Signer<'_>>,
) -> Answered {
    // What went out under the zone's serial, frozen with it (the publisher keeps one for
    // every transferred zone); made now only for a table that was never settled.
    let made;
    let frozen = match zone.transferred.as_deref() {
        Some(frozen) => frozen,
        None => {
            made = Transferred {
                serial: soa_serial(zone.soa()).unwrap_or(0),
                records: content::zone_records(zone),
                soa: zone.soa().clone(),
                negative_soa: zone.negative_soa().clone(),
                journal: Vec::new(),
            };
            &made
        }
    };
    let since = (query.query_type() == RecordType::IXFR)
        .then(|| {
            request.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            })
        })
        .flatten();
    // The zone's records are borrowed, not copied: a big zone's transfer holds one message of
    // them at a time, and the bytes of those encoded.
    let difference = since.and_then(|since| incremental(frozen, since));
    let (kind, records): (Kind, Vec<&Record>) = match &difference {
        Some(records) => (Kind::Ixfr, records.iter().collect()),
        None => {
            let closing = frozen.records.first();
            (Kind::Axfr, frozen.records.iter().chain(closing).collect())
        }
    };
    let outcome = Outcome::Transferred {
        kind,
        zone: zone.data.origin_name().to_string(),
        serial: frozen.serial,
        since,
        records: records.len(),
    };
    packaged(request, query, &records, signer, outcome)
}

/// An IXFR's records from serial `since` (RFC 1995 4): the current SOA alone when `since` is
/// current; each difference since then, framed by its SOAs, when the journal goes back that
/// far; `None` otherwise (the whole zone goes instead).
fn incremental(frozen: &Transferred, since: u32) -> Option<Vec<Record>> {
    let current = frozen.records.first()?;
    if since == frozen.serial {
        return Some(vec![current.clone()]);
    }
    let start = frozen.journal.iter().position(|d| d.from == since)?;
    let chain = &frozen.journal[start..];
    let joined = chain.windows(2).all(|w| w[0].to == w[1].from);
    if !joined || chain.last().map(|d| d.to) != Some(frozen.serial) {
        return None;
    }
    let at = |serial: u32| {
        let mut soa = current.clone();
        if let RData::SOA(data) = &mut soa.data {
            data.serial = serial;
        }
        soa
    };
    let mut records = vec![current.clone()];
    for delta in chain {
        records.push(at(delta.from));
        records.extend(delta.removed.iter().cloned());
        records.push(at(delta.to));
        records.extend(delta.added.iter().cloned());
    }
    records.push(current.clone());
    Some(records)
}

/// `records` in as many messages as they take, each signed when `signer` is given.
fn packaged(
    request: &Message,
    query: &Query,
    records: &[&Record],
    mut signer: Option<Signer<'_>>,
    outcome: Outcome,
) -> Answered {
    let mut encoded = Vec::new();
    let mut message = response(request, Some(query));
    let mut size = 0;
    let mut encode = |message: Message| -> Result<(), String> {
        let mut bytes = message
            .to_vec()
            .map_err(|_| "the zone could not be encoded".to_owned())?;
        if let Some(signer) = signer.as_mut() {
            signer
                .sign(&mut bytes)
                .map_err(|e| format!("the transfer could not be signed: {e}"))?;
        }
        encoded.push(bytes);
        Ok(())
    };
    for &record in records {
        let length = encoded_len(record);
        if size + length > MESSAGE_BYTES && !message.answers.is_empty() {
            let full = std::mem::replace(&mut message, response(request, None));
            if let Err(why) = encode(full) {
                return refused(request, why);
            }
            size = 0;
        }
        size += length;
        message.add_answer(record.clone());
    }
    if let Err(why) = encode(message) {
        return refused(request, why);
    }
    Answered {
        messages: encoded,
        outcome,
    }
}

/// An empty authoritative response to `request`, with its question when given.
fn response(request: &Message, query: Option<&Query>) -> Message {
    let mut message = Message::response(request.metadata.id, OpCode::Query);
    message.metadata.message_type = MessageType::Response;
    message.metadata.authoritative = true;
    message.metadata.recursion_desired = request.metadata.recursion_desired;
    if let Some(query) = query {
        message.add_query(query.clone());
    }
    message
}

/// REFUSED, saying why (RFC 8914 "Prohibited"), unsigned: no secret is proven to a peer that
/// has not proven its own.
fn refused(request: &Message, why: String) -> Answered {
    let mut message = response(request, request.queries.first());
    message.metadata.authoritative = false;
    message.metadata.response_code = ResponseCode::Refused;
    // The reason goes where the request can read it: in EDNS, when it has EDNS (RFC 6891 7).
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(REFUSAL_PAYLOAD);
        let mut info = EDE_PROHIBITED.to_be_bytes().to_vec();
        info.extend_from_slice(why.as_bytes());
        edns.options_mut()
            .insert(EdnsOption::Unknown(u16::from(EdnsCode::Unknown(15)), info));
        message.set_edns(edns);
    }
    Answered {
        messages: message.to_vec().into_iter().collect(),
        outcome: Outcome::Refused(why),
    }
}

/// A record's size on the wire, uncompressed: an upper bound of what it adds to a message.
fn encoded_len(record: &Record) -> usize {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    match record.emit(&mut encoder) {
        Ok(()) => bytes.len(),
        Err(_) => MESSAGE_BYTES,
    }
}

fn soa_serial(soa: &crate::zone::RRset) -> Option<u32> {
    soa.records().first().and_then(|r| match &r.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Delta;
    use crate::test_records::soa;

    fn a(last: u8) -> Record {
        crate::test_records::a("www.example.", last)
    }

    fn serials(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.data {
                RData::SOA(soa) => format!("SOA {}", soa.serial),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn an_ixfr_sends_each_difference_framed_by_its_soas_or_nothing_it_cannot_join() {
        let delta = |from, to, removed: Vec<Record>, added: Vec<Record>| Delta {
            from,
            to,
            removed,
            added,
        };
        let frozen = Transferred {
            serial: 12,
            records: vec![soa(12), a(3)],
            soa: crate::zone::RRset::new(vec![soa(12)]),
            negative_soa: crate::zone::RRset::new(vec![soa(12)]),
            journal: vec![
                delta(10, 11, vec![a(1)], vec![a(2)]),
                delta(11, 12, vec![a(2)], vec![a(3)]),
            ],
        };
        let from_10 = incremental(&frozen, 10).expect("in the journal");
        assert_eq!(
            serials(&from_10),
            [
                "SOA 12",
                "SOA 10",
                "192.0.2.1",
                "SOA 11",
                "192.0.2.2",
                "SOA 11",
                "192.0.2.2",
                "SOA 12",
                "192.0.2.3",
                "SOA 12"
            ]
        );
        assert_eq!(
            serials(&incremental(&frozen, 12).expect("current")),
            ["SOA 12"]
        );
        assert_eq!(
            incremental(&frozen, 9),
            None,
            "older than the journal: AXFR"
        );
        let mut broken = frozen;
        broken.journal.remove(1);
        assert_eq!(incremental(&broken, 10), None, "a gap: AXFR");
    }
}
