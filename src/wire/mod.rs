//! The DNS wire format as regiondns speaks it: parsing a request (header, one question, the OPT
//! record with its options) and writing a response with name compression into a buffer the
//! caller reuses.
//!
//! This module owns every byte that crosses the network and every RFC rule about their shape
//! (RFC 1035 4, RFC 6891 for EDNS, RFC 7871 for Client Subnet, RFC 5001 for NSID, RFC 8914 for
//! Extended DNS Errors). It knows nothing of zones, regions or health, and never allocates
//! while parsing; what to answer is decided elsewhere and handed to [`ResponseWriter`].

pub mod name;
mod request;
mod response;

pub use name::NameKey;
pub use request::{
    ClientSubnet, Cookie, EdnsRequest, Malformed, NameBuf, Question, Request, parse,
};
pub use response::{
    EdnsResponse, ExtendedError, Full, ResponseWriter, WireRRset, encode_rrset,
    encode_signed_rrset, opt_len,
};

/// Length of the fixed message header.
pub const HEADER_LEN: usize = 12;
/// The longest name on the wire, length octets and root label included (RFC 1035 3.1).
pub const MAX_NAME_LEN: usize = 255;
/// The longest label (RFC 1035 3.1); longer length octets are compression pointers or the
/// obsolete extended label types.
pub const MAX_LABEL_LEN: usize = 63;

/// EDNS option codes used here.
pub mod option {
    pub const NSID: u16 = 3;
    pub const CLIENT_SUBNET: u16 = 8;
    pub const COOKIE: u16 = 10;
    pub const EXTENDED_ERROR: u16 = 15;
}

/// The record type of the OPT pseudo-record.
pub const TYPE_OPT: u16 = 41;
/// The TSIG meta-record's type (RFC 8945 4.2).
pub const TYPE_TSIG: u16 = 250;

/// Response codes, including the extended BADVERS (RFC 6891 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    BadVers,
}

impl Rcode {
    /// The full 12-bit value: the low 4 bits go in the header, the rest in the OPT record.
    pub fn value(self) -> u16 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
            Rcode::BadVers => 16,
        }
    }

    /// The mnemonic dig prints.
    pub fn name(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
        }
    }
}

/// Walks the name starting at `offset`, compression pointers included, and returns the offset
/// just after it in the message (after its first pointer, if any). `None` for a name that runs
/// past the end, uses a reserved label type, or is longer than 255 octets; pointers are not
/// followed, so loops cannot hang it.
pub fn skip_name(packet: &[u8], mut offset: usize) -> Option<usize> {
    let mut len = 0;
    loop {
        let octet = *packet.get(offset)?;
        match octet & 0xC0 {
            0x00 if octet == 0 => return Some(offset + 1),
            0x00 => {
                len += usize::from(octet) + 1;
                if len >= MAX_NAME_LEN {
                    return None;
                }
                offset += usize::from(octet) + 1;
            }
            0xC0 => {
                packet.get(offset + 1)?;
                return Some(offset + 2);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests;
