//! The game server's side of player metrics: counters and HDR histograms
//! aggregated locally over all players, taken as one `metrics` frame per
//! interval. Recording is a relaxed atomic add, or a short lock for
//! histograms, so game threads can call it freely.

use crate::protocol::{EncodedHistogram, MetricsReport};
use crate::sync::lock;
use hdrhistogram::Histogram;
use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Names of the histograms the hub's judgement reads.
pub mod names {
    pub const LATENCY_MS: &str = "latencyMs";
    pub const SESSION_SECS: &str = "sessionSecs";
    pub const FPS: &str = "fps";
}

#[derive(Default)]
struct Counters {
    sessions_started: AtomicU64,
    sessions_ended: AtomicU64,
    churned: AtomicU64,
    crashes: AtomicU64,
    errors: AtomicU64,
    requests: AtomicU64,
    complaints: AtomicU64,
    purchases: AtomicU64,
}

/// Aggregates a server's player metrics between two reports.
#[derive(Default)]
pub struct MetricsRecorder {
    counters: Counters,
    histograms: Mutex<BTreeMap<String, Histogram<u64>>>,
    custom: Mutex<BTreeMap<String, f64>>,
    seq: AtomicU64,
}

impl std::fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRecorder").finish_non_exhaustive()
    }
}

impl MetricsRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `count` samples of `value` in the named histogram.
    pub fn record(&self, histogram: &str, value: u64, count: u64) {
        let mut histograms = lock(&self.histograms);
        let entry = histograms.entry(histogram.to_owned()).or_insert_with(|| {
            // Auto-resizing with 2 significant digits: ~1% precision, small memory.
            let mut h = Histogram::new(2).expect("2 significant digits is valid");
            h.auto(true);
            h
        });
        let _ = entry.record_n(value.max(1), count);
    }

    pub fn record_latency_ms(&self, latency_ms: u64) {
        self.record(names::LATENCY_MS, latency_ms, 1);
    }

    pub fn record_fps(&self, fps: u64) {
        self.record(names::FPS, fps, 1);
    }

    /// A player's session ended after `secs` seconds.
    pub fn record_session_end(&self, secs: u64) {
        self.counters.sessions_ended.fetch_add(1, Ordering::Relaxed);
        self.record(names::SESSION_SECS, secs, 1);
    }

    pub fn record_session_start(&self) {
        self.counters
            .sessions_started
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_churn(&self) {
        self.counters.churned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_crash(&self) {
        self.counters.crashes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_request(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_complaint(&self) {
        self.counters.complaints.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_purchase(&self) {
        self.counters.purchases.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds to several counters at once (a harness simulating many players).
    pub fn add_counts(
        &self,
        sessions_started: u64,
        sessions_ended: u64,
        churned: u64,
        crashes: u64,
        errors: u64,
        requests: u64,
        complaints: u64,
        purchases: u64,
    ) {
        let c = &self.counters;
        for (counter, value) in [
            (&c.sessions_started, sessions_started),
            (&c.sessions_ended, sessions_ended),
            (&c.churned, churned),
            (&c.crashes, crashes),
            (&c.errors, errors),
            (&c.requests, requests),
            (&c.complaints, complaints),
            (&c.purchases, purchases),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }

    /// Sets a custom metric (last value wins within an interval).
    pub fn set_custom(&self, name: &str, value: f64) {
        if value.is_finite() {
            lock(&self.custom).insert(name.to_owned(), value);
        }
    }

    /// Everything recorded since the last call, as a report; the recorder starts over.
    pub fn take(&self, window_ms: u64, players: u32) -> MetricsReport {
        let c = &self.counters;
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let histograms = std::mem::take(&mut *lock(&self.histograms))
            .into_iter()
            .map(|(name, histogram)| {
                let pairs = histogram
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect();
                (name, EncodedHistogram::Sparse(pairs))
            })
            .collect();
        MetricsReport {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            window_ms: window_ms.max(1),
            players,
            sessions_started: take(&c.sessions_started),
            sessions_ended: take(&c.sessions_ended),
            churned: take(&c.churned),
            crashes: take(&c.crashes),
            errors: take(&c.errors),
            requests: take(&c.requests),
            complaints: take(&c.complaints),
            purchases: take(&c.purchases),
            histograms,
            custom: std::mem::take(&mut *lock(&self.custom)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_what_was_recorded_and_the_recorder_starts_over() {
        let recorder = MetricsRecorder::new();
        for latency in [20, 20, 40] {
            recorder.record_latency_ms(latency);
        }
        recorder.record_crash();
        recorder.record_session_end(300);
        recorder.set_custom("goldPerMatch", 12.5);
        let report = recorder.take(1000, 42);
        assert_eq!(
            (
                report.seq,
                report.players,
                report.crashes,
                report.sessions_ended
            ),
            (1, 42, 1, 1)
        );
        let EncodedHistogram::Sparse(pairs) = &report.histograms[names::LATENCY_MS] else {
            panic!("sparse")
        };
        assert_eq!(pairs.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(report.custom["goldPerMatch"], 12.5);
        let next = recorder.take(1000, 42);
        assert_eq!((next.seq, next.crashes), (2, 0));
        assert!(next.histograms.is_empty());
    }
}
