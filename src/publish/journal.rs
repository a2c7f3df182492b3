//! The IXFR journal kept in `--state-dir`: per transferred zone, the content that went out
//! under its last serial and the differences from the serials before it, so that after a
//! restart a secondary a few serials behind still gets an IXFR, and a change made while the
//! server was down is sent as one. A file is written beside and renamed over; one read back is
//! checked as input from outside is (its size, its zone, its serial, every record's owner) and
//! dropped, said in the log, when it does not hold.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    rr::{Name, Record},
    serialize::binary::{BinDecodable, BinEncodable},
};
use serde::{Deserialize, Serialize};

use crate::routing::Delta;

/// A journal file larger than this is not one we wrote (it holds a zone and 16 differences).
const MAX_JOURNAL: u64 = 512 << 20;

/// What a zone's journal holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub serial: u32,
    /// The content under `serial`, the SOA first.
    pub records: Vec<Record>,
    pub deltas: Vec<Delta>,
    /// When the content's signatures were made, for a signed zone.
    pub signed_at: Option<SystemTime>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    origin: String,
    serial: u32,
    signed_at: Option<u64>,
    /// Each record in wire form, base64.
    records: Vec<String>,
    deltas: Vec<StoredDelta>,
}

#[derive(Serialize, Deserialize)]
struct StoredDelta {
    from: u32,
    to: u32,
    removed: Vec<String>,
    added: Vec<String>,
}

/// Where `origin`'s journal is kept in `dir`: its name, lower case, with every byte but
/// letters, digits, `-` and `.` written as `%XX`, so that no name can reach outside `dir`.
pub fn path(dir: &Path, origin: &Name) -> PathBuf {
    let name = origin.to_lowercase().to_string();
    let safe: String = name
        .trim_end_matches('.')
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => char::from(b).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    dir.join(format!("journal-{safe}.json"))
}

/// The journal as written to its file.
pub fn encode(origin: &Name, journal: &Journal) -> Result<Vec<u8>, String> {
    let records = |records: &[Record]| -> Result<Vec<String>, String> {
        records
            .iter()
            .map(|r| {
                let bytes = r.to_bytes().map_err(|e| format!("{}: {e}", r.name))?;
                Ok(data_encoding::BASE64.encode(&bytes))
            })
            .collect()
    };
    let deltas = journal
        .deltas
        .iter()
        .map(|d| {
            Ok(StoredDelta {
                from: d.from,
                to: d.to,
                removed: records(&d.removed)?,
                added: records(&d.added)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let stored = Stored {
        origin: origin.to_lowercase().to_string(),
        serial: journal.serial,
        signed_at: journal
            .signed_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        records: records(&journal.records)?,
        deltas,
    };
    serde_json::to_vec(&stored).map_err(|e| e.to_string())
}

/// The journal in `bytes`, if it is `origin`'s at `serial`, and every record is in the zone.
pub fn decode(bytes: &[u8], origin: &Name, serial: u32) -> Result<Journal, String> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let wanted = origin.to_lowercase().to_string();
    if stored.origin != wanted {
        return Err(format!(
            "it is the journal of {}, not {wanted}",
            stored.origin
        ));
    }
    if stored.serial != serial {
        return Err(format!(
            "it ends at serial {}, and the zone went out last under {serial}",
            stored.serial
        ));
    }
    let records = |encoded: &[String]| -> Result<Vec<Record>, String> {
        encoded
            .iter()
            .map(|text| {
                let bytes = data_encoding::BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| format!("a record that is not base64: {e}"))?;
                let record = Record::from_bytes(&bytes).map_err(|e| format!("a record: {e}"))?;
                match origin.zone_of(&record.name) {
                    true => Ok(record),
                    false => Err(format!("{} is not in the zone", record.name)),
                }
            })
            .collect()
    };
    let deltas = stored
        .deltas
        .iter()
        .map(|d| {
            Ok(Delta {
                from: d.from,
                to: d.to,
                removed: records(&d.removed)?,
                added: records(&d.added)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Journal {
        serial,
        records: records(&stored.records)?,
        deltas,
        signed_at: stored
            .signed_at
            .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
    })
}

/// Reads `path`, unless it is missing (`Ok(None)`) or larger than any journal we write.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
        Ok(meta) if meta.len() > MAX_JOURNAL => {
            return Err(format!("{} bytes, over {MAX_JOURNAL}", meta.len()));
        }
        Ok(_) => {}
    }
    std::fs::read(path).map(Some).map_err(|e| e.to_string())
}

/// Writes `bytes` to `path` (beside, then renamed over: never half a file).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let beside = path.with_extension("json.new");
    std::fs::write(&beside, bytes)?;
    std::fs::rename(&beside, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::{a, name, soa};

    fn journal() -> Journal {
        Journal {
            serial: 9,
            records: vec![soa(9), a("www.example.", 2)],
            deltas: vec![Delta {
                from: 8,
                to: 9,
                removed: vec![a("www.example.", 1)],
                added: vec![a("www.example.", 2)],
            }],
            signed_at: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }
    }

    #[test]
    fn a_journal_reads_back_as_it_was_written() {
        let bytes = encode(&name("example."), &journal()).expect("encoded");
        let read = decode(&bytes, &name("Example."), 9).expect("decoded");
        assert_eq!(read, journal());
    }

    #[test]
    fn a_journal_of_another_zone_serial_or_with_records_outside_is_refused() {
        let bytes = encode(&name("example."), &journal()).expect("encoded");
        let other = decode(&bytes, &name("example.net."), 9).expect_err("another zone");
        assert_eq!(other, "it is the journal of example., not example.net.");
        let stale = decode(&bytes, &name("example."), 10).expect_err("another serial");
        assert!(stale.contains("ends at serial 9"), "{stale}");
        let mut outside = journal();
        outside.records[1].name = name("www.example.org.");
        let bytes = encode(&name("example."), &outside).expect("encoded");
        let error = decode(&bytes, &name("example."), 9).expect_err("outside");
        assert_eq!(error, "www.example.org. is not in the zone");
        let garbage = decode(b"{\"origin\": 1}", &name("example."), 9);
        assert!(garbage.is_err());
    }

    #[test]
    fn a_zone_name_never_leads_outside_the_state_directory() {
        let dir = Path::new("/state");
        assert_eq!(
            path(dir, &name("LLM.example.com.")),
            Path::new("/state/journal-llm.example.com.json")
        );
        let odd = Name::from_labels(vec![b"a/..".to_vec(), b"x".to_vec()]).expect("a name");
        let odd = path(dir, &odd);
        assert_eq!(odd.parent(), Some(dir));
        assert_eq!(odd, Path::new("/state/journal-a%5C%2F%5C.%5C..x.json"));
    }
}
