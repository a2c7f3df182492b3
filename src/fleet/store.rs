//! The state directory: what must survive a restart, today the drain records. The file is
//! replaced whole (written beside it, then renamed), so a crash leaves the old or the new one.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{DrainRecord, Drains};

const DRAINS_FILE: &str = "drains.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {reason}")]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}: not a drain file regiondns wrote: {reason}")]
    Format {
        path: PathBuf,
        reason: serde_json::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct DrainFile {
    drains: Vec<DrainRecord>,
}

/// The drain records kept in `dir`; none when it holds no drain file yet.
pub fn load_drains(dir: &Path) -> Result<Drains, StoreError> {
    let path = dir.join(DRAINS_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Drains::default()),
        Err(reason) => return Err(StoreError::Io { path, reason }),
    };
    let file: DrainFile =
        serde_json::from_slice(&text).map_err(|reason| StoreError::Format { path, reason })?;
    Ok(file.drains.into_iter().collect())
}

/// Replaces the drain file of `dir` with `drains`, durably.
pub fn save_drains(dir: &Path, drains: &Drains) -> Result<(), StoreError> {
    let path = dir.join(DRAINS_FILE);
    let io = |reason| StoreError::Io {
        path: path.clone(),
        reason,
    };
    let file = DrainFile {
        drains: drains.records().cloned().collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| io(e.into()))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = dir.join(format!(".{DRAINS_FILE}.new"));
    let mut out = std::fs::File::create(&temporary).map_err(io)?;
    out.write_all(&text).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_read_back_as_saved_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(load_drains(dir.path()).expect("empty"), Drains::default());
        let hlc = uhlc::HLC::default();
        let drains: Drains = ["eu-west", "us-east"]
            .into_iter()
            .map(|region| DrainRecord {
                zone: "llm.example.com.".into(),
                region: region.into(),
                drained: region == "eu-west",
                at: hlc.new_timestamp(),
                by: "ns1".into(),
            })
            .collect();
        save_drains(dir.path(), &drains).expect("saved");
        assert_eq!(load_drains(dir.path()).expect("loaded"), drains);
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(DRAINS_FILE), "{ not json").expect("write");
        let error = load_drains(dir.path()).expect_err("damaged");
        assert!(error.to_string().contains("drains.json"), "{error}");
    }
}
