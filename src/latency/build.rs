//! `regiondns latency build`: gateway access logs to a latency table. Each log line's first
//! field is the client's address and its second the connection's TCP round trip in
//! microseconds (nginx `$remote_addr $tcpinfo_rtt`, HAProxy `%ci %[fc_rtt(us)]`). Addresses are
//! folded into their /24 or /48 at once: the table holds networks, never a client's address.
//!
//! Pure: lines in, rows out. Reading the files and writing the table is the command's.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::{LatencyTable, table::MAX_RTT_MS};

/// The prefixes clients are folded into.
pub const IPV4_PREFIX: u8 = 24;
pub const IPV6_PREFIX: u8 = 48;

/// A previous measurement counts this much of its samples once new ones arrive for the same
/// network and region: the newest build weighs most, and what was learned is not forgotten.
pub const PREVIOUS_WEIGHT: f64 = 0.5;

/// Lines shown of each file's unreadable ones.
pub const SHOWN_BAD_LINES: usize = 5;

/// The client network and round trip (ms) of one log line; `None` when it does not parse.
pub fn parse_line(line: &str) -> Option<(IpNet, f64)> {
    let mut fields = line.split_whitespace();
    let address: IpAddr = fields.next()?.parse().ok()?;
    let micros: f64 = fields.next()?.parse().ok()?;
    let rtt_ms = micros / 1000.0;
    if !(rtt_ms > 0.0 && rtt_ms <= MAX_RTT_MS) {
        return None;
    }
    Some((network_of(address), rtt_ms))
}

/// The /24 or /48 of `address` (an IPv4-mapped address is IPv4).
pub fn network_of(address: IpAddr) -> IpNet {
    let address = address.to_canonical();
    let prefix = if address.is_ipv4() {
        IPV4_PREFIX
    } else {
        IPV6_PREFIX
    };
    IpNet::new(address, prefix).map_or(IpNet::from(address), |n| n.trunc())
}

/// What a file's lines made.
#[derive(Debug, Default)]
pub struct FileTally {
    pub lines: u64,
    pub bad: u64,
    /// The first unreadable lines: (line number, text).
    pub shown: Vec<(u64, String)>,
}

impl FileTally {
    /// Most of the file unreadable: it is not a log of the expected format.
    pub fn mostly_bad(&self) -> bool {
        self.bad * 2 > self.lines
    }
}

/// Round trips per network and region, as the logs give them.
#[derive(Debug, Default)]
pub struct Samples {
    by_key: BTreeMap<(IpNet, String), Vec<f64>>,
}

impl Samples {
    /// Adds the lines of one region's log, counting those that do not parse.
    pub fn add_log<'l>(&mut self, region: &str, lines: impl Iterator<Item = &'l str>) -> FileTally {
        let mut tally = FileTally::default();
        for (at, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            tally.lines += 1;
            match parse_line(line) {
                Some((network, rtt_ms)) => {
                    let key = (network, region.to_owned());
                    self.by_key.entry(key).or_default().push(rtt_ms);
                }
                None => {
                    tally.bad += 1;
                    if tally.shown.len() < SHOWN_BAD_LINES {
                        tally
                            .shown
                            .push((at as u64 + 1, line.chars().take(120).collect()));
                    }
                }
            }
        }
        tally
    }

    /// One row per network and region: the median and the count, merged with `previous`.
    pub fn rows(mut self, previous: Option<&LatencyTable>) -> Vec<Row> {
        let mut rows: BTreeMap<(IpNet, String), Row> = BTreeMap::new();
        for ((network, region), rtts) in &mut self.by_key {
            rtts.sort_by(f64::total_cmp);
            let row = Row {
                network: *network,
                region: region.clone(),
                rtt_ms: median(rtts),
                samples: rtts.len() as f64,
            };
            rows.insert((*network, region.clone()), row);
        }
        for (network, measures) in previous.iter().flat_map(|t| t.networks()) {
            for measure in measures {
                let Some(region) =
                    previous.and_then(|t| t.regions.get(usize::from(measure.region)))
                else {
                    continue;
                };
                let key = (network, region.clone());
                let (rtt_ms, samples) = (f64::from(measure.rtt_ms), f64::from(measure.samples));
                match rows.get_mut(&key) {
                    Some(row) => row.merge(rtt_ms, samples * PREVIOUS_WEIGHT),
                    None => {
                        let row = Row {
                            network,
                            region: region.clone(),
                            rtt_ms,
                            samples,
                        };
                        rows.insert(key, row);
                    }
                }
            }
        }
        rows.into_values().filter(|r| r.samples >= 1.0).collect()
    }
}

/// A table row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub network: IpNet,
    pub region: String,
    pub rtt_ms: f64,
    pub samples: f64,
}

impl Row {
    fn merge(&mut self, rtt_ms: f64, weight: f64) {
        let total = self.samples + weight;
        self.rtt_ms = (self.rtt_ms * self.samples + rtt_ms * weight) / total;
        self.samples = total;
    }
}

/// The table's text: a header, then the rows.
pub fn table_text(rows: &[Row]) -> String {
    let mut text = String::from("network,region,rtt_ms,samples\n");
    for row in rows {
        let samples = row.samples.round().max(1.0) as u64;
        text.push_str(&format!(
            "{},{},{:.3},{samples}\n",
            row.network, row.region, row.rtt_ms
        ));
    }
    text
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_and_haproxy_lines_fold_into_networks_and_garbage_is_counted() {
        let mut samples = Samples::default();
        let log = "81.2.69.7 41000\n81.2.69.200 39000 GET /v1\n81.2.69.9 90000\n\
                   2a02:cf40::7 20000\n::ffff:81.2.69.1 40000\n\
                   not-an-address 5\n81.2.69.1 -3\n81.2.69.1\n\n";
        let tally = samples.add_log("eu-west", log.lines());
        assert_eq!((tally.lines, tally.bad), (8, 3));
        assert_eq!(tally.shown[0], (6, "not-an-address 5".to_owned()));
        assert!(!tally.mostly_bad());
        let rows = samples.rows(None);
        let text = table_text(&rows);
        assert_eq!(
            text,
            "network,region,rtt_ms,samples\n81.2.69.0/24,eu-west,40.500,4\n\
             2a02:cf40::/48,eu-west,20.000,1\n"
        );
        let table = LatencyTable::parse(text.as_bytes()).expect("the server reads it");
        assert_eq!(table.summary.rows, 2);
        assert!(!text.contains("81.2.69.7"), "no address is kept");
    }

    #[test]
    fn a_file_mostly_of_garbage_is_mostly_bad() {
        let mut samples = Samples::default();
        let tally = samples.add_log("r", "a\nb\n10.0.0.1 5000\n".lines());
        assert!(tally.mostly_bad());
    }

    #[test]
    fn previous_measurements_are_kept_and_weighed_down_by_new_ones() {
        let previous = LatencyTable::parse(
            b"network,region,rtt_ms,samples\n10.0.0.0/24,a,100,20\n10.0.1.0/24,b,70,20\n",
        )
        .expect("valid");
        let mut samples = Samples::default();
        let log: String = (0..20).map(|_| "10.0.0.9 40000\n").collect();
        samples.add_log("a", log.lines());
        let rows = samples.rows(Some(&previous));
        // 20 new at 40 ms, 20 old at half weight at 100 ms.
        assert_eq!(rows[0].network.to_string(), "10.0.0.0/24");
        assert!((rows[0].rtt_ms - 60.0).abs() < 1e-9, "{rows:?}");
        assert_eq!(rows[0].samples, 30.0);
        assert_eq!(
            (rows[1].region.as_str(), rows[1].rtt_ms),
            ("b", 70.0),
            "kept"
        );
    }
}
