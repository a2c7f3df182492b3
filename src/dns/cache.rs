//! Responses given before, remembered per UDP worker (a packet cache, as PowerDNS keeps one).
//!
//! Within one routing snapshot (which holds the compiled GeoIP places), a response is a function of the request's
//! bytes after its ID (flags, question, EDNS with its Client Subnet) and, when no ECS address is
//! sent, of the source's network as far as the answer's scope says it depends on it. Resolvers
//! repeat requests, so a worker remembers what it wrote, keyed by those bytes with the question's
//! name in lower case. A repeat is answered by copying: the request's ID and question (its case)
//! are put back, and the counters, the GeoIP lookup count and the response rate limit apply as
//! they did to the original. Entries name their snapshot by id, so a health change, a reload or
//! a GeoIP update is never answered from an entry made before it.
//!
//! The table is direct-mapped and fixed in size, one per worker (nothing shared, no lock); its
//! buffers are reused, so once warm it allocates nothing. A response is remembered only for a
//! request seen before (a doorkeeper, as TinyLFU's): resolvers' traffic is mostly requests
//! asked once per TTL (another client network in every ECS option), and writing each of them
//! into a cold slot would cost more than it saves; a request the doorkeeper has not seen is not
//! looked for either. This module remembers and copies; what to answer is
//! [`super::Responder`]'s.

use std::{hash::BuildHasher, net::IpAddr, sync::Arc};

use super::ResponseClass;
use crate::{counter::QueryCounter, geo::LookupResult, metrics::AnswerShares, wire::HEADER_LEN};

/// Responses remembered per worker (a power of two).
const SLOTS: usize = 1024;
/// Requests the doorkeeper knows, by a fingerprint each (a power of two): 16 KB.
const SEEN: usize = 4096;
/// Requests longer than this are not remembered (a question and OPT with ECS take about 60).
const MAX_KEY: usize = 512;
/// Nor are responses longer than this.
const MAX_RESPONSE: usize = 1232;
/// The TC bit in the header's third byte.
const TC: u8 = 0x02;

/// One worker's remembered responses.
pub struct ResponseCache {
    slots: Box<[Slot]>,
    /// The fingerprint of the last request keyed to each place: a request is remembered
    /// the second time it comes while its fingerprint is still there.
    seen: Box<[u32]>,
    hasher: foldhash::fast::RandomState,
    /// The key of the request being answered.
    key: Vec<u8>,
    /// Where the request's question ends (the response's too: it repeats it).
    question_end: usize,
}

/// A network of source addresses an answer holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNetwork {
    v4: bool,
    bits: u128,
    prefix: u8,
}

impl SourceNetwork {
    pub fn of(ip: IpAddr, prefix: u8) -> SourceNetwork {
        let (v4, bits, width) = match ip.to_canonical() {
            IpAddr::V4(v4) => (true, u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (false, u128::from(v6), 128),
        };
        let prefix = prefix.min(width);
        SourceNetwork {
            v4,
            bits: leading(bits, width, prefix),
            prefix,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        SourceNetwork::of(ip, self.prefix) == *self
    }
}

fn leading(bits: u128, width: u8, prefix: u8) -> u128 {
    match width.checked_sub(prefix) {
        Some(rest) if prefix > 0 => bits & (u128::MAX << rest),
        _ => 0,
    }
}

/// What a response given again counts and how the rate limit sees it, as for the original.
pub struct Tally {
    pub counters: [Option<QueryCounter>; crate::answer::COUNTERS],
    pub share: Option<(Arc<AnswerShares>, usize)>,
    pub lookup: Option<LookupResult>,
    pub class: ResponseClass,
    /// The name the rate limit counts it for.
    pub name: Vec<u8>,
    /// The client network it answers for (the query's ECS), as the rate limit counts it.
    pub client: Option<[u8; 8]>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            counters: Default::default(),
            share: None,
            lookup: None,
            class: ResponseClass::Error,
            name: Vec::new(),
            client: None,
        }
    }
}

#[derive(Default)]
struct Slot {
    filled: bool,
    hash: u64,
    /// The routing snapshot's id.
    snapshot: u64,
    key: Vec<u8>,
    /// `Some`: the answer holds for this network of source addresses; `None`: the request's
    /// Client Subnet, part of the key, decided.
    source: Option<SourceNetwork>,
    response: Vec<u8>,
    /// Where the OPT record starts, when the response has one (it is the last record).
    opt_at: Option<usize>,
    tally: Tally,
}

/// A remembered response for the request being answered.
pub struct Hit<'c> {
    slot: &'c Slot,
    question_end: usize,
}

impl Default for ResponseCache {
    fn default() -> ResponseCache {
        ResponseCache {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            seen: vec![0; SEEN].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
            key: Vec::with_capacity(MAX_KEY),
            question_end: 0,
        }
    }
}

impl ResponseCache {
    /// Makes `packet`'s key; `None` when it is not one to remember (too short or long, or a
    /// question that is not a plain name).
    pub fn key(&mut self, packet: &[u8]) -> Option<u64> {
        if packet.len() > MAX_KEY {
            return None;
        }
        let question_end = question_end(packet)?;
        self.key.clear();
        self.key.extend_from_slice(packet.get(2..)?);
        // Length octets are below 64: lower-casing the whole name changes only its letters.
        let name_end = question_end - 4 - 2;
        self.key
            .get_mut(HEADER_LEN - 2..name_end)?
            .make_ascii_lowercase();
        self.question_end = question_end;
        Some(self.hasher.hash_one(&self.key[..]))
    }

    /// The response remembered for the request whose key was made last, from the routing
    /// snapshot `snapshot`, for a request from `source`.
    pub fn get(&self, hash: u64, snapshot: u64, source: IpAddr) -> Option<Hit<'_>> {
        if self.seen[seen_at(hash)] != fingerprint(hash) {
            return None;
        }
        let slot = &self.slots[slot_of(hash)];
        let found = slot.filled
            && slot.hash == hash
            && slot.snapshot == snapshot
            && slot.key == self.key
            && slot.source.is_none_or(|network| network.contains(source));
        found.then_some(Hit {
            slot,
            question_end: self.question_end,
        })
    }

    /// Remembers `response` to the request whose key was made last, if the doorkeeper has
    /// seen that request before; else the doorkeeper notes it.
    pub fn put(
        &mut self,
        hash: u64,
        snapshot: u64,
        source: Option<SourceNetwork>,
        response: &[u8],
        opt_at: Option<usize>,
        tally: impl FnOnce(&mut Tally),
    ) {
        if response.len() > MAX_RESPONSE || response.get(2).is_none_or(|flags| flags & TC != 0) {
            return;
        }
        let seen = &mut self.seen[seen_at(hash)];
        if *seen != fingerprint(hash) {
            *seen = fingerprint(hash);
            return;
        }
        let slot = &mut self.slots[slot_of(hash)];
        slot.filled = true;
        slot.hash = hash;
        slot.snapshot = snapshot;
        slot.key.clear();
        slot.key.extend_from_slice(&self.key);
        slot.source = source;
        slot.response.clear();
        slot.response.extend_from_slice(response);
        slot.opt_at = opt_at;
        tally(&mut slot.tally);
    }
}

impl Hit<'_> {
    pub fn tally(&self) -> &Tally {
        &self.slot.tally
    }

    /// Writes the response to `request` into `out`: whole, or truncated (`slip`: header,
    /// question and OPT, with TC).
    pub fn write(&self, request: &[u8], slip: bool, out: &mut Vec<u8>) {
        let response = &self.slot.response;
        out.clear();
        match (slip, self.slot.opt_at) {
            (false, _) => out.extend_from_slice(response),
            (true, opt_at) => {
                out.extend_from_slice(&response[..self.question_end]);
                out.extend_from_slice(opt_at.map_or(&[][..], |at| &response[at..]));
                out[2] |= TC;
                let additional = u16::from(opt_at.is_some()).to_be_bytes();
                out[6..12].copy_from_slice(&[0, 0, 0, 0, additional[0], additional[1]]);
            }
        }
        // The request's ID, and its question as sent (the case of its letters).
        out[..2].copy_from_slice(&request[..2]);
        out[HEADER_LEN..self.question_end].copy_from_slice(&request[HEADER_LEN..self.question_end]);
    }
}

fn slot_of(hash: u64) -> usize {
    (hash as usize) & (SLOTS - 1)
}

/// The doorkeeper's place for a request: other bits of its hash than its slot's.
fn seen_at(hash: u64) -> usize {
    ((hash >> 20) as usize) & (SEEN - 1)
}

fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Where the single question of `packet` ends: a plain name (no compression) and type and class.
fn question_end(packet: &[u8]) -> Option<usize> {
    if packet.get(4..6)? != [0, 1] {
        return None;
    }
    let mut at = HEADER_LEN;
    loop {
        let label = usize::from(*packet.get(at)?);
        if label == 0 {
            break;
        }
        if label > 63 {
            return None;
        }
        at += label + 1;
    }
    let end = at + 1 + 4;
    (end <= packet.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u16, name: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut packet = id.to_be_bytes().to_vec();
        packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        packet.extend_from_slice(name);
        packet.extend_from_slice(&[0, 1, 0, 1]);
        packet.extend_from_slice(tail);
        packet
    }

    const SNAPSHOTS: u64 = 1;

    #[test]
    fn a_repeat_in_any_case_gets_the_response_with_its_own_id_and_question() {
        let mut cache = ResponseCache::default();
        let first = request(1, b"\x03api\x03llm\x00", b"");
        let hash = cache.key(&first).expect("a key");
        let source: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(cache.get(hash, SNAPSHOTS, source).is_none());
        let mut response = first.clone();
        response[2] |= 0x84;
        response.extend_from_slice(b"answer");
        // Asked a second time: the doorkeeper has seen it.
        cache.put(hash, SNAPSHOTS, None, &response, None, |_| {});
        cache.put(hash, SNAPSHOTS, None, &response, None, |_| {});

        let again = request(2, b"\x03API\x03lLm\x00", b"");
        let hash = cache.key(&again).expect("a key");
        let hit = cache.get(hash, SNAPSHOTS, source).expect("remembered");
        let mut out = Vec::new();
        hit.write(&again, false, &mut out);
        assert_eq!(&out[..2], &[0, 2], "its own ID");
        assert_eq!(&out[12..21], b"\x03API\x03lLm\x00", "its own case");
        assert!(out.ends_with(b"answer"));
        let newer = 2;
        assert!(
            cache.get(hash, newer, source).is_none(),
            "a new snapshot decides anew"
        );
        let other = request(3, b"\x03api\x03llm\x00", b"\x00");
        let hash = cache.key(&other).expect("a key");
        assert!(cache.get(hash, SNAPSHOTS, source).is_none(), "other bytes");
    }

    #[test]
    fn a_request_asked_once_is_neither_remembered_nor_looked_for() {
        let mut cache = ResponseCache::default();
        let source: IpAddr = "192.0.2.1".parse().expect("ip");
        let first = request(1, b"\x03api\x00", b"");
        let hash = cache.key(&first).expect("a key");
        cache.put(hash, SNAPSHOTS, None, &first, None, |_| {});
        assert!(cache.get(hash, SNAPSHOTS, source).is_none(), "once");
        // Another request in between takes the doorkeeper's place: the first is new again.
        let displaced = (0..SEEN as u32 * 16).any(|other| {
            let packet = request(1, b"\x05other\x00", &other.to_be_bytes());
            let other_hash = cache.key(&packet).expect("a key");
            let same_place = seen_at(other_hash) == seen_at(hash);
            if same_place {
                cache.put(other_hash, SNAPSHOTS, None, &packet, None, |_| {});
            }
            same_place
        });
        assert!(displaced, "some request shares the doorkeeper's place");
        let hash = cache.key(&first).expect("a key");
        cache.put(hash, SNAPSHOTS, None, &first, None, |_| {});
        assert!(
            cache.get(hash, SNAPSHOTS, source).is_none(),
            "forgotten, so once again"
        );
        cache.put(hash, SNAPSHOTS, None, &first, None, |_| {});
        assert!(
            cache.get(hash, SNAPSHOTS, source).is_some(),
            "twice in a row"
        );
    }

    #[test]
    fn an_answer_for_the_source_holds_within_its_scope_only() {
        let mut cache = ResponseCache::default();
        let packet = request(1, b"\x03api\x00", b"");
        let hash = cache.key(&packet).expect("a key");
        let london: IpAddr = "81.2.69.7".parse().expect("ip");
        let network = SourceNetwork::of(london, 24);
        // Asked a second time: the doorkeeper has seen it.
        cache.put(hash, SNAPSHOTS, Some(network), &packet, None, |_| {});
        cache.put(hash, SNAPSHOTS, Some(network), &packet, None, |_| {});
        assert!(
            cache
                .get(hash, SNAPSHOTS, "81.2.69.200".parse().expect("ip"))
                .is_some()
        );
        assert!(
            cache
                .get(hash, SNAPSHOTS, "81.2.70.1".parse().expect("ip"))
                .is_none()
        );
        assert!(
            cache
                .get(hash, SNAPSHOTS, "::ffff:81.2.69.1".parse().expect("ip"))
                .is_some()
        );
        let everyone = SourceNetwork::of(london, 0);
        cache.put(hash, SNAPSHOTS, Some(everyone), &packet, None, |_| {});
        assert!(
            cache
                .get(hash, SNAPSHOTS, "2001:db8::1".parse().expect("ip"))
                .is_none(),
            "another family"
        );
        assert!(
            cache
                .get(hash, SNAPSHOTS, "203.0.113.9".parse().expect("ip"))
                .is_some()
        );
    }

    #[test]
    fn a_slipped_repeat_keeps_the_question_and_opt_with_tc() {
        let mut cache = ResponseCache::default();
        let packet = request(9, b"\x03api\x00", b"");
        let hash = cache.key(&packet).expect("a key");
        let mut response = packet.clone();
        response[2] |= 0x84;
        response[7] = 1; // one answer
        response[11] = 1; // and the OPT
        response.extend_from_slice(b"RECORD");
        let opt_at = response.len();
        response.extend_from_slice(b"OPT");
        // Asked a second time: the doorkeeper has seen it.
        cache.put(hash, SNAPSHOTS, None, &response, Some(opt_at), |_| {});
        cache.put(hash, SNAPSHOTS, None, &response, Some(opt_at), |_| {});
        let hit = cache
            .get(hash, SNAPSHOTS, "192.0.2.1".parse().expect("ip"))
            .expect("hit");
        let mut out = Vec::new();
        hit.write(&packet, true, &mut out);
        assert_eq!(out[2] & TC, TC);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert!(out.ends_with(b"\x00\x00\x01\x00\x01OPT"), "{out:?}");
    }

    #[test]
    fn truncated_responses_and_odd_requests_are_not_remembered() {
        let mut cache = ResponseCache::default();
        let packet = request(1, b"\x03api\x00", b"");
        let hash = cache.key(&packet).expect("a key");
        let mut truncated = packet.clone();
        truncated[2] |= TC;
        cache.put(hash, SNAPSHOTS, None, &truncated, None, |_| {});
        assert!(
            cache
                .get(hash, SNAPSHOTS, "192.0.2.1".parse().expect("ip"))
                .is_none()
        );
        assert!(
            cache.key(&request(1, b"\xc0\x0c", b"")).is_none(),
            "a pointer"
        );
        assert!(cache.key(&packet[..14]).is_none(), "cut short");
        let mut two = packet.clone();
        two[5] = 2;
        assert!(cache.key(&two).is_none(), "two questions");
    }
}
