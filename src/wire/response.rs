//! Writing a response: header, the question as received, whole RRsets with name compression
//! (RFC 1035 4.1.4) and the OPT record, into a buffer the caller reuses.
//!
//! Records are encoded once, when a configuration is loaded ([`encode_rrset`]); writing one
//! copies its bytes and compresses its owner and the names in its RDATA where RFC 3597 4
//! allows it (NS, CNAME, PTR, MX, SOA). A record that does not fit is never written in part.

use hickory_proto::{
    rr::{Name, RData, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder, Restrict},
};

use super::{ClientSubnet, HEADER_LEN, Rcode, TYPE_OPT, option};

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
/// What a response keeps of the request's flags: opcode, RD and CD.
const ECHOED_FLAGS: u16 = 0x7800 | 0x0100 | 0x0010;
const CLASS_IN: u16 = 1;
/// Most name positions remembered for compression; later names are written in full.
const MAX_NAME_OFFSETS: usize = 64;
/// A compression pointer holds a 14-bit offset.
const MAX_POINTER: usize = 0x3FFF;

/// The records of one name and type, encoded for [`ResponseWriter`], in one allocation (a
/// zone holds one per name, so its size is the zone's): a header of type, class, TTL (as a
/// record repeats them), record count, signature count and owner length, the owner, then each
/// RDATA as where its compressible names start, how many there are, its length and its bytes
/// (length and bytes as a record holds them); then the RDATA of each RRSIG that covers the set,
/// written after it when the client asked for DNSSEC (DO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRRset {
    bytes: Box<[u8]>,
}

/// Bytes before the owner: type (2), class (2), TTL (4), record count (2), signature count
/// (1), owner length (1).
const RRSET_HEADER: usize = 12;
/// Type, class and TTL: the bytes a record has after its owner and before its RDATA length.
const RECORD_FIXED: usize = 8;
const TYPE_RRSIG: [u8; 2] = 46u16.to_be_bytes();
/// Bytes before an RDATA's length: names' start (1), names' count (1).
const RDATA_HEADER: usize = 2;

/// One RDATA as a record holds it (its length, then its bytes), of which `names` names
/// starting at `names_at` (of the bytes) may be compressed.
#[derive(Debug, Clone, Copy)]
struct WireRdata<'s> {
    with_length: &'s [u8],
    names_at: u8,
    names: u8,
}

impl<'s> WireRdata<'s> {
    fn bytes(&self) -> &'s [u8] {
        &self.with_length[2..]
    }
}

/// Encodes records of one owner, type and TTL (as an RRset holds them). `None` when hickory
/// cannot encode one of them, which validated configuration never produces.
pub fn encode_rrset(records: &[Record]) -> Option<WireRRset> {
    encode_signed_rrset(records, &[])
}

/// As [`encode_rrset`], with the RRSIG records that cover the set.
pub fn encode_signed_rrset(records: &[Record], signatures: &[RData]) -> Option<WireRRset> {
    let first = records.first();
    let owner = first.map_or(Ok(vec![0]), |r| r.name.to_bytes()).ok()?;
    let rtype = first.map_or(0, |r| u16::from(r.record_type()));
    let ttl = first.map_or(0, |r| r.ttl);
    let mut bytes = Vec::with_capacity(RRSET_HEADER + owner.len() + 16 * records.len());
    bytes.extend(rtype.to_be_bytes());
    bytes.extend(CLASS_IN.to_be_bytes());
    bytes.extend(ttl.to_be_bytes());
    bytes.extend(u16::try_from(records.len()).ok()?.to_be_bytes());
    bytes.push(u8::try_from(signatures.len()).ok()?);
    bytes.push(u8::try_from(owner.len()).ok()?);
    bytes.extend(&owner);
    for rdata in records.iter().map(|r| &r.data).chain(signatures) {
        encode_rdata(rdata, &mut bytes)?;
    }
    Some(WireRRset {
        bytes: bytes.into_boxed_slice(),
    })
}

impl WireRRset {
    /// The owner's name in wire form, in the configuration's case.
    pub fn owner(&self) -> &[u8] {
        let len = usize::from(self.bytes[11]);
        &self.bytes[RRSET_HEADER..RRSET_HEADER + len]
    }

    pub fn rtype(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    fn ttl(&self) -> u32 {
        u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }

    /// Type, class and TTL as a record of the set repeats them.
    fn record_fixed(&self) -> &[u8; RECORD_FIXED] {
        self.bytes
            .first_chunk()
            .expect("a set's bytes start with its header")
    }

    fn len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[8], self.bytes[9]]))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn signature_count(&self) -> usize {
        usize::from(self.bytes[10])
    }

    /// Whether RRSIGs come with the set.
    pub fn is_signed(&self) -> bool {
        self.signature_count() > 0
    }

    fn rdatas(&self) -> impl Iterator<Item = WireRdata<'_>> {
        self.all_rdatas().take(self.len())
    }

    fn signatures(&self) -> impl Iterator<Item = WireRdata<'_>> {
        self.all_rdatas().skip(self.len())
    }

    /// The set's RDATAs, then its signatures'.
    fn all_rdatas(&self) -> impl Iterator<Item = WireRdata<'_>> {
        let mut at = RRSET_HEADER + self.owner().len();
        (0..self.len() + self.signature_count()).map(move |_| {
            let header = &self.bytes[at..at + RDATA_HEADER + 2];
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let start = at + RDATA_HEADER;
            at = start + 2 + len;
            WireRdata {
                with_length: &self.bytes[start..at],
                names_at: header[0],
                names: header[1],
            }
        })
    }

    /// The records decoded again, for display. What [`encode_rrset`] wrote always decodes.
    pub fn records(&self) -> Vec<Record> {
        let Ok(owner) = Name::read(&mut BinDecoder::new(self.owner())) else {
            return Vec::new();
        };
        let rtype = RecordType::from(self.rtype());
        self.rdatas()
            .filter_map(|rdata| {
                let bytes = rdata.bytes();
                let length = u16::try_from(bytes.len()).ok()?;
                let mut decoder = BinDecoder::new(bytes);
                let data = RData::read(&mut decoder, rtype, Restrict::new(length)).ok()?;
                Some(Record::from_rdata(owner.clone(), self.ttl(), data))
            })
            .collect()
    }
}

/// Appends one RDATA, with its [`RDATA_HEADER`], to `out`.
fn encode_rdata(rdata: &RData, out: &mut Vec<u8>) -> Option<()> {
    let (names_at, names, bytes) = match rdata {
        RData::NS(name) => (0, 1, name.0.to_bytes().ok()?),
        RData::CNAME(name) => (0, 1, name.0.to_bytes().ok()?),
        RData::PTR(name) => (0, 1, name.0.to_bytes().ok()?),
        RData::MX(mx) => {
            let mut bytes = mx.preference.to_be_bytes().to_vec();
            bytes.extend(mx.exchange.to_bytes().ok()?);
            (2, 1, bytes)
        }
        RData::SOA(soa) => {
            let mut bytes = soa.mname.to_bytes().ok()?;
            bytes.extend(soa.rname.to_bytes().ok()?);
            for value in [
                soa.serial,
                soa.refresh as u32,
                soa.retry as u32,
                soa.expire as u32,
                soa.minimum,
            ] {
                bytes.extend(value.to_be_bytes());
            }
            (0, 2, bytes)
        }
        other => {
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            // Names inside other types (SRV's target) must not be compressed (RFC 2782).
            encoder.set_canonical_form(true);
            other.emit(&mut encoder).ok()?;
            (0, 0, bytes)
        }
    };
    out.extend([names_at, names]);
    out.extend(u16::try_from(bytes.len()).ok()?.to_be_bytes());
    out.extend(bytes);
    Some(())
}

/// The OPT record of a response (RFC 6891 6.1.3).
#[derive(Debug, Clone, Copy)]
pub struct EdnsResponse<'a> {
    pub payload: u16,
    pub dnssec_ok: bool,
    /// The request's subnet, echoed with this scope (RFC 7871 7.2.1).
    pub client_subnet: Option<(ClientSubnet, u8)>,
    pub nsid: Option<&'a [u8]>,
    /// The client's cookie and our server cookie for it (RFC 7873 5.2).
    pub cookie: Option<([u8; 8], [u8; 16])>,
    pub extended_error: Option<ExtendedError<'a>>,
}

/// An Extended DNS Error (RFC 8914): INFO-CODE and EXTRA-TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedError<'a> {
    pub code: u16,
    pub text: &'a str,
}

/// Encoded size of the OPT record.
pub fn opt_len(edns: &EdnsResponse<'_>) -> usize {
    let subnet = edns
        .client_subnet
        .map_or(0, |(subnet, _)| 8 + subnet.address_octets().1);
    let nsid = edns.nsid.map_or(0, |nsid| 4 + nsid.len());
    let cookie = edns.cookie.map_or(0, |_| 4 + 8 + 16);
    let extended = edns.extended_error.map_or(0, |e| 6 + e.text.len());
    11 + subnet + nsid + cookie + extended
}

/// The message did not fit: the section being written is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Sections, in the order they must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// Writes one response into `buf` (cleared first), section after section.
pub struct ResponseWriter<'b> {
    buf: &'b mut Vec<u8>,
    /// The message's size limit, less the room kept for the OPT record.
    limit: usize,
    question_end: usize,
    counts: [u16; 3],
    /// Where the names written in records start, for compression (the question's are found
    /// in the question itself).
    offsets: [u16; MAX_NAME_OFFSETS],
    offset_count: usize,
    /// Whether each RRset's signatures are written after it (the client set DO).
    signatures: bool,
}

impl<'b> ResponseWriter<'b> {
    /// Writes the RRSIGs of the RRsets that have them from now on (RFC 4035 3.1.1).
    pub fn with_signatures(&mut self, on: bool) {
        self.signatures = on;
    }

    /// Starts a response to request `id` with the request's `flags`, repeating `question` (name,
    /// type, class as received). `max_len` is the whole message's limit; `opt_room` is kept
    /// free for the OPT record. A question that does not fit is left out.
    pub fn new(
        buf: &'b mut Vec<u8>,
        id: u16,
        flags: u16,
        question: Option<&[u8]>,
        max_len: usize,
        opt_room: usize,
    ) -> ResponseWriter<'b> {
        let limit = max_len.saturating_sub(opt_room);
        let question = question.filter(|q| HEADER_LEN + q.len() <= limit);
        let mut header = [0; HEADER_LEN];
        header[..2].copy_from_slice(&id.to_be_bytes());
        header[2..4].copy_from_slice(&(FLAG_QR | (flags & ECHOED_FLAGS)).to_be_bytes());
        header[5] = u8::from(question.is_some());
        buf.clear();
        buf.extend_from_slice(&header);
        buf.extend_from_slice(question.unwrap_or_default());
        ResponseWriter {
            question_end: buf.len(),
            buf,
            limit,
            counts: [0; 3],
            offsets: [0; MAX_NAME_OFFSETS],
            offset_count: 0,
            signatures: false,
        }
    }

    pub fn answer(&mut self, set: &WireRRset) -> Result<(), Full> {
        self.rrset(Section::Answer, set)
    }

    pub fn authority(&mut self, set: &WireRRset) -> Result<(), Full> {
        self.rrset(Section::Authority, set)
    }

    pub fn additional(&mut self, set: &WireRRset) -> Result<(), Full> {
        self.rrset(Section::Additional, set)
    }

    /// Drops every record written, for a truncated (TC) response.
    pub fn clear_records(&mut self) {
        self.buf.truncate(self.question_end);
        self.counts = [0; 3];
        self.offset_count = 0;
    }

    /// Sets the header's flags and counts, then appends the OPT record, if any.
    pub fn finish(
        self,
        rcode: Rcode,
        authoritative: bool,
        truncated: bool,
        edns: Option<&EdnsResponse<'_>>,
    ) {
        let mut set = rcode.value() & 0x0F;
        if authoritative {
            set |= FLAG_AA;
        }
        if truncated {
            set |= FLAG_TC;
        }
        let [answers, authorities, additionals] = self.counts;
        let additionals = additionals + u16::from(edns.is_some());
        if let Some(header) = self.buf.first_chunk_mut::<HEADER_LEN>() {
            let flags = u16::from_be_bytes([header[2], header[3]]) | set;
            header[2..4].copy_from_slice(&flags.to_be_bytes());
            header[6..8].copy_from_slice(&answers.to_be_bytes());
            header[8..10].copy_from_slice(&authorities.to_be_bytes());
            header[10..12].copy_from_slice(&additionals.to_be_bytes());
        }
        if let Some(edns) = edns {
            write_opt(self.buf, rcode, edns);
        }
    }

    fn rrset(&mut self, section: Section, set: &WireRRset) -> Result<(), Full> {
        let start = (self.buf.len(), self.offset_count);
        let (owner, fixed) = (set.owner(), set.record_fixed());
        for rdata in set.rdatas() {
            self.record(owner, fixed, rdata);
        }
        let mut written = set.len();
        if self.signatures {
            let mut signature_fixed = *fixed;
            signature_fixed[..2].copy_from_slice(&TYPE_RRSIG);
            for rdata in set.signatures() {
                self.record(owner, &signature_fixed, rdata);
                written += 1;
            }
        }
        self.commit(section, start, written)
    }

    /// Counts the records just written, or takes them back when they went over the limit.
    fn commit(
        &mut self,
        section: Section,
        (len, offsets): (usize, usize),
        records: usize,
    ) -> Result<(), Full> {
        let fits = self.buf.len() <= self.limit
            && self.counts[section as usize + 1..].iter().all(|&c| c == 0);
        let count = u16::try_from(records)
            .ok()
            .and_then(|n| self.counts[section as usize].checked_add(n));
        match count {
            Some(count) if fits => {
                self.counts[section as usize] = count;
                Ok(())
            }
            _ => {
                self.buf.truncate(len);
                self.offset_count = offsets;
                Err(Full)
            }
        }
    }

    /// One record: `fixed` is its type, class and TTL.
    fn record(&mut self, owner: &[u8], fixed: &[u8; RECORD_FIXED], rdata: WireRdata<'_>) {
        self.name(owner);
        self.buf.extend_from_slice(fixed);
        if rdata.names == 0 {
            self.buf.extend_from_slice(rdata.with_length);
            return;
        }
        let length_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.rdata(rdata);
        let length = u16::try_from(self.buf.len() - length_at - 2).unwrap_or(u16::MAX);
        self.buf[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
    }

    /// RDATA with names to compress.
    fn rdata(&mut self, rdata: WireRdata<'_>) {
        let bytes = rdata.bytes();
        let mut at = usize::from(rdata.names_at);
        self.buf.extend_from_slice(&bytes[..at]);
        for _ in 0..rdata.names {
            let end = name_end(bytes, at);
            self.name(&bytes[at..end]);
            at = end;
        }
        self.buf.extend_from_slice(&bytes[at..]);
    }

    /// Writes `name` (uncompressed wire form), pointing at the longest suffix already written.
    fn name(&mut self, name: &[u8]) {
        // Most owners are the question's name: one comparison, then a pointer to it.
        if self.question_end > HEADER_LEN {
            let question = &self.buf[HEADER_LEN..self.question_end - 4];
            // Both are mostly in lower case: the exact comparison is the cheap one.
            if question == name || question.eq_ignore_ascii_case(name) {
                self.buf
                    .extend_from_slice(&(0xC000 | HEADER_LEN as u16).to_be_bytes());
                return;
            }
        }
        let mut at = 0;
        while at < name.len() && name[at] != 0 {
            if let Some(offset) = self.find(&name[at..]) {
                self.buf.extend_from_slice(&(0xC000 | offset).to_be_bytes());
                return;
            }
            let label_end = at + 1 + usize::from(name[at]);
            self.remember(self.buf.len());
            self.buf.extend_from_slice(&name[at..label_end]);
            at = label_end;
        }
        self.buf.push(0);
    }

    fn remember(&mut self, offset: usize) {
        if offset <= MAX_POINTER && self.offset_count < MAX_NAME_OFFSETS {
            self.offsets[self.offset_count] = offset as u16;
            self.offset_count += 1;
        }
    }

    /// Where `suffix` was written before: in the question (uncompressed), else in a record.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        let question = &self.buf[HEADER_LEN..self.question_end.saturating_sub(4).max(HEADER_LEN)];
        let mut at = 0;
        while at < question.len() && question[at] != 0 {
            if question[at..].eq_ignore_ascii_case(suffix) {
                return u16::try_from(HEADER_LEN + at).ok();
            }
            at += 1 + usize::from(question[at]);
        }
        self.offsets[..self.offset_count]
            .iter()
            .copied()
            .find(|&offset| same_name(self.buf, usize::from(offset), suffix))
    }
}

/// Whether the name at `offset` of the message (pointers followed) is `name`, ignoring case.
fn same_name(message: &[u8], mut offset: usize, name: &[u8]) -> bool {
    let mut at = 0;
    // Every pointer in our own message points backwards; the bound is only a safeguard.
    for _ in 0..MAX_NAME_OFFSETS * 2 {
        let Some(&len) = message.get(offset) else {
            return false;
        };
        if len & 0xC0 == 0xC0 {
            let Some(&low) = message.get(offset + 1) else {
                return false;
            };
            offset = usize::from(u16::from_be_bytes([len & 0x3F, low]));
            continue;
        }
        let len = usize::from(len);
        if name.get(at) != Some(&(len as u8)) {
            return false;
        }
        if len == 0 {
            return true;
        }
        let (Some(ours), Some(theirs)) = (
            message.get(offset + 1..offset + 1 + len),
            name.get(at + 1..at + 1 + len),
        ) else {
            return false;
        };
        if !ours.eq_ignore_ascii_case(theirs) {
            return false;
        }
        offset += 1 + len;
        at += 1 + len;
    }
    false
}

/// The end of the uncompressed name starting at `at` in bytes we encoded ourselves.
fn name_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&len) = bytes.get(at) {
        at += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    at.min(bytes.len())
}

/// The OPT record's fixed part (11 bytes) and a Client Subnet option (at most 4 + 4 + 16).
const OPT_WITH_SUBNET: usize = 11 + 24;

fn write_opt(buf: &mut Vec<u8>, rcode: Rcode, edns: &EdnsResponse<'_>) {
    // The fixed part and the subnet are laid out on the stack and copied at once.
    let mut opt = [0; OPT_WITH_SUBNET];
    opt[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
    opt[3..5].copy_from_slice(&edns.payload.to_be_bytes());
    opt[5] = (rcode.value() >> 4) as u8;
    opt[7] = if edns.dnssec_ok { 0x80 } else { 0 };
    let options_len = opt_len(edns) - 11;
    opt[9..11].copy_from_slice(&u16::try_from(options_len).unwrap_or(u16::MAX).to_be_bytes());
    let mut len = 11;
    if let Some((subnet, scope)) = edns.client_subnet {
        let (octets, count) = subnet.address_octets();
        opt[11..13].copy_from_slice(&option::CLIENT_SUBNET.to_be_bytes());
        opt[13..15].copy_from_slice(&(4 + count as u16).to_be_bytes());
        opt[15..17].copy_from_slice(&subnet.family().to_be_bytes());
        opt[17] = subnet.source_prefix;
        opt[18] = scope;
        opt[19..19 + count].copy_from_slice(&octets[..count]);
        len = 19 + count;
    }
    buf.extend_from_slice(&opt[..len]);
    if let Some(nsid) = edns.nsid {
        put_option_header(buf, option::NSID, nsid.len());
        buf.extend_from_slice(nsid);
    }
    if let Some((client, server)) = edns.cookie {
        put_option_header(buf, option::COOKIE, client.len() + server.len());
        buf.extend_from_slice(&client);
        buf.extend_from_slice(&server);
    }
    if let Some(error) = edns.extended_error {
        put_option_header(buf, option::EXTENDED_ERROR, 2 + error.text.len());
        buf.extend_from_slice(&error.code.to_be_bytes());
        buf.extend_from_slice(error.text.as_bytes());
    }
}

fn put_option_header(buf: &mut Vec<u8>, code: u16, len: usize) {
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
}
