//! Zone configuration: reads the YAML zone files of a directory and validates each into an
//! immutable [`ZoneConfig`].
//!
//! This module owns the zone file format and every rule about it. Each error names the file,
//! line and column and says what is wrong; validation reports all it finds in a file, not just
//! the first. It never touches sockets, health or routing: what it returns is only ever
//! replaced whole, never patched.

mod raw;
mod validate;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use hickory_proto::rr::{Name, RData, RecordType};

use crate::geo::Coordinates;

/// One validated zone file.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub source: PathBuf,
    pub origin: Name,
    /// TTL of the SOA, the apex NS and static records without their own `ttl`.
    pub ttl: u32,
    pub soa: Soa,
    pub nameservers: Vec<Name>,
    pub records: Vec<RecordSet>,
    pub regions: Vec<Region>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone)]
pub struct Soa {
    pub primary: Name,
    pub contact: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub negative_ttl: u32,
}

/// The static records of one name and type.
#[derive(Debug, Clone)]
pub struct RecordSet {
    pub name: Name,
    pub record_type: RecordType,
    pub ttl: u32,
    pub rdata: Vec<RData>,
}

/// A place a service can be answered from.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub location: Coordinates,
    pub addresses: Vec<IpAddr>,
}

/// A name answered with the addresses of the region chosen for each client.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: Name,
    pub ttl: u32,
    /// Indexes into [`ZoneConfig::regions`], in the configured order (the first one answers
    /// clients whose location is unknown).
    pub regions: Vec<usize>,
}

impl ZoneConfig {
    /// `llm.example.com.: 1 services, 3 regions, 7 static records`
    pub fn summary(&self) -> String {
        let records: usize = self.records.iter().map(|set| set.rdata.len()).sum();
        format!(
            "{}: {} services, {} regions, {} static records",
            self.origin,
            self.services.len(),
            self.regions.len(),
            records
        )
    }
}

/// A problem in a zone file, at a position when one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column.
    pub position: Option<(u32, u32)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Loads every `*.yaml` / `*.yml` file of `dir`, in name order. Errors from all files are
/// returned together, so one run of `regiondns check` shows everything to fix.
pub fn load_dir(dir: &Path) -> Result<Vec<ZoneConfig>, Vec<ConfigError>> {
    let files = zone_files(dir).map_err(|e| vec![e])?;
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match load_file(&path) {
            Ok(zone) => zones.push(zone),
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    check_distinct_origins(&zones, &mut errors);
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(errors)
    }
}

/// Loads and validates one zone file. Without an explicit SOA serial, the file's modification
/// time (seconds since the epoch) is used: it changes exactly when the file does.
pub fn load_file(path: &Path) -> Result<ZoneConfig, Vec<ConfigError>> {
    let io_error = |e: std::io::Error| {
        vec![ConfigError {
            path: path.to_owned(),
            position: None,
            message: e.to_string(),
        }]
    };
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error)?;
    let serial = modified
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    parse(path, &text, serial)
}

/// Parses and validates zone file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str, default_serial: u32) -> Result<ZoneConfig, Vec<ConfigError>> {
    let options = serde_saphyr::options! { with_snippet: false };
    let zone: raw::Zone = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| vec![yaml_error(path, &e)])?;
    validate::zone(path, zone, default_serial)
}

fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let position = error
        .location()
        .map(|l| (l.line() as u32, l.column() as u32));
    let mut message = error.to_string();
    if let Some((line, column)) = position {
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    ConfigError {
        path: path.to_owned(),
        position,
        message: message.replace("unknown field", "unknown key"),
    }
}

fn zone_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let error = |message: String| ConfigError {
        path: dir.to_owned(),
        position: None,
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| error(e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error("no zone files (*.yaml, *.yml)".into()));
    }
    Ok(files)
}

fn check_distinct_origins(zones: &[ZoneConfig], errors: &mut Vec<ConfigError>) {
    for (i, zone) in zones.iter().enumerate() {
        if let Some(first) = zones[..i].iter().find(|z| z.origin == zone.origin) {
            errors.push(ConfigError {
                path: zone.source.clone(),
                position: None,
                message: format!(
                    "zone {} is already defined in {}",
                    zone.origin,
                    first.source.display()
                ),
            });
        }
    }
}
