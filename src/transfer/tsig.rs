//! TSIG (RFC 8945) on the transfer path: a request's signature checked against the keys file
//! (key, MAC, time), and every message of the response signed, the first over the request's
//! MAC and each next one over the previous message's (4.3.1, 5.3.1). The MAC arithmetic is
//! hickory's and ring's; this module only says what is signed.

use hickory_proto::{
    rr::{
        Name,
        rdata::tsig::{TSIG, make_tsig_record, signed_bitmessage_to_buf},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};

use super::keys::{TsigKey, TsigKeys};

/// The fudge our signatures carry, and the most a request's time may be off ours (RFC 8945
/// 10: 300 s).
pub const FUDGE: u16 = 300;

/// Why a signed request is refused; said in the refusal and the log, never with the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    UnknownKey(String),
    WrongKey { used: String, wanted: String },
    BadSignature(String),
    BadTime { skew: i64 },
    Unreadable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsigned => write!(f, "the transfer must be signed with TSIG"),
            Refusal::UnknownKey(name) => write!(f, "unknown TSIG key {name}"),
            Refusal::WrongKey { used, wanted } => {
                write!(f, "TSIG key {used} is not the zone's ({wanted})")
            }
            Refusal::BadSignature(name) => write!(f, "bad TSIG signature with key {name}"),
            Refusal::BadTime { skew } => {
                write!(
                    f,
                    "TSIG time {skew:+} s from ours, over the fudge of {FUDGE} s"
                )
            }
            Refusal::Unreadable(why) => write!(f, "unreadable TSIG: {why}"),
        }
    }
}

/// A checked request signature: the key, and the MAC the response's first signature covers.
#[derive(Debug, Clone)]
pub struct Verified<'k> {
    pub key: &'k TsigKey,
    pub request_mac: Vec<u8>,
}

/// Checks the TSIG of `request` (the whole message as received): the last additional record,
/// signed by `wanted` from `keys`, with a valid MAC and a time within [`FUDGE`] of `now`
/// (seconds since the epoch).
pub fn verify<'k>(
    request: &[u8],
    keys: &'k TsigKeys,
    wanted: &Name,
    now: u64,
) -> Result<Verified<'k>, Refusal> {
    let (signed, record) = signed_bitmessage_to_buf(request, None, true).map_err(|e| {
        match e.to_string().contains("missing tsig") || e.to_string().contains("not found") {
            true => Refusal::Unsigned,
            false => Refusal::Unreadable(e.to_string()),
        }
    })?;
    let used = record.name.to_lowercase();
    let key = keys
        .get(&used)
        .ok_or_else(|| Refusal::UnknownKey(used.to_string()))?;
    if key.name != wanted.to_lowercase() {
        return Err(Refusal::WrongKey {
            used: used.to_string(),
            wanted: wanted.to_string(),
        });
    }
    let tsig = &record.data;
    let bad_signature = || Refusal::BadSignature(used.to_string());
    if tsig.algorithm != key.algorithm {
        return Err(bad_signature());
    }
    tsig.algorithm
        .verify_mac(key.secret(), &signed, &tsig.mac)
        .map_err(|_| bad_signature())?;
    let skew = tsig.time as i64 - now as i64;
    if skew.unsigned_abs() > u64::from(tsig.fudge.min(FUDGE)) {
        return Err(Refusal::BadTime { skew });
    }
    Ok(Verified {
        key,
        request_mac: tsig.mac.clone(),
    })
}

/// Signs the messages of one response in turn.
pub struct Signer<'k> {
    key: &'k TsigKey,
    /// The MAC the next signature covers: the request's, then each message's own.
    previous_mac: Vec<u8>,
    first: bool,
    now: u64,
}

impl<'k> Signer<'k> {
    pub fn new(verified: Verified<'k>, now: u64) -> Signer<'k> {
        Signer {
            key: verified.key,
            previous_mac: verified.request_mac,
            first: true,
            now,
        }
    }

    /// Appends the TSIG record to `message` (an encoded response without one) and counts it
    /// in ARCOUNT.
    pub fn sign(&mut self, message: &mut Vec<u8>) -> Result<(), String> {
        let id = u16::from_be_bytes([message[0], message[1]]);
        let tsig = TSIG::new(
            self.key.algorithm.clone(),
            self.now,
            FUDGE,
            Vec::new(),
            id,
            None,
            Vec::new(),
        );
        let mut signed = Vec::with_capacity(message.len() + 128);
        let previous = u16::try_from(self.previous_mac.len()).map_err(|e| e.to_string())?;
        signed.extend_from_slice(&previous.to_be_bytes());
        signed.extend_from_slice(&self.previous_mac);
        signed.extend_from_slice(message);
        let mut encoder = appending(&mut signed);
        if self.first {
            tsig.emit_tsig_for_mac(&mut encoder, &self.key.name)
                .map_err(|e| e.to_string())?;
        } else {
            // Later messages cover only the time signed and the fudge (RFC 8945 5.3.1).
            encoder
                .emit_u16((self.now >> 32) as u16)
                .and_then(|()| encoder.emit_u32(self.now as u32))
                .and_then(|()| encoder.emit_u16(FUDGE))
                .map_err(|e| e.to_string())?;
        }
        let mac = self
            .key
            .algorithm
            .mac_data(self.key.secret(), &signed)
            .map_err(|e| e.to_string())?;
        let record = make_tsig_record(self.key.name.clone(), tsig.set_mac(mac.clone()));
        let mut encoder = appending(message);
        record.emit(&mut encoder).map_err(|e| e.to_string())?;
        let additional = u16::from_be_bytes([message[10], message[11]]) + 1;
        message[10..12].copy_from_slice(&additional.to_be_bytes());
        self.previous_mac = mac;
        self.first = false;
        Ok(())
    }
}

/// An encoder that writes after what `buffer` holds.
fn appending(buffer: &mut Vec<u8>) -> BinEncoder<'_> {
    let end = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
    BinEncoder::with_offset(buffer, end)
}
