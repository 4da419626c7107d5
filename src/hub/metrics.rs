//! Checking `metrics` frames and decoding them once (HdrHistogram V2 bytes
//! into sparse pairs) for the deployment windows and the minute aggregates.

use crate::domain::window::Report;
use hdrhistogram::serialization::Deserializer;
use hotswap_client::{
    metrics::names,
    protocol::{EncodedHistogram, MetricsReport},
};

const MAX_HISTOGRAMS: usize = 32;
const MAX_PAIRS: usize = 10_000;
const MAX_ENCODED_BYTES: usize = 256 * 1024;
const MAX_PLAYERS: u32 = 10_000_000;
const MAX_CUSTOM: usize = 64;

/// Why a report is refused (sent back to the server as an `error` frame).
pub fn validate(report: &MetricsReport) -> Result<(), String> {
    if report.window_ms == 0 || report.window_ms > 3_600_000 {
        return Err("windowMs must be between 1 and 3600000".into());
    }
    if report.players > MAX_PLAYERS {
        return Err(format!("players must be at most {MAX_PLAYERS}"));
    }
    if report.histograms.len() > MAX_HISTOGRAMS {
        return Err(format!("at most {MAX_HISTOGRAMS} histograms per report"));
    }
    for (name, histogram) in &report.histograms {
        if name.is_empty() || name.len() > 64 {
            return Err("histogram names are 1-64 characters".into());
        }
        match histogram {
            EncodedHistogram::Sparse(pairs) => {
                if pairs.len() > MAX_PAIRS {
                    return Err(format!(
                        "histogram {name}: at most {MAX_PAIRS} [value, count] pairs"
                    ));
                }
                if pairs.iter().any(|(value, _)| *value > (1 << 40)) {
                    return Err(format!("histogram {name}: a value is out of range"));
                }
            }
            EncodedHistogram::HdrV2(bytes) => {
                if bytes.len() > MAX_ENCODED_BYTES {
                    return Err(format!(
                        "histogram {name}: larger than {MAX_ENCODED_BYTES} bytes"
                    ));
                }
                Deserializer::new()
                    .deserialize::<u64, _>(&mut bytes.as_slice())
                    .map_err(|e| {
                        format!("histogram {name}: not an HdrHistogram V2 encoding ({e:?})")
                    })?;
            }
        }
    }
    if report.custom.len() > MAX_CUSTOM || report.custom.values().any(|v| !v.is_finite()) {
        return Err(format!("custom: at most {MAX_CUSTOM} finite numbers"));
    }
    Ok(())
}

/// Decodes a validated report once, for every window and aggregate it feeds.
/// Players count as exposure weighted by the report's window against the
/// nominal interval (`metrics_ms`, clamped to 0.1-10×), so a report covering
/// a long or short stretch weighs what it covers.
pub fn decode(report: &MetricsReport, healthy: bool, metrics_ms: u64) -> Report {
    let weight = (report.window_ms as f64 / metrics_ms.max(1) as f64).clamp(0.1, 10.0);
    let pairs = |name: &str| -> Vec<(u64, u64)> {
        match report.histograms.get(name) {
            Some(EncodedHistogram::Sparse(pairs)) => pairs.clone(),
            Some(EncodedHistogram::HdrV2(bytes)) => Deserializer::new()
                .deserialize::<u64, _>(&mut bytes.as_slice())
                .map(|h| {
                    h.iter_recorded()
                        .map(|v| (v.value_iterated_to(), v.count_at_value()))
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    Report {
        players: (f64::from(report.players) * weight).round() as u64,
        sessions_started: report.sessions_started,
        sessions_ended: report.sessions_ended,
        churned: report.churned,
        crashes: report.crashes,
        errors: report.errors,
        requests: report.requests,
        complaints: report.complaints,
        purchases: report.purchases,
        healthy,
        latency_ms: pairs(names::LATENCY_MS),
        session_secs: pairs(names::SESSION_SECS),
        fps: pairs(names::FPS),
        custom: report
            .custom
            .iter()
            .map(|(name, value)| (name.clone(), *value))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::{
        Histogram,
        serialization::{Serializer, V2DeflateSerializer, V2Serializer},
    };

    fn report() -> MetricsReport {
        MetricsReport {
            seq: 1,
            window_ms: 1000,
            players: 10,
            ..Default::default()
        }
    }

    #[test]
    fn sparse_and_encoded_histograms_are_accepted() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        histogram.record_n(25, 10).unwrap();
        let mut plain = Vec::new();
        V2Serializer::new()
            .serialize(&histogram, &mut plain)
            .unwrap();
        let mut deflated = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut deflated)
            .unwrap();
        let mut ok = report();
        ok.histograms.insert(
            "latencyMs".into(),
            EncodedHistogram::Sparse(vec![(20, 3), (45, 1)]),
        );
        ok.histograms
            .insert("fps".into(), EncodedHistogram::HdrV2(plain));
        ok.histograms
            .insert("sessionSecs".into(), EncodedHistogram::HdrV2(deflated));
        assert_eq!(validate(&ok), Ok(()));
    }

    #[test]
    fn encoded_and_sparse_histograms_decode_to_the_same_pairs() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        histogram.record_n(25, 10).unwrap();
        histogram.record_n(40, 2).unwrap();
        let mut deflated = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut deflated)
            .unwrap();
        let mut r = report();
        r.crashes = 3;
        r.histograms
            .insert("latencyMs".into(), EncodedHistogram::HdrV2(deflated));
        r.histograms.insert(
            "sessionSecs".into(),
            EncodedHistogram::Sparse(vec![(300, 4)]),
        );
        let decoded = decode(&r, false, 1000);
        assert_eq!(decoded.latency_ms, vec![(25, 10), (40, 2)]);
        assert_eq!(decoded.session_secs, vec![(300, 4)]);
        assert_eq!(
            (decoded.players, decoded.crashes, decoded.healthy),
            (10, 3, false)
        );
    }

    #[test]
    fn broken_reports_say_what_is_wrong() {
        let mut zero_window = report();
        zero_window.window_ms = 0;
        assert!(validate(&zero_window).unwrap_err().contains("windowMs"));
        let mut garbage = report();
        garbage
            .histograms
            .insert("fps".into(), EncodedHistogram::HdrV2(vec![1, 2, 3, 4]));
        assert!(validate(&garbage).unwrap_err().contains("fps"));
        let mut nan = report();
        nan.custom.insert("x".into(), f64::NAN);
        assert!(validate(&nan).is_err());
    }
}
