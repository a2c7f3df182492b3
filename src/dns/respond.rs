//! From request bytes to response bytes: parse, check, find the client's address, ask
//! [`resolve`] for the answer, write it with the right EDNS, ECS scope and truncation.
//!
//! [`Responder::respond`] is the whole query path, and the same for UDP and TCP: it reads one
//! routing snapshot and one GeoIP snapshot, writes into the caller's buffer and takes no lock.

use std::{net::IpAddr, sync::Arc};

use crate::counter::QueryCounter;
use crate::transfer::{Transfers, unix_now};
use arc_swap::{ArcSwap, Guard};
use hickory_proto::rr::RecordType;

use super::{
    RateKey, RateLimiter, ResponseClass, Verdict,
    cache::{ResponseCache, SourceNetwork},
    cookie::{self, ServerCookies},
};
use crate::{
    answer::{AddressSource, Answer, COUNTERS, ClientAddress, resolve_into},
    explain,
    geo::LookupCounters,
    metrics::Metrics,
    routing::RoutingTable,
    wire::{
        self, EdnsRequest, EdnsResponse, Malformed, NameBuf, Rcode, Request, ResponseWriter,
        WireRRset, encode_rrset, opt_len,
    },
};

/// The UDP payload size regiondns offers and accepts at most (DNS flag day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP response holds at most 512 bytes (RFC 1035 4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

/// How a request came in: it sets the response's size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers requests from the current routing snapshot.
pub struct Responder {
    table: Arc<ArcSwap<RoutingTable>>,
    /// Zone transfers, and the requests signed with TSIG.
    transfers: Transfers,
    max_udp_payload: u16,
    nsid: Option<Box<[u8]>>,
    errors: ErrorCounters,
    /// Responses copied from a worker's [`ResponseCache`].
    remembered: QueryCounter,
    lookups: LookupCounters,
    /// Server cookies (RFC 7873, 9018); none when the system gave no random secret.
    cookies: Option<ServerCookies>,
    /// Queries with a cookie: valid, new (a client cookie alone), invalid.
    cookie_counters: [QueryCounter; 3],
}

/// Where to remember a response: a worker's cache, under the key made for the request, and
/// the snapshot the cache was asked with (the response is made from the same one).
struct Remember<'c> {
    cache: &'c mut ResponseCache,
    hash: u64,
    snapshot: Guard<Arc<RoutingTable>>,
}

/// Responses to requests that reach no zone.
struct ErrorCounters {
    refused: QueryCounter,
    formerr: QueryCounter,
    notimp: QueryCounter,
    badvers: QueryCounter,
    servfail: QueryCounter,
    /// Packets given no answer at all.
    dropped: QueryCounter,
}

impl ErrorCounters {
    fn for_rcode(&self, rcode: Rcode) -> &QueryCounter {
        match rcode {
            Rcode::FormErr => &self.formerr,
            Rcode::NotImp => &self.notimp,
            Rcode::BadVers => &self.badvers,
            Rcode::ServFail => &self.servfail,
            _ => &self.refused,
        }
    }
}

impl Responder {
    /// `nsid` is sent to clients that ask for it (RFC 5001), e.g. the host's name.
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        transfers: Transfers,
        metrics: &Metrics,
        max_udp_payload: u16,
        nsid: Option<&str>,
    ) -> Responder {
        let counter = |rcode| metrics.query_counter("", "", "", rcode);
        Responder {
            table,
            transfers,
            max_udp_payload: max_udp_payload.max(CLASSIC_UDP_PAYLOAD),
            nsid: nsid.map(|text| text.as_bytes().into()),
            errors: ErrorCounters {
                refused: counter("REFUSED"),
                formerr: counter("FORMERR"),
                notimp: counter("NOTIMP"),
                badvers: counter("BADVERS"),
                servfail: counter("SERVFAIL"),
                dropped: metrics.dropped_counter(),
            },
            remembered: metrics.remembered_responses_counter(),
            lookups: metrics.geoip_lookup_counters(),
            cookies: ServerCookies::random()
                .inspect_err(|_| tracing::error!("no random secret for DNS cookies: none are sent"))
                .ok(),
            cookie_counters: ["valid", "new", "invalid"].map(|r| metrics.cookie_counter(r)),
        }
    }

    /// What answers zone transfers and signed requests.
    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// Writes the response to `packet`, which came from `source`, into `out`. Returns false
    /// when the packet gets no response at all (it is not a request).
    pub fn respond(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        self.respond_within(packet, source, transport, None, None, out)
    }

    /// As [`Responder::respond`] for a UDP datagram, within the response rate limit: false as
    /// well when `limiter` drops the response; truncated when it slips it.
    pub fn respond_limited(
        &self,
        packet: &[u8],
        source: IpAddr,
        limiter: &mut RateLimiter,
        out: &mut Vec<u8>,
    ) -> bool {
        self.respond_within(packet, source, Transport::Udp, Some(limiter), None, out)
    }

    /// The UDP workers' way to answer: as [`Responder::respond`], within the response rate
    /// limit when there is one, answering a repeat from `cache` and remembering what it answers.
    pub fn respond_udp(
        &self,
        packet: &[u8],
        source: IpAddr,
        limiter: Option<&mut RateLimiter>,
        cache: &mut ResponseCache,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(hash) = cache.key(packet) else {
            return self.respond_within(packet, source, Transport::Udp, limiter, None, out);
        };
        let table = self.table.load();
        let Some(hit) = cache.get(hash, table.id, source) else {
            let remember = Remember {
                cache,
                hash,
                snapshot: table,
            };
            return self.respond_within(
                packet,
                source,
                Transport::Udp,
                limiter,
                Some(remember),
                out,
            );
        };
        let tally = hit.tally();
        if let Some(lookup) = tally.lookup {
            self.lookups.count(lookup);
        }
        self.remembered.inc();
        let mut limiter = limiter;
        let key = || RateKey {
            class: tally.class,
            name: &tally.name[..],
            client: tally.client,
        };
        let Some(slip) = admit(limiter.as_deref_mut(), source, packet.len(), key) else {
            return false;
        };
        if !slip {
            tally.counters.iter().flatten().for_each(|c| {
                c.inc();
            });
            if let Some((shares, cell)) = &tally.share {
                shares.inc(*cell);
            }
        }
        hit.write(packet, slip, out);
        charge(limiter, out.len());
        true
    }

    /// The whole query path: parse, decide, admit (the rate limit), write, remember. A
    /// response is counted (by rcode, region and share) only once the rate limit lets it out
    /// whole: a dropped one is not sent, a slipped one (truncated) is counted as such by the
    /// limiter, and its client's retry over TCP is the one counted.
    fn respond_within(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        limiter: Option<&mut RateLimiter>,
        remember: Option<Remember<'_>>,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut limiter = limiter;
        let asked = packet.len();
        let (remember, loaded) = match remember {
            Some(Remember {
                cache,
                hash,
                snapshot,
            }) => (Some((cache, hash)), Some(snapshot)),
            None => (None, None),
        };
        let request = match wire::parse(packet) {
            Ok(request) => request,
            Err(Malformed::Drop) => {
                self.errors.dropped.inc();
                return false;
            }
            Err(Malformed::Reply {
                id,
                flags,
                rcode,
                question,
                edns,
            }) => {
                let error = || RateKey::error();
                let Some(slip) = admit(limiter.as_deref_mut(), source, asked, error) else {
                    return false;
                };
                if !slip {
                    self.errors.for_rcode(rcode).inc();
                }
                let max_len = self.max_len(transport, edns.as_ref());
                let edns = edns.map(|e| self.edns(&e, None, source));
                let opt_room = edns.as_ref().map_or(0, opt_len);
                let writer = ResponseWriter::new(out, id, flags, question, max_len, opt_room);
                writer.finish(rcode, false, slip, edns.as_ref());
                charge(limiter, out.len());
                return true;
            }
        };
        if request.signed {
            // Rare (a secondary's SOA query): answered whole, signed, never remembered.
            let answered = self.transfers.answer_signed(packet, source, unix_now());
            if let crate::transfer::Outcome::Refused(why) = &answered.outcome {
                tracing::warn!(%source, "signed request refused: {why}");
            }
            out.clear();
            out.extend_from_slice(answered.messages.first().map_or(&[][..], Vec::as_slice));
            return !out.is_empty();
        }
        if self.cookie_valid(&request, source) {
            // It receives what we send to its address: not a forged source.
            limiter = None;
        }
        if let Some(rcode) = refused_before_lookup(&request) {
            let error = || RateKey::error();
            let Some(slip) = admit(limiter.as_deref_mut(), source, asked, error) else {
                return false;
            };
            if !slip {
                self.errors.for_rcode(rcode).inc();
            }
            let edns = request.edns.map(|e| self.edns(&e, None, source));
            let body = Body {
                answer: None,
                proof: None,
                together: None,
                rcode,
                slip,
            };
            self.write(out, &request, transport, &body, edns.as_ref());
            charge(limiter, out.len());
            return true;
        }
        let mut name_buf = NameBuf::new();
        let name = request.question.lower_name(&mut name_buf);
        let table = loaded.unwrap_or_else(|| self.table.load());
        let mut answer = Answer::unanswered();
        self.decide(&mut answer, &table, &request, name, source);
        let key = || {
            let (class, name) = rate_class(&answer, name);
            let client = client_network(&request);
            RateKey {
                class,
                name,
                client,
            }
        };
        let Some(slip) = admit(limiter.as_deref_mut(), source, asked, key) else {
            return false;
        };
        if !slip {
            self.count(&answer);
        }
        let opt_at = self.write_answer(out, &request, source, transport, &answer, name, slip);
        charge(limiter, out.len());
        if let Some((cache, hash)) = remember
            && !slip
        {
            self.remember(
                cache, hash, table.id, &request, source, &answer, name, out, opt_at,
            );
        }
        true
    }

    /// What to answer `request` from `table`: a service's decision for the client (the ECS
    /// address, else `source`), static records, or an `_explain` report.
    fn decide<'t>(
        &self,
        answer: &mut Answer<'t>,
        table: &'t RoutingTable,
        request: &Request<'_>,
        name: &[u8],
        source: IpAddr,
    ) {
        let client = match request.edns.and_then(|e| e.client_subnet) {
            Some(subnet) if subnet.source_prefix > 0 => ClientAddress {
                ip: subnet.address,
                source: AddressSource::Ecs,
            },
            _ => ClientAddress {
                ip: source,
                source: AddressSource::Packet,
            },
        };
        let qtype = RecordType::from(request.question.qtype);
        match explain::txt_answer(table, name, qtype, client) {
            Some(made) => *answer = made,
            None => resolve_into(answer, table, name, qtype, client),
        }
        if let Some(lookup) = answer.lookup {
            self.lookups.count(lookup);
        }
    }

    /// Counts a response that goes out: by rcode, or by its service's and region's counters,
    /// and in its region's share of the client's continent.
    fn count(&self, answer: &Answer<'_>) {
        match answer.counters {
            [None, ..] => {
                self.errors.for_rcode(answer.rcode).inc();
            }
            counters => counters.iter().flatten().for_each(|c| {
                c.inc();
            }),
        }
        if let Some((shares, cell)) = answer.share {
            shares.inc(cell);
        }
    }

    /// Writes the response to `source` with its denial proof and signatures as the request
    /// asks; where its OPT record starts, if it has one.
    #[allow(clippy::too_many_arguments)]
    fn write_answer(
        &self,
        out: &mut Vec<u8>,
        request: &Request<'_>,
        source: IpAddr,
        transport: Transport,
        answer: &Answer<'_>,
        name: &[u8],
        slip: bool,
    ) -> Option<usize> {
        let edns = request.edns.map(|e| self.edns(&e, Some(answer), source));
        let dnssec_ok = request.edns.is_some_and(|e| e.dnssec_ok);
        let proof = answer.denial.filter(|_| dnssec_ok).and_then(|denial| {
            let denied = denial.target.unwrap_or(name);
            let rtype = denial.rtype.map_or(request.question.qtype, u16::from);
            denial.zone.denial(denied, rtype)
        });
        // RFC 9824 3.1: a compact answer says the name exists, without the asked type.
        let rcode = match answer.rcode {
            Rcode::NxDomain if proof.is_some() => Rcode::NoError,
            rcode => rcode,
        };
        let together = answer.together.filter(|_| dnssec_ok).and_then(|t| {
            let plan = &t.service.plan;
            Some((plan.signed_together(t.picks.positions(), t.qtype)?, t.sets))
        });
        let body = Body {
            answer: Some(answer),
            proof: proof.as_deref(),
            together: together.as_ref().map(|(set, sets)| (&**set, *sets)),
            rcode,
            slip,
        };
        let opt = edns.as_ref().map(opt_len);
        self.write(out, request, transport, &body, edns.as_ref());
        opt.map(|len| out.len() - len)
    }

    /// Remembers the response in `out` in the worker's cache, with what it counts, unless it
    /// was made for this query alone (`_explain`) or looked up more than its service.
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &self,
        cache: &mut ResponseCache,
        hash: u64,
        snapshot: u64,
        request: &Request<'_>,
        source: IpAddr,
        answer: &Answer<'_>,
        name: &[u8],
        out: &[u8],
        opt_at: Option<usize>,
    ) {
        // A cookie is answered with a server cookie made for that query.
        if !answer.made.is_empty() || answer.other_lookups || has_cookie(request) {
            return;
        }
        // Without an ECS address the source's own decided, as far as the scope says.
        let ecs = request.edns.and_then(|e| e.client_subnet);
        let source = match ecs {
            Some(subnet) if subnet.source_prefix > 0 => None,
            _ => Some(SourceNetwork::of(source, answer.scope)),
        };
        cache.put(hash, snapshot, source, out, opt_at, |tally| {
            tally.counters = match answer.counters {
                [None, ..] => {
                    let mut counters: [Option<QueryCounter>; COUNTERS] = Default::default();
                    counters[0] = Some(self.errors.for_rcode(answer.rcode).clone());
                    counters
                }
                counters => counters.map(|c| c.cloned()),
            };
            tally.share = answer
                .share
                .map(|(shares, cell)| (Arc::clone(shares), cell));
            tally.lookup = answer.lookup;
            let (class, name) = rate_class(answer, name);
            tally.class = class;
            tally.name.clear();
            tally.name.extend_from_slice(name);
            tally.client = client_network(request);
        });
    }

    /// The response's OPT record for a request that had one.
    fn edns<'a>(
        &'a self,
        request: &EdnsRequest<'_>,
        answer: Option<&Answer<'a>>,
        source: IpAddr,
    ) -> EdnsResponse<'a> {
        let scope = answer.map_or(0, |a| a.scope);
        // Every response to a query with a cookie carries ours, made anew (RFC 7873 5.2).
        let cookie = request
            .cookie
            .zip(self.cookies.as_ref())
            .map(|(cookie, cookies)| {
                let client = cookie.client();
                (client, cookies.make(client, source, cookie::now_secs()))
            });
        EdnsResponse {
            cookie,
            payload: self.max_udp_payload,
            dnssec_ok: request.dnssec_ok,
            client_subnet: request.client_subnet.map(|subnet| {
                let scope = if subnet.source_prefix > 0 { scope } else { 0 };
                (subnet, scope)
            }),
            nsid: self.nsid.as_deref().filter(|_| request.nsid),
            extended_error: answer.and_then(|a| a.extended_error),
        }
    }

    /// Whether the request returns a server cookie we made for `source` within the hour
    /// (counted by what its cookie is).
    fn cookie_valid(&self, request: &Request<'_>, source: IpAddr) -> bool {
        let (Some(cookie), Some(cookies)) = (request.edns.and_then(|e| e.cookie), &self.cookies)
        else {
            return false;
        };
        let valid = cookies.valid(&cookie, source, cookie::now_secs());
        let which = match (valid, cookie.server().is_empty()) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        };
        self.cookie_counters[which].inc();
        valid
    }

    /// The size limit: over UDP the client's EDNS payload size within ours (RFC 6891 6.2.5),
    /// 512 without EDNS.
    fn max_len(&self, transport: Transport, edns: Option<&EdnsRequest<'_>>) -> usize {
        let offered = edns.map_or(CLASSIC_UDP_PAYLOAD, |e| e.payload);
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(offered.clamp(CLASSIC_UDP_PAYLOAD, self.max_udp_payload)),
        }
    }

    fn write(
        &self,
        out: &mut Vec<u8>,
        request: &Request<'_>,
        transport: Transport,
        body: &Body<'_>,
        edns: Option<&EdnsResponse<'_>>,
    ) {
        let &Body {
            answer,
            proof,
            together,
            rcode,
            slip,
        } = body;
        let max_len = self.max_len(transport, request.edns.as_ref());
        let opt_room = edns.map_or(0, opt_len);
        let (id, flags, question) = (request.id, request.flags, Some(request.question.wire));
        let mut writer = ResponseWriter::new(out, id, flags, question, max_len, opt_room);
        writer.with_signatures(request.edns.is_some_and(|e| e.dnssec_ok));
        let authoritative = answer.is_some_and(|a| a.authoritative);
        let truncated = slip
            || answer.is_some_and(|a| write_sections(&mut writer, a, proof, together).is_err());
        if truncated {
            // RFC 2181 9: rather than a partial RRset, no records and TC; the client retries
            // over TCP. The OPT record stays (RFC 6891 7).
            writer.clear_records();
        }
        writer.finish(rcode, authoritative, truncated, edns);
    }
}

/// Whether a response to a query of `asked` bytes goes out under the rate limit (None: it is
/// dropped) and whether it slips (goes out truncated). `key` is asked only when there is a
/// limit.
fn admit<'a>(
    limiter: Option<&mut RateLimiter>,
    source: IpAddr,
    asked: usize,
    key: impl FnOnce() -> RateKey<'a>,
) -> Option<bool> {
    let Some(limiter) = limiter else {
        return Some(false);
    };
    match limiter.check(source, key(), asked) {
        Verdict::Send => Some(false),
        Verdict::Slip => Some(true),
        Verdict::Drop => None,
    }
}

fn has_cookie(request: &Request<'_>) -> bool {
    request.edns.is_some_and(|e| e.cookie.is_some())
}

/// Charges the response written (`bytes`) to the source's budget.
fn charge(limiter: Option<&mut RateLimiter>, bytes: usize) {
    if let Some(limiter) = limiter {
        limiter.sent(bytes);
    }
}

/// The client network a query asks for (its ECS address's /24 or /56), as the rate limit
/// counts it.
fn client_network(request: &Request<'_>) -> Option<[u8; 8]> {
    let subnet = request.edns?.client_subnet?;
    (subnet.source_prefix > 0).then(|| super::network_of(subnet.address))
}

/// What the rate limit counts a response as, and the name it counts it for: the question's,
/// but the zone's for NXDOMAIN (random names in one zone are one flood) and none for errors.
fn rate_class<'a>(answer: &Answer<'a>, name: &'a [u8]) -> (ResponseClass, &'a [u8]) {
    match answer.rcode {
        Rcode::NoError if answer.answer_sets().next().is_some() || !answer.made.is_empty() => {
            (ResponseClass::Positive, name)
        }
        Rcode::NoError if answer.additional_required => (ResponseClass::Positive, name),
        Rcode::NoError => (ResponseClass::NoData, name),
        Rcode::NxDomain => {
            let zone = answer.authority.map_or(name, |soa| soa.wire().owner());
            (ResponseClass::NxDomain, zone)
        }
        _ => (ResponseClass::Error, &[]),
    }
}

/// REFUSED for what no zone here answers: other classes than IN (QCLASS ANY matches IN, RFC
/// 1035 3.2.5), and zone transfers.
fn refused_before_lookup(request: &Request<'_>) -> Option<Rcode> {
    let refused = !matches!(request.question.qclass, CLASS_IN | CLASS_ANY)
        || matches!(
            RecordType::from(request.question.qtype),
            RecordType::AXFR | RecordType::IXFR
        );
    refused.then_some(Rcode::Refused)
}

/// What a response says: the answer (none for errors before any lookup), the NSEC that proves
/// a signed negative answer, the rcode, and whether it slips (goes out truncated whatever its
/// size, for the rate limit).
struct Body<'a> {
    answer: Option<&'a Answer<'a>>,
    proof: Option<&'a WireRRset>,
    /// Several regions' addresses as one signed RRset, and how many answer RRsets it stands for.
    together: Option<(&'a WireRRset, usize)>,
    rcode: Rcode,
    slip: bool,
}

fn write_sections(
    writer: &mut ResponseWriter<'_>,
    answer: &Answer<'_>,
    proof: Option<&WireRRset>,
    together: Option<(&WireRRset, usize)>,
) -> Result<(), wire::Full> {
    match together {
        None => {
            for set in answer.answer_sets() {
                writer.answer(set.wire())?;
            }
        }
        Some((joint, replaced)) => {
            let kept = answer.answer_sets().count().saturating_sub(replaced);
            for set in answer.answer_sets().take(kept) {
                writer.answer(set.wire())?;
            }
            writer.answer(joint)?;
        }
    }
    if !answer.made.is_empty() {
        write_made(writer, answer)?;
    }
    if let Some(set) = answer.authority {
        writer.authority(set.wire())?;
    }
    if let Some(proof) = proof {
        writer.authority(proof)?;
    }
    for set in answer.additional_sets() {
        match writer.additional(set.wire()) {
            Ok(()) => {}
            // Addresses of targets are a courtesy: what does not fit is left out, without TC
            // (RFC 2181 9). Referral glue is not (RFC 9471).
            Err(full) if answer.additional_required => return Err(full),
            Err(_) => break,
        }
    }
    Ok(())
}

/// Records made for one query (the `_explain` TXT lines) are encoded on the spot.
fn write_made(writer: &mut ResponseWriter<'_>, answer: &Answer<'_>) -> Result<(), wire::Full> {
    let sets = answer.made.iter().map(std::slice::from_ref);
    for set in sets.filter_map(encode_rrset) {
        writer.answer(&set)?;
    }
    Ok(())
}
