//! What an experiment measures: each metric reads either the units'
//! telemetry (an event type and a payload field) or the servers' player
//! metrics split by variant (a counter, histogram or custom metric of
//! the `metrics` frames). Parsed at the edge into bounded types; and how
//! one variant's share of one report becomes one observation.

use super::spec::{MAX_METRICS, error, keys_known, short_name};
use crate::domain::{experiment_stats::MeanSample, live_event::FieldError};
use hotswap_client::metrics::names::COUNTERS;
use serde_json::Value;
use std::collections::BTreeSet;

/// How a metric reads what it reads.
///
/// Over telemetry, per unit: whether it sent such an event (binomial),
/// how many (count), the sum of a field (sum) or the mean of a field
/// (duration). Over server metrics, per report of a variant's players
/// (the reports are the observations, as clusters of players): the share
/// of players with a counter's event (binomial), a counter or a
/// histogram's samples per player (count), a custom total per player
/// (sum), a histogram's mean or a custom value as reported (duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Binomial,
    Count,
    Sum,
    Duration,
}

impl MetricKind {
    pub const ALL: [(&'static str, MetricKind); 4] = [
        ("binomial", MetricKind::Binomial),
        ("count", MetricKind::Count),
        ("sum", MetricKind::Sum),
        ("duration", MetricKind::Duration),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind is listed")
    }
}

/// Which of a report's metrics a server metric reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMetric {
    /// A counter, by its index in [`COUNTERS`].
    Counter(usize),
    Histogram(String),
    Custom(String),
    /// A duration: the histogram of that name, else the custom metric.
    HistogramOrCustom(String),
}

/// Where a metric's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    Telemetry {
        /// The telemetry event type it reads.
        event: String,
        /// The payload field it reads (a top-level key).
        field: Option<String>,
        /// A binomial metric over a text field: the unit sent an event
        /// whose field equals this (`run_end` with `outcome` `win`).
        equals: Option<String>,
    },
    Server {
        /// The name as given (`crashes`, `latencyMs`, a custom name).
        name: String,
        metric: ServerMetric,
    },
}

/// One metric: the first of an experiment's is its primary metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub kind: MetricKind,
    pub source: MetricSource,
}

impl MetricSpec {
    /// Compared as two proportions (a telemetry binomial); everything else,
    /// server binomials included (a share per report), compares means.
    pub fn is_rate(&self) -> bool {
        self.kind == MetricKind::Binomial && matches!(self.source, MetricSource::Telemetry { .. })
    }

    /// What its stored sums and looks are kept under: its name, and for a
    /// server metric what it reads too, so a metric dropped and added back
    /// reading something else starts afresh.
    pub fn storage_key(&self) -> String {
        match &self.source {
            MetricSource::Telemetry { .. } => self.name.clone(),
            MetricSource::Server { name, .. } => {
                format!("{}@{}:{name}", self.name, self.kind.name())
            }
        }
    }

    /// The telemetry event type it reads, if it reads telemetry.
    pub fn event(&self) -> Option<&str> {
        match &self.source {
            MetricSource::Telemetry { event, .. } => Some(event),
            MetricSource::Server { .. } => None,
        }
    }
}

const SHAPE: &str = "{name, kind, event, field} or {name, kind, serverMetric}";

pub(super) fn parse_metrics(value: Option<&Value>) -> Result<Vec<MetricSpec>, FieldError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_METRICS => list,
        Some(_) => {
            return Err(error(
                "/metrics",
                format!("at most {MAX_METRICS} metrics [{SHAPE}]"),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut metrics = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let at = format!("/metrics/{index}");
        let Some(object) = item.as_object() else {
            return Err(error(&at, format!("an object {SHAPE}")));
        };
        keys_known(
            object,
            &at,
            &["name", "kind", "event", "field", "equals", "serverMetric"],
        )?;
        let name = short_name(object.get("name"), &format!("{at}/name"), 64)?;
        if !seen.insert(name.clone()) {
            return Err(error(
                &format!("{at}/name"),
                format!("{name} is named twice"),
            ));
        }
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|k| MetricKind::ALL.iter().find(|(n, _)| *n == k))
            .map(|(_, k)| *k)
            .ok_or_else(|| error(&format!("{at}/kind"), "binomial, count, sum or duration"))?;
        let source = match object.get("serverMetric") {
            None | Some(Value::Null) => telemetry_source(object, &at, kind)?,
            value => {
                if let Some(other) = ["event", "field", "equals"]
                    .into_iter()
                    .find(|k| object.get(*k).is_some_and(|v| !v.is_null()))
                {
                    return Err(error(
                        &format!("{at}/{other}"),
                        "a metric reads telemetry (event, field) or a server metric, not both",
                    ));
                }
                server_source(value, &format!("{at}/serverMetric"), kind)?
            }
        };
        metrics.push(MetricSpec { name, kind, source });
    }
    Ok(metrics)
}

fn telemetry_source(
    object: &serde_json::Map<String, Value>,
    at: &str,
    kind: MetricKind,
) -> Result<MetricSource, FieldError> {
    let event = short_name(object.get("event"), &format!("{at}/event"), 64)?;
    let field = match object.get("field") {
        None | Some(Value::Null) => None,
        value => Some(short_name(value, &format!("{at}/field"), 64)?),
    };
    match (kind, &field) {
        (MetricKind::Sum | MetricKind::Duration, None) => {
            return Err(error(
                &format!("{at}/field"),
                format!("a {} metric reads a payload field: name it", kind.name()),
            ));
        }
        (MetricKind::Count, Some(_)) => {
            return Err(error(
                &format!("{at}/field"),
                "a count metric counts events: it reads no field",
            ));
        }
        _ => {}
    }
    let equals = match object.get("equals") {
        None | Some(Value::Null) => None,
        Some(Value::String(text))
            if kind == MetricKind::Binomial
                && field.is_some()
                && !text.is_empty()
                && text.chars().count() <= 128
                && !text.chars().any(char::is_control) =>
        {
            Some(text.clone())
        }
        Some(_) => {
            return Err(error(
                &format!("{at}/equals"),
                "a text of 1 to 128 characters, on a binomial metric with a field",
            ));
        }
    };
    Ok(MetricSource::Telemetry {
        event,
        field,
        equals,
    })
}

fn server_source(
    value: Option<&Value>,
    at: &str,
    kind: MetricKind,
) -> Result<MetricSource, FieldError> {
    let name = short_name(value, at, 64)?;
    let counter = COUNTERS.iter().position(|c| *c == name);
    let metric = match (kind, counter) {
        (MetricKind::Binomial, Some(index)) | (MetricKind::Count, Some(index)) => {
            ServerMetric::Counter(index)
        }
        (MetricKind::Binomial, None) => {
            return Err(error(
                at,
                format!(
                    "a binomial server metric is a counter: one of {}",
                    COUNTERS.join(", ")
                ),
            ));
        }
        (MetricKind::Count, None) => ServerMetric::Histogram(name.clone()),
        (MetricKind::Sum | MetricKind::Duration, Some(_)) => {
            return Err(error(
                at,
                format!(
                    "{name} is a counter: read it as binomial or count (a {} reads a histogram or a custom metric)",
                    kind.name()
                ),
            ));
        }
        (MetricKind::Sum, None) => ServerMetric::Custom(name.clone()),
        (MetricKind::Duration, None) => ServerMetric::HistogramOrCustom(name.clone()),
    };
    Ok(MetricSource::Server { name, metric })
}

/// A histogram's sample count and sum, enough for its mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub sum: f64,
}

impl Moments {
    pub fn of(pairs: &[(u64, u64)]) -> Moments {
        pairs
            .iter()
            .fold(Moments::default(), |m, (value, count)| Moments {
                count: m.count.saturating_add(*count),
                sum: m.sum + *value as f64 * *count as f64,
            })
    }
}

/// One variant's share of one server's report, checked and decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariantSample {
    pub experiment: String,
    pub variant: String,
    pub players: u32,
    /// In [`COUNTERS`]' order.
    pub counters: [u64; 8],
    pub histograms: Vec<(String, Moments)>,
    pub custom: Vec<(String, f64)>,
}

impl VariantSample {
    fn histogram(&self, name: &str) -> Option<Moments> {
        self.histograms
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
    }

    fn custom(&self, name: &str) -> Option<f64> {
        self.custom.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// What one report gives a server metric: an amount `x` over a weight
/// `n` — the events, samples' sum or total of the variant's players over
/// their number (or over the histogram's samples for a mean) — or none
/// (no players, no samples, the metric not sent where it must be). A
/// variant's value is the ratio Σx / Σn over its reports, so a report
/// weighs as many players (or samples) as it covers.
pub fn observe(
    kind: MetricKind,
    metric: &ServerMetric,
    sample: &VariantSample,
) -> Option<(f64, f64)> {
    let players = f64::from(sample.players);
    let per_player = |total: f64| (sample.players > 0).then_some((total, players));
    match (kind, metric) {
        (MetricKind::Binomial, ServerMetric::Counter(index)) => {
            per_player(sample.counters[*index].min(u64::from(sample.players)) as f64)
        }
        (_, ServerMetric::Counter(index)) => per_player(sample.counters[*index] as f64),
        (_, ServerMetric::Histogram(name)) => {
            per_player(sample.histogram(name).map_or(0.0, |m| m.count as f64))
        }
        // A custom total not sent: nothing happened in that window.
        (_, ServerMetric::Custom(name)) => per_player(sample.custom(name).unwrap_or(0.0)),
        (_, ServerMetric::HistogramOrCustom(name)) => match sample.histogram(name) {
            Some(m) if m.count > 0 => Some((m.sum, m.count as f64)),
            Some(_) => None,
            None => sample.custom(name).map(|value| (value, 1.0)),
        },
    }
}

/// A variant's reports for one server metric: how many, and the sums of
/// `x`, `n`, `x²`, `n²` and `x·n` over them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RatioSums {
    pub reports: u64,
    pub x: f64,
    pub n: f64,
    pub xx: f64,
    pub nn: f64,
    pub xn: f64,
}

impl RatioSums {
    pub fn add(&mut self, x: f64, n: f64) {
        self.merge(&RatioSums {
            reports: 1,
            x,
            n,
            xx: x * x,
            nn: n * n,
            xn: x * n,
        });
    }

    pub fn merge(&mut self, other: &RatioSums) {
        self.reports += other.reports;
        self.x += other.x;
        self.n += other.n;
        self.xx += other.xx;
        self.nn += other.nn;
        self.xn += other.xn;
    }

    /// The ratio Σx / Σn as a mean whose `variance / n` is the ratio's
    /// variance with reports as clusters (the delta method:
    /// Σ(xᵢ − R·nᵢ)² / (k (k − 1) n̄²)), so Welch's t, the interval and
    /// the sequential test read it as any mean.
    pub fn sample(&self) -> MeanSample {
        let k = self.reports as f64;
        if self.reports == 0 || self.n <= 0.0 {
            return MeanSample {
                n: self.reports,
                mean: 0.0,
                variance: 0.0,
            };
        }
        let ratio = self.x / self.n;
        let variance = if self.reports < 2 {
            0.0
        } else {
            let mean_n = self.n / k;
            let residual = (self.xx - 2.0 * ratio * self.xn + ratio * ratio * self.nn).max(0.0);
            // Var(R) · k.
            residual / ((k - 1.0) * mean_n * mean_n)
        };
        MeanSample {
            n: self.reports,
            mean: ratio,
            variance: if variance.is_finite() { variance } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(metric: Value) -> Result<MetricSpec, FieldError> {
        parse_metrics(Some(&json!([metric]))).map(|mut m| m.remove(0))
    }

    #[test]
    fn server_metrics_read_a_counter_a_histogram_or_a_custom_metric_by_kind() {
        let crashes =
            parse(json!({"name": "crash", "kind": "binomial", "serverMetric": "crashes"})).unwrap();
        assert_eq!(
            crashes.source,
            MetricSource::Server {
                name: "crashes".into(),
                metric: ServerMetric::Counter(3)
            }
        );
        assert!(!crashes.is_rate());
        assert_eq!(crashes.event(), None);
        let latency =
            parse(json!({"name": "lag", "kind": "duration", "serverMetric": "latencyMs"})).unwrap();
        assert!(matches!(
            latency.source,
            MetricSource::Server {
                metric: ServerMetric::HistogramOrCustom(_),
                ..
            }
        ));
        let samples =
            parse(json!({"name": "n", "kind": "count", "serverMetric": "latencyMs"})).unwrap();
        assert!(matches!(
            samples.source,
            MetricSource::Server {
                metric: ServerMetric::Histogram(_),
                ..
            }
        ));
        let win =
            parse(json!({"name": "w", "kind": "binomial", "event": "run_end", "field": "won"}))
                .unwrap();
        assert!(win.is_rate());
        assert_eq!(win.event(), Some("run_end"));
        for (bad, path) in [
            (
                json!({"name": "x", "kind": "binomial", "serverMetric": "latencyMs"}),
                "/metrics/0/serverMetric",
            ),
            (
                json!({"name": "x", "kind": "sum", "serverMetric": "crashes"}),
                "/metrics/0/serverMetric",
            ),
            (
                json!({"name": "x", "kind": "count", "serverMetric": "crashes", "event": "run_end"}),
                "/metrics/0/event",
            ),
            (
                json!({"name": "x", "kind": "count", "serverMetric": "no spaces"}),
                "/metrics/0/serverMetric",
            ),
        ] {
            assert_eq!(parse(bad).unwrap_err().path, path);
        }
    }

    #[test]
    fn a_report_gives_an_amount_over_a_weight_per_metric() {
        let sample = VariantSample {
            experiment: "e".into(),
            variant: "v".into(),
            players: 40,
            counters: [80, 0, 0, 50, 0, 0, 0, 0],
            histograms: vec![("latencyMs".into(), Moments::of(&[(10, 3), (30, 1)]))],
            custom: vec![("gold".into(), 200.0)],
        };
        let at = |kind, metric: ServerMetric| observe(kind, &metric, &sample);
        // A share never passes 1, though a player may crash twice.
        assert_eq!(
            at(MetricKind::Binomial, ServerMetric::Counter(3)),
            Some((40.0, 40.0))
        );
        assert_eq!(
            at(MetricKind::Count, ServerMetric::Counter(0)),
            Some((80.0, 40.0))
        );
        assert_eq!(
            at(
                MetricKind::Count,
                ServerMetric::Histogram("latencyMs".into())
            ),
            Some((4.0, 40.0))
        );
        // A mean over the histogram's samples.
        assert_eq!(
            at(
                MetricKind::Duration,
                ServerMetric::HistogramOrCustom("latencyMs".into())
            ),
            Some((60.0, 4.0))
        );
        assert_eq!(
            at(
                MetricKind::Duration,
                ServerMetric::HistogramOrCustom("gold".into())
            ),
            Some((200.0, 1.0))
        );
        assert_eq!(
            at(MetricKind::Sum, ServerMetric::Custom("gold".into())),
            Some((200.0, 40.0))
        );
        // A total not sent is nothing earned.
        assert_eq!(
            at(MetricKind::Sum, ServerMetric::Custom("absent".into())),
            Some((0.0, 40.0))
        );
        let empty = VariantSample {
            players: 0,
            histograms: vec![("latencyMs".into(), Moments::default())],
            ..sample.clone()
        };
        assert_eq!(
            observe(MetricKind::Count, &ServerMetric::Counter(0), &empty),
            None
        );
        assert_eq!(
            observe(
                MetricKind::Duration,
                &ServerMetric::HistogramOrCustom("latencyMs".into()),
                &empty
            ),
            None
        );
    }

    #[test]
    fn a_ratio_weighs_reports_by_their_players_with_a_cluster_variance() {
        // One big server at 10 % and two small ones at 50 %: the ratio is
        // the players' rate, not the mean of the reports' rates.
        let mut sums = RatioSums::default();
        for (x, n) in [(50.0, 500.0), (5.0, 10.0), (5.0, 10.0)] {
            sums.add(x, n);
        }
        let sample = sums.sample();
        assert_eq!(sample.n, 3);
        assert!((sample.mean - 60.0 / 520.0).abs() < 1e-12);
        // Var(R) = Σ(xᵢ − R nᵢ)² / (k (k − 1) n̄²), worked out by hand.
        let r = 60.0 / 520.0;
        let residual: f64 = [(50.0, 500.0), (5.0, 10.0), (5.0, 10.0)]
            .iter()
            .map(|(x, n): &(f64, f64)| (x - r * n).powi(2))
            .sum();
        let mean_n = 520.0 / 3.0;
        let expected = residual / (3.0 * 2.0 * mean_n * mean_n);
        assert!(
            (sample.variance / 3.0 - expected).abs() < 1e-15,
            "{sample:?}"
        );
        let mut merged = RatioSums::default();
        merged.merge(&sums);
        assert_eq!(merged, sums);
        assert_eq!(RatioSums::default().sample().mean, 0.0);
    }

    #[test]
    fn a_server_metric_is_stored_under_what_it_reads() {
        let crashes =
            parse(json!({"name": "m", "kind": "binomial", "serverMetric": "crashes"})).unwrap();
        let errors =
            parse(json!({"name": "m", "kind": "binomial", "serverMetric": "errors"})).unwrap();
        assert_ne!(crashes.storage_key(), errors.storage_key());
        let telemetry = parse(json!({"name": "m", "kind": "count", "event": "run_end"})).unwrap();
        assert_eq!(telemetry.storage_key(), "m");
    }
}
