//! A region's load as its probes report it: the figure read from one response (a header or a
//! JSON pointer into the body, a fraction of capacity or a percentage), and [`LoadMeter`], which
//! smooths the figures over the check's window. Pure: the probe hands it what it read.
//!
//! What to do about a load is routing's business ([`crate::routing::load_control`]); this module only
//! says what the load is, or that it is unknown.

use reqwest::header::HeaderMap;

use crate::config::LoadSource;

/// What one probe said about the load: `None` when the check reads none, else the figure or why
/// there was none ("no X-Load header in the response").
pub type LoadReading = Option<Result<f64, String>>;

/// The figure `source` names, from a response's headers and body (`None` when the body was not
/// read, as for a response with an unexpected status).
pub fn read(source: &LoadSource, headers: &HeaderMap, body: Option<&[u8]>) -> Result<f64, String> {
    match source {
        LoadSource::Header(name) => {
            let value = headers
                .get(name)
                .ok_or_else(|| format!("no {name} header in the response"))?;
            let text = value
                .to_str()
                .map_err(|_| format!("{name} header is not text"))?;
            parse(text).map_err(|why| format!("{name} header {why}"))
        }
        LoadSource::Json(pointer) => {
            let body = body.ok_or("no body read")?;
            let json: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e})"))?;
            let value = json
                .pointer(pointer)
                .ok_or_else(|| format!("nothing at {pointer} in the body"))?;
            let figure = match value {
                serde_json::Value::Number(n) => n
                    .as_f64()
                    .ok_or_else(|| "is not a number".to_owned())
                    .and_then(checked),
                serde_json::Value::String(text) => parse(text),
                _ => Err("is neither a number nor a text like 92%".to_owned()),
            };
            figure.map_err(|why| format!("{pointer} {why}"))
        }
    }
}

/// `0.92` or `92%`: a fraction of capacity, over 1 when overloaded.
fn parse(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let parsed = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    parsed
        .map_err(|_| format!("is '{text}', not a fraction like 0.92 or a percentage like 92%"))
        .and_then(checked)
}

/// A figure as a load: finite and not negative (1 is the region's capacity).
pub fn checked(figure: f64) -> Result<f64, String> {
    if figure.is_finite() && figure >= 0.0 {
        Ok(figure)
    } else {
        Err(format!("is {figure}, not a load (0 or more)"))
    }
}

/// The smoothed load of one region: an exponentially weighted moving average whose weight,
/// 2 / (window + 1), gives the figures of about the last `window` probes most of the say (the
/// same centre of mass as a mean over `window`), without keeping them. A probe without a figure
/// changes nothing; after `window` such probes in a row the load is unknown again.
#[derive(Debug, Clone)]
pub struct LoadMeter {
    weight: f64,
    window: u32,
    smoothed: Option<f64>,
    missing: u32,
}

impl LoadMeter {
    pub fn new(window: u32) -> LoadMeter {
        LoadMeter {
            weight: smoothing_weight(window),
            window: window.max(1),
            smoothed: None,
            missing: 0,
        }
    }

    /// Takes one probe's figure, if it had one.
    pub fn observe(&mut self, figure: Option<f64>) {
        match figure {
            Some(figure) => {
                self.missing = 0;
                self.smoothed = Some(match self.smoothed {
                    Some(before) => before + self.weight * (figure - before),
                    None => figure,
                });
            }
            None => {
                self.missing += 1;
                if self.missing >= self.window {
                    self.smoothed = None;
                }
            }
        }
    }

    /// The smoothed load, `None` while unknown.
    pub fn load(&self) -> Option<f64> {
        self.smoothed
    }
}

/// The weight of the newest figure in a moving average over about `window` figures.
pub fn smoothing_weight(window: u32) -> f64 {
    2.0 / (f64::from(window.max(1)) + 1.0)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(value).expect("a header value");
        headers.insert(HeaderName::from_static("x-load"), value);
        headers
    }

    #[test]
    fn a_figure_is_a_fraction_or_a_percentage() {
        let source = LoadSource::Header(HeaderName::from_static("x-load"));
        assert_eq!(read(&source, &headers("0.92"), None), Ok(0.92));
        assert_eq!(read(&source, &headers(" 92% "), None), Ok(0.92));
        assert_eq!(read(&source, &headers("1.5"), None), Ok(1.5));
        let refused = ["busy", "-0.1", "NaN", "inf", "%"];
        for text in refused {
            assert!(read(&source, &headers(text), None).is_err(), "{text}");
        }
        assert_eq!(
            read(&source, &HeaderMap::new(), None),
            Err("no x-load header in the response".to_owned())
        );
    }

    #[test]
    fn a_json_pointer_reads_a_number_or_a_percentage() {
        let source = LoadSource::Json("/gpu/utilization".into());
        let read_body = |body: &str| read(&source, &HeaderMap::new(), Some(body.as_bytes()));
        assert_eq!(read_body(r#"{"gpu":{"utilization":0.7}}"#), Ok(0.7));
        assert_eq!(read_body(r#"{"gpu":{"utilization":"70%"}}"#), Ok(0.7));
        assert!(read_body(r#"{"gpu":{}}"#).is_err_and(|e| e.contains("nothing at")));
        assert!(read_body("<html>").is_err_and(|e| e.contains("not JSON")));
        assert!(read_body(r#"{"gpu":{"utilization":[1]}}"#).is_err());
        assert!(read(&source, &HeaderMap::new(), None).is_err());
    }

    #[test]
    fn the_meter_smooths_and_forgets_after_a_window_without_figures() {
        let mut meter = LoadMeter::new(3);
        assert_eq!(meter.load(), None);
        meter.observe(Some(0.4));
        assert_eq!(meter.load(), Some(0.4));
        meter.observe(Some(1.2));
        // Weight 2 / (3 + 1) = 0.5.
        assert_eq!(meter.load(), Some(0.8));
        meter.observe(None);
        meter.observe(None);
        assert_eq!(meter.load(), Some(0.8), "a missing figure changes nothing");
        meter.observe(None);
        assert_eq!(meter.load(), None, "three in a row: unknown");
        meter.observe(Some(0.5));
        assert_eq!(meter.load(), Some(0.5), "starts afresh");
    }
}
