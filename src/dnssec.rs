//! DNSSEC keys: making a zone's combined signing key (CSK), writing it to a file only its owner
//! can read, reading it back with the checks an operator needs (missing, unreadable, readable
//! by others, not a key), and what the parent zone needs of it: the DNSKEY and its DS.
//!
//! A key file is the PKCS#8 private key in PEM, as OpenSSL writes it (`openssl pkey -in FILE
//! -text` reads it); the algorithm is the key's own: ECDSA P-256 (DNSSEC algorithm 13) or
//! Ed25519 (15). It also signs RRsets, and remembers per thread the few made on demand (the
//! proofs of negative answers, the joint sets of several regions). This module owns key
//! material and signing: it knows no zone file, no lookup and no socket.

use std::{
    cell::RefCell,
    fmt,
    fs::OpenOptions,
    hash::BuildHasher,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    dnssec::{
        Algorithm, DigestType, SigningKey, TBS,
        crypto::{EcdsaSigningKey, Ed25519SigningKey},
        rdata::{DNSKEY, DNSSECRData, DS, RRSIG, SigInput},
    },
    rr::{DNSClass, Name, RData, Record, SerialNumber},
};
use ring::signature::Ed25519KeyPair;

use crate::wire::WireRRset;
use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject};

/// DNSKEY flags of a combined signing key: Zone Key (256) and Secure Entry Point (1).
const CSK_FLAGS: u16 = 257;

/// The algorithms a key can be made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256, DNSSEC algorithm 13: what every validator supports.
    EcdsaP256,
    /// Ed25519, DNSSEC algorithm 15: smaller and faster, not yet validated everywhere.
    Ed25519,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "key file {} can be read by others (mode {mode:o}): `chmod 600` it, and keep it \
         where only regiondns's user can read it",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key file {} holds no PKCS#8 private key in PEM", path.display())]
    NotPem { path: PathBuf },
    #[error(
        "key file {}: the key is neither ECDSA P-256 nor Ed25519 (DNSSEC algorithms 13, 15)",
        path.display()
    )]
    UnknownAlgorithm { path: PathBuf },
    #[error("cannot write key file {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot make a key: {0}")]
    Generate(String),
}

/// A zone's signing key, read from its file.
pub struct ZoneKey {
    signer: Box<dyn SigningKey>,
    dnskey: DNSKEY,
    key_tag: u16,
}

impl fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private half is never shown.
        f.debug_struct("ZoneKey")
            .field("algorithm", &self.signer.algorithm())
            .field("key_tag", &self.key_tag)
            .finish_non_exhaustive()
    }
}

/// Two keys are the same key when their public halves are.
impl PartialEq for ZoneKey {
    fn eq(&self, other: &Self) -> bool {
        self.dnskey == other.dnskey
    }
}

impl ZoneKey {
    fn from_pkcs8(pkcs8: &PrivatePkcs8KeyDer<'_>) -> Option<ZoneKey> {
        let signer: Box<dyn SigningKey> =
            match EcdsaSigningKey::from_pkcs8(pkcs8, Algorithm::ECDSAP256SHA256) {
                Ok(key) => Box::new(key),
                // Either PKCS#8 version: v1 (RFC 8410) as OpenSSL writes, or v2 (RFC 5958).
                Err(_) => Box::new(Ed25519SigningKey::from_ed25519(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der()).ok()?,
                )),
            };
        let public = signer.to_public_key().ok()?;
        let dnskey = DNSKEY::with_flags(CSK_FLAGS, public);
        let key_tag = dnskey.calculate_key_tag().ok()?;
        Some(ZoneKey {
            signer,
            dnskey,
            key_tag,
        })
    }

    /// Reads the key at `path`, refusing a file that others than its owner may read.
    pub fn read(path: &Path) -> Result<ZoneKey, KeyError> {
        let read_error = |error| KeyError::Read {
            path: path.to_owned(),
            error,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_error)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let pem = std::fs::read(path).map_err(read_error)?;
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| KeyError::NotPem {
            path: path.to_owned(),
        })?;
        ZoneKey::from_pkcs8(&pkcs8).ok_or_else(|| KeyError::UnknownAlgorithm {
            path: path.to_owned(),
        })
    }

    pub fn dnskey(&self) -> &DNSKEY {
        &self.dnskey
    }

    pub fn key_tag(&self) -> u16 {
        self.key_tag
    }

    pub fn signer(&self) -> &dyn SigningKey {
        &*self.signer
    }

    /// The DS record the parent of `zone` publishes for this key (SHA-256, RFC 4509).
    pub fn ds(&self, zone: &Name) -> Result<DS, KeyError> {
        let digest = self
            .dnskey
            .to_digest(zone, DigestType::SHA256)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(DS::new(
            self.key_tag,
            self.signer.algorithm(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }
}

/// Signs the RRsets of one zone with its key, every signature valid over the same window.
#[derive(Debug, Clone, PartialEq)]
pub struct RrsetSigner {
    key: Arc<ZoneKey>,
    /// Keys in the DNSKEY set that sign nothing.
    published: Vec<Arc<ZoneKey>>,
    zone: Name,
    inception: u32,
    expiration: u32,
    validity: Duration,
}

/// Signatures start this long before they are made: a validator whose clock is behind still
/// accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

impl RrsetSigner {
    /// Signatures from an hour before `now` (for validators whose clock is behind) for
    /// `validity`.
    pub fn new(
        key: &Arc<ZoneKey>,
        published: &[Arc<ZoneKey>],
        zone: &Name,
        now: SystemTime,
        validity: Duration,
    ) -> Self {
        let seconds = |t: SystemTime| {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            // RRSIG times are serial numbers modulo 2^32 (RFC 4034 3.1.5).
            since as u32
        };
        RrsetSigner {
            key: Arc::clone(key),
            published: published.to_vec(),
            zone: zone.clone(),
            inception: seconds(now - CLOCK_SKEW),
            expiration: seconds(now + validity),
            validity,
        }
    }

    /// The same key, zone and validity, for signatures made at `now`.
    pub fn renewed(&self, now: SystemTime) -> Self {
        RrsetSigner::new(&self.key, &self.published, &self.zone, now, self.validity)
    }

    /// How long a signature is valid from when it is made.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// The key tag its signatures carry.
    pub fn key_tag(&self) -> u16 {
        self.key.key_tag
    }

    /// The algorithm its signatures carry.
    pub fn algorithm(&self) -> Algorithm {
        self.key.signer.algorithm()
    }

    /// The RRSIG RDATA over `records`, which share one owner, type and TTL; `None` when it
    /// cannot be made (a key that cannot sign, which a key read back never is).
    pub fn sign(&self, records: &[Record]) -> Option<RData> {
        let first = records.first()?;
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: self.key.signer.algorithm(),
            num_labels: first.name.num_labels(),
            original_ttl: first.ttl,
            sig_expiration: SerialNumber::new(self.expiration),
            sig_inception: SerialNumber::new(self.inception),
            key_tag: self.key.key_tag,
            signer_name: self.zone.clone(),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, records.iter()).ok()?;
        let signature = self.key.signer.sign(&tbs).ok()?;
        Some(RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(
            input, signature,
        ))))
    }

    /// The DNSKEY set of the zone's apex: the signing key, then those only published.
    pub fn dnskey_records(&self, ttl: u32) -> Vec<Record> {
        let keys = std::iter::once(&self.key).chain(&self.published);
        let mut dnskeys: Vec<&DNSKEY> = Vec::new();
        for key in keys {
            if !dnskeys.contains(&&key.dnskey) {
                dnskeys.push(&key.dnskey);
            }
        }
        dnskeys
            .into_iter()
            .map(|dnskey| {
                let rdata = RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone()));
                Record::from_rdata(self.zone.clone(), ttl, rdata)
            })
            .collect()
    }
}

/// What a signature made on demand is for: its memo keys are kept apart by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnDemand {
    /// The NSEC of a negative answer, by zone data, name and type.
    Denial,
    /// The joint address set of several regions, by service plan, regions and type.
    Regions,
}

/// Signed sets a thread remembers (direct-mapped: a new one replaces the one in its slot).
const REMEMBERED: usize = 4096;

struct Remembered {
    kind: OnDemand,
    owner: u64,
    rtype: u16,
    key: Box<[u8]>,
    set: Arc<WireRRset>,
}

thread_local! {
    static MEMO: RefCell<Vec<Option<Remembered>>> = const { RefCell::new(Vec::new()) };
    static MEMO_HASHER: foldhash::fast::RandomState = foldhash::fast::RandomState::default();
}

/// The signed set for (`kind`, `owner`, `key`, `rtype`) that this thread made before, or the
/// one `make` makes now (kept for next time). `owner` is unique in the process for the data
/// the set is made from (a zone's data, a service's plan), so a set never outlives it in use.
pub fn remembered(
    kind: OnDemand,
    owner: u64,
    key: &[u8],
    rtype: u16,
    make: impl FnOnce() -> Option<WireRRset>,
) -> Option<Arc<WireRRset>> {
    let slot = MEMO_HASHER.with(|h| h.hash_one((kind, owner, rtype, key))) as usize % REMEMBERED;
    let found = MEMO.with_borrow(|memo| {
        let entry = memo.get(slot)?.as_ref()?;
        let same = (entry.kind, entry.owner, entry.rtype) == (kind, owner, rtype);
        (same && *entry.key == *key).then(|| Arc::clone(&entry.set))
    });
    if found.is_some() {
        return found;
    }
    let set = Arc::new(make()?);
    MEMO.with_borrow_mut(|memo| {
        if memo.is_empty() {
            memo.resize_with(REMEMBERED, || None);
        }
        memo[slot] = Some(Remembered {
            kind,
            owner,
            rtype,
            key: key.into(),
            set: Arc::clone(&set),
        });
    });
    Some(set)
}

/// Makes a new key and writes it to `path`, which must not exist yet, readable by its owner
/// only; the key as read back.
pub fn generate(algorithm: KeyAlgorithm, path: &Path) -> Result<ZoneKey, KeyError> {
    let generated = match algorithm {
        KeyAlgorithm::EcdsaP256 => EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256),
        KeyAlgorithm::Ed25519 => Ed25519SigningKey::generate_pkcs8(),
    };
    let pkcs8 = generated.map_err(|e| KeyError::Generate(e.to_string()))?;
    let der = match algorithm {
        KeyAlgorithm::EcdsaP256 => pkcs8.secret_pkcs8_der().to_vec(),
        KeyAlgorithm::Ed25519 => ed25519_v1(pkcs8.secret_pkcs8_der())
            .ok_or_else(|| KeyError::Generate("unexpected Ed25519 PKCS#8 layout".into()))?,
    };
    let pem = pem("PRIVATE KEY", &der);
    let write_error = |error| KeyError::Write {
        path: path.to_owned(),
        error,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_error)?;
    file.write_all(pem.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    ZoneKey::read(path)
}

/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958), which OpenSSL 3.0 and GnuTLS (Knot's
/// keymgr) do not read; the same seed in the v1 form of RFC 8410 is read by all of them.
fn ed25519_v1(v2: &[u8]) -> Option<Vec<u8>> {
    const V2_SEED_AT: &[u8] = b"\x30\x51\x02\x01\x01\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20";
    const V1_PREFIX: &[u8] = b"\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20";
    let seed = v2.strip_prefix(V2_SEED_AT)?.get(..32)?;
    Some([V1_PREFIX, seed].concat())
}

/// `der` as a PEM block of `label` (RFC 7468): base64 in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    let base64 = data_encoding::BASE64.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_ascii("llm.example.com.").expect("name")
    }

    #[test]
    fn a_generated_key_is_private_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let path = dir.path().join(format!("{algorithm:?}.pem"));
            let made = generate(algorithm, &path).expect("generate");
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let read = ZoneKey::read(&path).expect("read");
            assert_eq!(read, made);
            let wanted = match algorithm {
                KeyAlgorithm::EcdsaP256 => Algorithm::ECDSAP256SHA256,
                KeyAlgorithm::Ed25519 => Algorithm::ED25519,
            };
            assert_eq!(read.signer().algorithm(), wanted);
            assert!(read.dnskey().zone_key() && read.dnskey().secure_entry_point());
            let ds = read.ds(&zone()).expect("ds");
            assert_eq!(ds.key_tag(), read.key_tag());
            assert_eq!(ds.digest().len(), 32, "SHA-256");
            assert!(ds.covers(&zone(), read.dnskey()).expect("covers"));
            // An existing file is never overwritten.
            assert!(matches!(
                generate(algorithm, &path),
                Err(KeyError::Write { .. })
            ));
        }
    }

    #[test]
    fn exposed_missing_and_foreign_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        generate(KeyAlgorithm::EcdsaP256, &path).expect("generate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = ZoneKey::read(&path).expect_err("world-readable");
        assert!(
            error.to_string().contains("(mode 644): `chmod 600` it"),
            "{error}"
        );

        let missing = ZoneKey::read(&dir.path().join("none.pem")).expect_err("missing");
        assert!(
            missing.to_string().starts_with("cannot read key file"),
            "{missing}"
        );

        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a key").expect("write");
        std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(ZoneKey::read(&text), Err(KeyError::NotPem { .. })));
    }
}
