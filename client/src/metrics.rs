//! The game server's side of player metrics: counters and HDR histograms
//! aggregated locally over all players, taken as one `metrics` frame per
//! interval. Recording is a relaxed atomic add, or a short lock for
//! histograms, so game threads can call it freely.
//!
//! Players in an experiment also record into the recorder of their
//! variant ([`MetricsRecorder::for_variant`]): each report then carries
//! the same metrics split by variant, which the hub compares.

use crate::protocol::{EncodedHistogram, MetricsReport, VariantMetrics};
use crate::sync::lock;
use hdrhistogram::Histogram;
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

/// Names of the histograms the hub's judgement reads.
pub mod names {
    pub const LATENCY_MS: &str = "latencyMs";
    pub const SESSION_SECS: &str = "sessionSecs";
    pub const FPS: &str = "fps";
    /// The counters of a report, by their wire names.
    pub const COUNTERS: [&str; 8] = [
        "sessionsStarted",
        "sessionsEnded",
        "churned",
        "crashes",
        "errors",
        "requests",
        "complaints",
        "purchases",
    ];
}

/// The most variants one report splits into (the hub refuses more).
pub const MAX_VARIANTS: usize = 16;

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
    /// A variant's recorder: the players it covers now (set by the game).
    players: AtomicU32,
    /// (experiment, variant) → that variant's recorder.
    variants: Mutex<BTreeMap<(String, String), Arc<MetricsRecorder>>>,
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

    /// The recorder of one experiment variant: what is recorded there
    /// reaches the hub as that variant's share of each report (record a
    /// player's metrics both here and in the server's recorder). At most
    /// [`MAX_VARIANTS`] are kept; past that the extra variant's recorder
    /// records nothing the hub sees, and `None` says so.
    pub fn for_variant(&self, experiment: &str, variant: &str) -> Option<Arc<MetricsRecorder>> {
        let mut variants = lock(&self.variants);
        let key = (experiment.to_owned(), variant.to_owned());
        if let Some(recorder) = variants.get(&key) {
            return Some(recorder.clone());
        }
        if variants.len() >= MAX_VARIANTS {
            return None;
        }
        let recorder = Arc::new(MetricsRecorder::new());
        variants.insert(key, recorder.clone());
        Some(recorder)
    }

    /// Stops splitting by this variant (its experiment ended).
    pub fn forget_variant(&self, experiment: &str, variant: &str) {
        lock(&self.variants).remove(&(experiment.to_owned(), variant.to_owned()));
    }

    /// On a variant's recorder: how many of the server's players are in
    /// the variant now (each report carries it).
    pub fn set_players(&self, players: u32) {
        self.players.store(players, Ordering::Relaxed);
    }

    /// Everything recorded since the last call, as a report; the recorder starts over.
    pub fn take(&self, window_ms: u64, players: u32) -> MetricsReport {
        // Each experiment's variants together never count more players
        // than the report (players join and leave between the counts).
        let mut room: BTreeMap<&str, u32> = BTreeMap::new();
        let variants = lock(&self.variants);
        let experiments = variants
            .iter()
            .map(|((experiment, variant), recorder)| {
                let part = recorder.take(window_ms, recorder.players.load(Ordering::Relaxed));
                let left = room.entry(experiment.as_str()).or_insert(players);
                let counted = part.players.min(*left);
                *left -= counted;
                VariantMetrics {
                    experiment: experiment.clone(),
                    variant: variant.clone(),
                    players: counted,
                    sessions_started: part.sessions_started,
                    sessions_ended: part.sessions_ended,
                    churned: part.churned,
                    crashes: part.crashes,
                    errors: part.errors,
                    requests: part.requests,
                    complaints: part.complaints,
                    purchases: part.purchases,
                    histograms: part.histograms,
                    custom: part.custom,
                }
            })
            .collect();
        drop(variants);
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
            experiments,
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

    #[test]
    fn a_variant_recorder_splits_each_report_by_variant() {
        let recorder = MetricsRecorder::new();
        let treatment = recorder.for_variant("drop-rates", "treatment").unwrap();
        treatment.set_players(30);
        treatment.record_crash();
        treatment.record_latency_ms(50);
        recorder.record_crash();
        let again = recorder.for_variant("drop-rates", "treatment").unwrap();
        assert!(Arc::ptr_eq(&treatment, &again));
        let report = recorder.take(1000, 20);
        assert_eq!(report.experiments.len(), 1);
        let part = &report.experiments[0];
        assert_eq!(
            (part.experiment.as_str(), part.variant.as_str()),
            ("drop-rates", "treatment")
        );
        // Never more players than the report's own.
        assert_eq!((part.players, part.crashes), (20, 1));
        assert!(part.histograms.contains_key(names::LATENCY_MS));
        let next = recorder.take(1000, 40);
        assert_eq!(
            (next.experiments[0].players, next.experiments[0].crashes),
            (30, 0)
        );
        for n in 0..MAX_VARIANTS {
            let _ = recorder.for_variant("many", &n.to_string());
        }
        assert!(recorder.for_variant("one", "more").is_none());
        recorder.forget_variant("drop-rates", "treatment");
        assert!(recorder.for_variant("one", "more").is_some());
        // An experiment's variants share the report's players.
        let split = MetricsRecorder::new();
        for variant in ["a", "b"] {
            split.for_variant("e", variant).unwrap().set_players(15);
        }
        let report = split.take(1000, 20);
        let players: Vec<u32> = report.experiments.iter().map(|p| p.players).collect();
        assert_eq!(players, vec![15, 5]);
    }
}
