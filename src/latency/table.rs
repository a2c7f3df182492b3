//! The latency table: CSV with a header naming `network`, `region`, `rtt_ms` and `samples`
//! in any order (other columns are ignored), one row per network and region.

use std::{
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnet::IpNet;

use crate::nesting::Nesting;

/// A round trip above this is not a measurement but a broken clock or a unit mistake.
pub const MAX_RTT_MS: f64 = 10_000.0;

/// A table file bigger than this is refused before it is read.
pub const MAX_TABLE_BYTES: u64 = 1 << 30;

/// What one network's clients measured to one region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// Position in [`LatencyTable::regions`].
    pub region: u16,
    pub rtt_ms: f32,
    pub samples: u32,
}

/// A table as read: networks in address order, each with its measures.
#[derive(Debug, Clone, Default)]
pub struct LatencyTable {
    /// Region names as the table spells them, in order of first appearance.
    pub regions: Vec<String>,
    /// Sorted by (family, first address, prefix length): supernets before their subnets.
    networks: Vec<(IpNet, Range<u32>)>,
    /// Which of `networks` holds which.
    nesting: Nesting,
    measures: Vec<Measure>,
    pub summary: TableSummary,
}

/// What `GET /latency` and the fleet say of a table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TableSummary {
    pub file: PathBuf,
    pub sha256: String,
    pub rows: usize,
    pub networks: usize,
    pub regions: usize,
    /// Seconds since the epoch when it was read.
    pub loaded_at: u64,
    /// Per region, the median of its networks' figures (ms).
    pub medians: std::collections::BTreeMap<String, f64>,
}

/// Why a table was refused: the file, the line (1 is the header) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TableError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub reason: String,
}

const COLUMNS: [&str; 4] = ["network", "region", "rtt_ms", "samples"];

impl LatencyTable {
    /// Reads and checks the table at `path`.
    pub fn read(path: &Path) -> Result<LatencyTable, TableError> {
        let error = |line, reason: String| TableError {
            file: path.to_owned(),
            line,
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| error(None, format!("cannot read: {e}")))?
            .len();
        if size > MAX_TABLE_BYTES {
            return Err(error(
                None,
                format!("{size} bytes, more than {MAX_TABLE_BYTES}"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| error(None, format!("cannot read: {e}")))?;
        let mut table =
            LatencyTable::parse(&bytes).map_err(|(line, reason)| error(line, reason))?;
        table.summary.file = path.to_owned();
        Ok(table)
    }

    /// The table in `bytes`; an error names the line (1 is the header).
    pub fn parse(bytes: &[u8]) -> Result<LatencyTable, (Option<u64>, String)> {
        // A file cut short in a row ends without its newline.
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let line = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            return Err((Some(line), "the file ends within a row: cut short?".into()));
        }
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|e| (Some(1), format!("unreadable header: {e}")))?
            .clone();
        let at: Vec<usize> = COLUMNS
            .iter()
            .map(|column| {
                header.iter().position(|h| h == *column).ok_or_else(|| {
                    let want = COLUMNS.join(",");
                    (
                        Some(1),
                        format!("the header has no '{column}' column (it needs {want})"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let mut rows: Vec<(IpNet, u16, f32, u32, u64)> = Vec::new();
        let mut regions: Vec<String> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line());
                (line, format!("unreadable row: {e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |i: usize| record.get(at[i]).unwrap_or("");
            let row = Row::parse(field(0), field(1), field(2), field(3))
                .map_err(|reason| (Some(line), reason))?;
            let region = match regions.iter().position(|r| r == row.region) {
                Some(at) => at,
                None => {
                    regions.push(row.region.to_owned());
                    regions.len() - 1
                }
            };
            let region = u16::try_from(region)
                .map_err(|_| (Some(line), "more than 65,535 regions".to_string()))?;
            rows.push((row.network, region, row.rtt_ms, row.samples, line));
        }
        rows.sort_by(|a, b| order(&a.0, &b.0).then(a.1.cmp(&b.1)));
        if let Some(pair) = rows
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
        {
            let (first, again) = (pair[0].4.min(pair[1].4), pair[0].4.max(pair[1].4));
            let region = &regions[usize::from(pair[0].1)];
            let reason = format!(
                "{} to {region} is given twice (first on line {first})",
                pair[0].0
            );
            return Err((Some(again), reason));
        }
        let mut table = LatencyTable {
            regions,
            ..LatencyTable::default()
        };
        for (network, region, rtt_ms, samples, _) in &rows {
            let at = table.measures.len() as u32;
            match table.networks.last_mut() {
                Some((last, range)) if last == network => range.end = at + 1,
                _ => table.networks.push((*network, at..at + 1)),
            }
            let region = *region;
            let (rtt_ms, samples) = (*rtt_ms, *samples);
            table.measures.push(Measure {
                region,
                rtt_ms,
                samples,
            });
        }
        table.nesting = Nesting::new(&table.networks, |(outer, _), (inner, _)| {
            outer.contains(inner)
        });
        let mut by_region: Vec<Vec<f32>> = vec![Vec::new(); table.regions.len()];
        for m in &table.measures {
            by_region[usize::from(m.region)].push(m.rtt_ms);
        }
        let medians = table
            .regions
            .iter()
            .zip(&mut by_region)
            .map(|(name, rtts)| {
                rtts.sort_by(f32::total_cmp);
                (name.clone(), f64::from(rtts[rtts.len() / 2]))
            });
        let medians = medians.collect();
        table.summary = TableSummary {
            file: PathBuf::new(),
            sha256: data_encoding::HEXLOWER
                .encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()),
            rows: rows.len(),
            networks: table.networks.len(),
            regions: table.regions.len(),
            medians,
            loaded_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        Ok(table)
    }

    /// Every network with its measures, in address order (supernets first).
    pub fn networks(&self) -> impl Iterator<Item = (IpNet, &[Measure])> {
        let measures = &self.measures;
        self.networks
            .iter()
            .map(move |(net, range)| (*net, &measures[range.start as usize..range.end as usize]))
    }

    /// The most specific network of the table holding `ip`, with its measures.
    pub fn find(&self, ip: IpAddr) -> Option<(IpNet, &[Measure])> {
        let ip = ip.to_canonical();
        let key = IpNet::from(ip);
        let upto = self
            .networks
            .partition_point(|(net, _)| order(net, &key).is_le());
        let at = self
            .nesting
            .innermost(upto, |i| self.networks[i].0.contains(&ip))?;
        let (net, range) = &self.networks[at];
        Some((
            *net,
            &self.measures[range.start as usize..range.end as usize],
        ))
    }

    /// The table's regions that `known` does not hold.
    pub fn unknown_regions<'a>(&'a self, known: &[&str]) -> Vec<&'a str> {
        let unknown = self.regions.iter().filter(|r| !known.contains(&r.as_str()));
        unknown.map(String::as_str).collect()
    }
}

/// Address order, IPv4 first; a supernet before the networks inside it.
fn order(a: &IpNet, b: &IpNet) -> std::cmp::Ordering {
    let key = |net: &IpNet| match net {
        IpNet::V4(v4) => (0, u128::from(u32::from(v4.network())), v4.prefix_len()),
        IpNet::V6(v6) => (1, u128::from(v6.network()), v6.prefix_len()),
    };
    key(a).cmp(&key(b))
}

/// One row, checked.
struct Row<'a> {
    network: IpNet,
    region: &'a str,
    rtt_ms: f32,
    samples: u32,
}

impl<'a> Row<'a> {
    fn parse(
        network: &str,
        region: &'a str,
        rtt_ms: &str,
        samples: &str,
    ) -> Result<Row<'a>, String> {
        let parsed: IpNet = network
            .parse()
            .map_err(|_| format!("network must be an address/prefix, got '{network}'"))?;
        if parsed.trunc() != parsed {
            return Err(format!(
                "network {network} has bits set past its prefix (did you mean {}?)",
                parsed.trunc()
            ));
        }
        if region.is_empty() {
            return Err("region is empty".into());
        }
        let rtt = rtt_ms.parse::<f64>().ok().filter(|r| r.is_finite());
        let rtt = match rtt {
            Some(rtt) if rtt > 0.0 && rtt <= MAX_RTT_MS => rtt as f32,
            _ => {
                return Err(format!(
                    "rtt_ms must be milliseconds above 0 and at most {MAX_RTT_MS}, got '{rtt_ms}'"
                ));
            }
        };
        let samples = match samples.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "samples must be a whole number above 0, got '{samples}'"
                ));
            }
        };
        Ok(Row {
            network: parsed,
            region,
            rtt_ms: rtt,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (Option<u64>, String) {
        LatencyTable::parse(text.as_bytes()).expect_err("refused")
    }

    #[test]
    fn columns_in_any_order_with_extra_ones_and_both_families() {
        let table = LatencyTable::parse(
            b"region,extra,samples,network,rtt_ms\n\
              eu-west,x,30,81.2.69.0/24,12.5\n\
              us-east,y,4,81.2.69.0/24,80\n\
              eu-west,z,9,2a02:cf40::/48,20\n\
              eu-west,z,9,81.2.0.0/16,15\n",
        )
        .expect("valid");
        assert_eq!(table.regions, ["eu-west", "us-east"]);
        assert_eq!(table.summary.rows, 4);
        assert_eq!(table.summary.networks, 3);
        let (net, measures) = table.find("81.2.69.7".parse().expect("ip")).expect("found");
        assert_eq!(net.to_string(), "81.2.69.0/24", "the most specific network");
        assert_eq!(measures.len(), 2);
        assert_eq!((measures[0].rtt_ms, measures[0].samples), (12.5, 30));
        let (net, _) = table.find("81.2.70.1".parse().expect("ip")).expect("found");
        assert_eq!(net.to_string(), "81.2.0.0/16");
        assert!(table.find("81.3.0.1".parse().expect("ip")).is_none());
        let (net, _) = table.find("2a02:cf40::1".parse().expect("ip")).expect("v6");
        assert_eq!(net.to_string(), "2a02:cf40::/48");
        assert_eq!(table.summary.sha256.len(), 64);
    }

    #[test]
    fn bad_rows_are_refused_with_their_line_and_reason() {
        let head = "network,region,rtt_ms,samples\n";
        let cases = [
            ("10.0.0.0/24,a,5,3\nten,a,5,3\n", 3, "network must be"),
            ("10.0.0.1/24,a,5,3\n", 2, "bits set past its prefix"),
            ("10.0.0.0/24,a,-5,3\n", 2, "rtt_ms must be"),
            ("10.0.0.0/24,a,99999,3\n", 2, "rtt_ms must be"),
            ("10.0.0.0/24,a,NaN,3\n", 2, "rtt_ms must be"),
            ("10.0.0.0/24,a,5,0\n", 2, "samples must be"),
            (
                "10.0.0.0/24,a,5,3\n10.0.0.0/24,b,5,3\n10.0.0.0/24,a,6,3\n",
                4,
                "given twice (first on line 2)",
            ),
            ("10.0.0.0/24,a,5,3\n10.0.0.0/24,a\n", 3, "unreadable row"),
            ("10.0.0.0/24,a,5,3\n10.0.1.0/24,a,5", 3, "cut short"),
        ];
        for (rows, line, reason) in cases {
            let (at, said) = refused(&format!("{head}{rows}"));
            assert_eq!(at, Some(line), "{rows:?}: {said}");
            assert!(said.contains(reason), "{rows:?}: {said}");
        }
        let (at, said) = refused("network,region,rtt\n");
        assert_eq!(at, Some(1));
        assert!(said.contains("no 'rtt_ms' column"), "{said}");
    }

    #[test]
    fn regions_the_zones_do_not_serve_are_named() {
        let table = LatencyTable::parse(b"network,region,rtt_ms,samples\n10.0.0.0/8,mars,5,1\n")
            .expect("valid");
        assert_eq!(table.unknown_regions(&["eu-west"]), ["mars"]);
        assert!(table.unknown_regions(&["mars"]).is_empty());
    }
}
