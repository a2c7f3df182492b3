//! Parsing a request: every section is walked so that a malformed message is known as such,
//! but only what an authoritative answer needs is kept (header, the question, EDNS with Client
//! Subnet and NSID). Nothing is allocated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arrayvec::ArrayVec;

use super::{
    HEADER_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, Rcode, TYPE_OPT, TYPE_TSIG, option, skip_name,
};

const FLAG_QR: u16 = 0x8000;
const OPCODE_QUERY: u8 = 0;

/// A request that can be answered: one question, EDNS understood.
#[derive(Debug)]
pub struct Request<'p> {
    pub id: u16,
    /// The request's flags word (opcode, RD, CD are echoed in the response).
    pub flags: u16,
    pub question: Question<'p>,
    pub edns: Option<EdnsRequest<'p>>,
    /// Whether its last record is a TSIG (RFC 8945): it is answered signed, or refused.
    pub signed: bool,
}

/// The question as sent: its name is checked (uncompressed, labels and length within limits).
#[derive(Debug, Clone, Copy)]
pub struct Question<'p> {
    /// Name, type and class exactly as received (the response repeats them, case included).
    pub wire: &'p [u8],
    pub qtype: u16,
    pub qclass: u16,
}

/// A name in wire form (not zeroed first: the query path fills it for every request).
pub type NameBuf = ArrayVec<u8, MAX_NAME_LEN>;

impl Question<'_> {
    /// The name in lower case wire form, as zones look names up, written into `buf`.
    pub fn lower_name<'b>(&self, buf: &'b mut NameBuf) -> &'b [u8] {
        let name = &self.wire[..self.wire.len() - 4];
        buf.clear();
        // The parser checked the name's length, so it always fits.
        let _ = buf.try_extend_from_slice(name);
        buf.make_ascii_lowercase();
        buf
    }
}

/// What the request's OPT record says (RFC 6891 6.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsRequest<'p> {
    pub payload: u16,
    pub version: u8,
    /// DNSSEC OK, copied into the response (RFC 3225 3).
    pub dnssec_ok: bool,
    pub client_subnet: Option<ClientSubnet>,
    pub nsid: bool,
    pub cookie: Option<Cookie<'p>>,
}

/// A COOKIE option (RFC 7873 4): the client cookie, and the server cookie it returns (empty
/// on its first query to us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie<'p> {
    /// The option's data, borrowed from the packet: the request is moved about on the query
    /// path, and a copied cookie made every uncached query 10% dearer.
    data: &'p [u8],
}

impl<'p> Cookie<'p> {
    /// The option's data: a client cookie of 8 bytes, then a server cookie of 0 or 8 to 32
    /// bytes (RFC 7873 4); none otherwise.
    pub fn new(data: &'p [u8]) -> Option<Cookie<'p>> {
        matches!(data.len(), 8 | 16..=40).then_some(Cookie { data })
    }

    pub fn client(&self) -> [u8; 8] {
        let mut client = [0; 8];
        client.copy_from_slice(&self.data[..8]);
        client
    }

    pub fn server(&self) -> &'p [u8] {
        &self.data[8..]
    }
}

/// An EDNS Client Subnet option (RFC 7871 6), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    pub address: IpAddr,
    pub source_prefix: u8,
}

impl ClientSubnet {
    /// IANA address family: 1 for IPv4, 2 for IPv6.
    pub fn family(&self) -> u16 {
        if self.address.is_ipv4() { 1 } else { 2 }
    }

    /// The address octets as sent: as many as the source prefix needs.
    pub fn address_octets(&self) -> ([u8; 16], usize) {
        let mut octets = [0; 16];
        match self.address {
            IpAddr::V4(v4) => octets[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => octets.copy_from_slice(&v6.octets()),
        }
        (octets, usize::from(self.source_prefix).div_ceil(8))
    }
}

/// A request that gets no answer, or an error answer.
#[derive(Debug)]
pub enum Malformed<'p> {
    /// Too short for a header, or a response (QR set): answering could feed a loop.
    Drop,
    /// Answered with `rcode`, repeating what could be read of the request.
    Reply {
        id: u16,
        flags: u16,
        rcode: Rcode,
        question: Option<&'p [u8]>,
        edns: Option<EdnsRequest<'p>>,
    },
}

/// Reads a request. Errors follow RFC 1035 4.1.1 (FORMERR for anything that cannot be parsed,
/// NOTIMP for opcodes other than QUERY), RFC 6891 (one OPT, in the additional section, with the
/// root as owner; BADVERS above version 0) and RFC 7871 6 (FORMERR for a Client Subnet with an
/// unknown family, a prefix longer than the address, or address octets that do not match it).
pub fn parse(packet: &[u8]) -> Result<Request<'_>, Malformed<'_>> {
    let Some(header) = packet.get(..HEADER_LEN) else {
        return Err(Malformed::Drop);
    };
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (id, flags) = (word(0), word(2));
    if flags & FLAG_QR != 0 {
        return Err(Malformed::Drop);
    }
    let counts = [word(4), word(6), word(8), word(10)];
    let mut reply = Reply {
        id,
        flags,
        question: None,
        edns: None,
    };

    let mut offset = HEADER_LEN;
    let mut question = None;
    for _ in 0..counts[0] {
        let Some((parsed, next)) = read_question(packet, offset) else {
            return Err(reply.with(Rcode::FormErr));
        };
        question.get_or_insert(parsed);
        offset = next;
    }
    reply.question = question.as_ref().map(|q| q.wire);

    let mut edns = None;
    let mut last_type = 0;
    let sections = [(counts[1], false), (counts[2], false), (counts[3], true)];
    for (count, additional) in sections {
        for _ in 0..count {
            let Some(record) = read_record(packet, offset) else {
                return Err(reply.with(Rcode::FormErr));
            };
            offset = record.end;
            last_type = record.rtype;
            if record.rtype != TYPE_OPT {
                continue;
            }
            // RFC 6891 6.1.1: one OPT, in the additional section, owned by the root.
            if !additional || edns.is_some() || record.owner_len != 1 {
                return Err(reply.with(Rcode::FormErr));
            }
            let header = opt_header(&record);
            reply.edns = Some(header);
            edns =
                Some(read_options(header, record.rdata).map_err(|()| reply.with(Rcode::FormErr))?);
            reply.edns = edns;
        }
    }
    if offset != packet.len() {
        return Err(reply.with(Rcode::FormErr));
    }
    let Some(question) = question.filter(|_| counts[0] == 1) else {
        return Err(reply.with(Rcode::FormErr));
    };
    if opcode(flags) != OPCODE_QUERY {
        return Err(reply.with(Rcode::NotImp));
    }
    if edns.is_some_and(|e| e.version > 0) {
        return Err(reply.with(Rcode::BadVers));
    }
    Ok(Request {
        id,
        flags,
        question,
        edns,
        signed: last_type == TYPE_TSIG && counts[3] > 0,
    })
}

/// The opcode field of a flags word.
pub fn opcode(flags: u16) -> u8 {
    ((flags >> 11) & 0x0F) as u8
}

struct Reply<'p> {
    id: u16,
    flags: u16,
    question: Option<&'p [u8]>,
    edns: Option<EdnsRequest<'p>>,
}

impl<'p> Reply<'p> {
    fn with(&self, rcode: Rcode) -> Malformed<'p> {
        Malformed::Reply {
            id: self.id,
            flags: self.flags,
            rcode,
            question: self.question,
            edns: self.edns,
        }
    }
}

/// The question at `offset`: its name must be written out in full (a pointer here could only
/// point into the header or at itself).
fn read_question(packet: &[u8], offset: usize) -> Option<(Question<'_>, usize)> {
    let mut at = offset;
    loop {
        let label = usize::from(*packet.get(at)?);
        if label > MAX_LABEL_LEN {
            return None;
        }
        at += label + 1;
        if label == 0 {
            break;
        }
    }
    // The packet bounds the walk; the name's length is checked once, at its end.
    if at - offset > MAX_NAME_LEN {
        return None;
    }
    let fixed = packet.get(at..at + 4)?;
    let end = at + 4;
    let question = Question {
        wire: &packet[offset..end],
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    Some((question, end))
}

struct RawRecord<'p> {
    owner_len: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: &'p [u8],
    end: usize,
}

fn read_record(packet: &[u8], offset: usize) -> Option<RawRecord<'_>> {
    let name_end = skip_name(packet, offset)?;
    let fixed = packet.get(name_end..name_end + 10)?;
    let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = name_end + 10;
    Some(RawRecord {
        owner_len: name_end - offset,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata: packet.get(start..start + rdlength)?,
        end: start + rdlength,
    })
}

/// The OPT record's fixed fields: payload size in CLASS, version and DO in TTL.
fn opt_header<'p>(record: &RawRecord<'p>) -> EdnsRequest<'p> {
    EdnsRequest {
        payload: record.class,
        version: (record.ttl >> 16) as u8,
        dnssec_ok: record.ttl & 0x8000 != 0,
        client_subnet: None,
        nsid: false,
        cookie: None,
    }
}

fn read_options<'p>(mut edns: EdnsRequest<'p>, mut rdata: &'p [u8]) -> Result<EdnsRequest<'p>, ()> {
    while !rdata.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = rdata else {
            return Err(());
        };
        let (code, len) = (
            u16::from_be_bytes([*c0, *c1]),
            usize::from(u16::from_be_bytes([*l0, *l1])),
        );
        let data = rest.get(..len).ok_or(())?;
        match code {
            option::CLIENT_SUBNET if edns.client_subnet.is_none() => {
                edns.client_subnet = Some(read_client_subnet(data)?);
            }
            option::CLIENT_SUBNET => return Err(()),
            option::NSID => edns.nsid = true,
            // A malformed or repeated cookie is FORMERR (RFC 7873 5.2.2).
            option::COOKIE if edns.cookie.is_none() => {
                edns.cookie = Some(Cookie::new(data).ok_or(())?);
            }
            option::COOKIE => return Err(()),
            _ => {}
        }
        rdata = &rest[len..];
    }
    Ok(edns)
}

/// RFC 7871 6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, then exactly as many address
/// octets as the source prefix needs, with no bit set beyond it.
fn read_client_subnet(data: &[u8]) -> Result<ClientSubnet, ()> {
    let [f0, f1, source_prefix, _scope, address @ ..] = data else {
        return Err(());
    };
    let max_prefix = match u16::from_be_bytes([*f0, *f1]) {
        1 => 32,
        2 => 128,
        _ => return Err(()),
    };
    if *source_prefix > max_prefix || address.len() != usize::from(*source_prefix).div_ceil(8) {
        return Err(());
    }
    let mut octets = [0u8; 16];
    octets[..address.len()].copy_from_slice(address);
    let address = if max_prefix == 32 {
        let v4 = [octets[0], octets[1], octets[2], octets[3]];
        IpAddr::V4(Ipv4Addr::from(v4))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let bits_beyond = match address {
        IpAddr::V4(v4) => {
            u32::from(v4)
                .checked_shl(u32::from(*source_prefix))
                .unwrap_or(0)
                != 0
        }
        IpAddr::V6(v6) => {
            u128::from(v6)
                .checked_shl(u32::from(*source_prefix))
                .unwrap_or(0)
                != 0
        }
    };
    if bits_beyond {
        return Err(());
    }
    Ok(ClientSubnet {
        address,
        source_prefix: *source_prefix,
    })
}
