//! TSIG keys (RFC 8945) as Knot and BIND write them: a YAML list of `{ name, algorithm,
//! secret }`, the secret in base64, read from the `--tsig-keys` file and never from a zone
//! file. It owns reading and checking that file and making new keys; it signs nothing.

use std::{fmt, path::Path};

use hickory_proto::rr::{Name, rdata::tsig::TsigAlgorithm};
use serde::Deserialize;

/// The algorithms a key may use.
const ALGORITHMS: [(&str, TsigAlgorithm); 3] = [
    ("hmac-sha256", TsigAlgorithm::HmacSha256),
    ("hmac-sha384", TsigAlgorithm::HmacSha384),
    ("hmac-sha512", TsigAlgorithm::HmacSha512),
];

/// A secret shorter than this many bytes is refused (RFC 8945 6: at least the MAC's half).
const MIN_SECRET: usize = 16;

/// A keys file larger than this is refused unread.
const MAX_FILE: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    algorithm: String,
    secret: String,
}

/// A shared key. Its secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Lower case, as it is compared.
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TsigKey {
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// The keys of a `--tsig-keys` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsigKeys(Vec<TsigKey>);

impl TsigKeys {
    /// Reads and checks `path`; an error names the file, the entry and what is wrong.
    pub fn read(path: &Path) -> Result<TsigKeys, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .len();
        if size > MAX_FILE {
            return Err(format!("{shown}: {size} bytes, over {MAX_FILE}: not read"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        TsigKeys::parse(&text).map_err(|e| format!("{shown}: {e}"))
    }

    pub fn parse(text: &str) -> Result<TsigKeys, String> {
        let raw: Vec<RawKey> = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut keys: Vec<TsigKey> = Vec::new();
        for (n, key) in raw.into_iter().enumerate() {
            let entry = format!("key {} ('{}')", n + 1, key.name);
            let checked = checked(key).map_err(|e| format!("{entry}: {e}"))?;
            if keys.iter().any(|k| k.name == checked.name) {
                return Err(format!("{entry}: a key of this name is given twice"));
            }
            keys.push(checked);
        }
        Ok(TsigKeys(keys))
    }

    /// The key named `name` (compared in lower case).
    pub fn get(&self, name: &Name) -> Option<&TsigKey> {
        let name = name.to_lowercase();
        self.0.iter().find(|k| k.name == name)
    }
}

fn checked(key: RawKey) -> Result<TsigKey, String> {
    let name = Name::from_ascii(key.name.trim())
        .map_err(|e| format!("name: {e}"))?
        .to_lowercase();
    let algorithm = ALGORITHMS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(key.algorithm.trim()))
        .map(|(_, a)| a.clone())
        .ok_or_else(|| {
            let known: Vec<&str> = ALGORITHMS.iter().map(|(n, _)| *n).collect();
            format!(
                "algorithm '{}' is not one of {}",
                key.algorithm,
                known.join(", ")
            )
        })?;
    let secret = data_encoding::BASE64
        .decode(key.secret.trim().as_bytes())
        .map_err(|_| "secret is not base64".to_owned())?;
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "secret is {} bytes, fewer than {MIN_SECRET}",
            secret.len()
        ));
    }
    Ok(TsigKey {
        name,
        algorithm,
        secret,
    })
}

/// A new key named `name` for `algorithm` (`hmac-sha256` or `hmac-sha512`): its entry for the
/// keys file, and the same key for BIND's and Knot's configurations.
pub fn keygen(name: &Name, algorithm: &str) -> Result<String, String> {
    let (algorithm, length) = match algorithm {
        "hmac-sha256" => ("hmac-sha256", 32),
        "hmac-sha512" => ("hmac-sha512", 64),
        other => return Err(format!("algorithm '{other}': hmac-sha256 or hmac-sha512")),
    };
    let mut secret = vec![0; length];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| "the system's random source failed".to_owned())?;
    let secret = data_encoding::BASE64.encode(&secret);
    let name = name.to_lowercase().to_ascii();
    let bare = name.trim_end_matches('.');
    Ok(format!(
        "# regiondns --tsig-keys FILE (only its owner should read it)\n\
         - name: {name}\n  algorithm: {algorithm}\n  secret: {secret}\n\n\
         # BIND, named.conf\n\
         key \"{bare}\" {{ algorithm {algorithm}; secret \"{secret}\"; }};\n\n\
         # Knot, knot.conf\n\
         key:\n  - id: {bare}\n    algorithm: {algorithm}\n    secret: {secret}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "- name: Transfer.Key.\n  algorithm: hmac-sha256\n  secret: c2VjcmV0LXNlY3JldC1zZWNyZXQtMzItYnl0ZXMhISE=\n";

    #[test]
    fn a_key_is_found_by_its_name_in_any_case() {
        let keys = TsigKeys::parse(GOOD).expect("good");
        let name = Name::from_ascii("transfer.KEY.").expect("name");
        let key = keys.get(&name).expect("found");
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(key.secret(), b"secret-secret-secret-32-bytes!!!");
        assert!(
            !format!("{key:?}").contains("c2Vj"),
            "the secret is not printed"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_their_reason() {
        for (text, reason) in [
            (
                "- name: k\n  algorithm: hmac-md5\n  secret: c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
                "key 1 ('k'): algorithm 'hmac-md5' is not one of",
            ),
            (
                "- name: k\n  algorithm: hmac-sha256\n  secret: not base64!\n",
                "key 1 ('k'): secret is not base64",
            ),
            (
                "- name: k\n  algorithm: hmac-sha256\n  secret: c2hvcnQ=\n",
                "secret is 5 bytes, fewer than 16",
            ),
            (
                &format!("{GOOD}{}", GOOD.replace("Transfer", "transfer")),
                "key 2 ('transfer.Key.'): a key of this name is given twice",
            ),
            (
                "- name: k\n  algoritm: hmac-sha256\n  secret: x\n",
                "algoritm",
            ),
        ] {
            let error = TsigKeys::parse(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn keygen_prints_an_entry_the_keys_file_reads() {
        let name = Name::from_ascii("xfr.example.").expect("name");
        let printed = keygen(&name, "hmac-sha512").expect("made");
        let entry: String = printed
            .lines()
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        let keys = TsigKeys::parse(&entry).expect("readable");
        let key = keys.get(&name).expect("named");
        assert_eq!(key.secret().len(), 64);
        assert!(printed.contains("key \"xfr.example\" { algorithm hmac-sha512; secret \""));
        assert!(printed.contains("  - id: xfr.example\n    algorithm: hmac-sha512\n"));
        assert!(keygen(&name, "hmac-md5").is_err());
    }
}
