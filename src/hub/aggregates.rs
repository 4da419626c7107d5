//! Player metrics per minute, region, deployment and cohort: folded in
//! memory as reports arrive, written to the store by the flusher once a
//! minute is over, kept `metrics_retention_days`, and read back by
//! `GET /metrics/aggregated`.

use crate::{
    domain::{
        judgement::CohortWindow,
        stats::SparseHistogram,
        window::{Report, Tally},
    },
    store::hub::MetricMinuteRow,
};
use hotswap_client::sync::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

const MINUTE_MS: i64 = 60_000;
/// The row of all servers (no deployment).
pub const ALL: &str = "";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    minute: i64,
    region: Arc<str>,
    deployment: Arc<str>,
    cohort: Arc<str>,
}

#[derive(Debug, Default)]
pub(super) struct Aggregates {
    pending: Mutex<HashMap<Key, Tally, ahash::RandomState>>,
    /// Finished minutes whose write failed, retried at the next flush.
    unwritten: Mutex<Vec<MetricMinuteRow>>,
}

fn pairs_json(histogram: &SparseHistogram) -> String {
    serde_json::to_string(histogram.buckets()).expect("pairs serialize")
}

fn histogram(text: &str) -> SparseHistogram {
    SparseHistogram::from_pairs(serde_json::from_str::<Vec<(u64, u64)>>(text).unwrap_or_default())
}

pub fn from_row(row: &MetricMinuteRow) -> CohortWindow {
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    CohortWindow {
        reports: count(row.reports),
        players: count(row.players),
        sessions_started: count(row.sessions_started),
        sessions_ended: count(row.sessions_ended),
        churned: count(row.churned),
        crashes: count(row.crashes),
        errors: count(row.errors),
        requests: count(row.requests),
        complaints: count(row.complaints),
        purchases: count(row.purchases),
        latency_ms: histogram(&row.latency_ms),
        session_secs: histogram(&row.session_secs),
        fps: histogram(&row.fps),
        ..Default::default()
    }
}

fn to_row(key: &Key, window: &CohortWindow) -> MetricMinuteRow {
    let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    MetricMinuteRow {
        minute: key.minute,
        region: key.region.to_string(),
        deployment_id: key.deployment.to_string(),
        cohort: key.cohort.to_string(),
        reports: count(window.reports),
        players: count(window.players),
        sessions_started: count(window.sessions_started),
        sessions_ended: count(window.sessions_ended),
        churned: count(window.churned),
        crashes: count(window.crashes),
        errors: count(window.errors),
        requests: count(window.requests),
        complaints: count(window.complaints),
        purchases: count(window.purchases),
        latency_ms: pairs_json(&window.latency_ms),
        session_secs: pairs_json(&window.session_secs),
        fps: pairs_json(&window.fps),
    }
}

impl Aggregates {
    fn key(at_ms: i64, region: &Arc<str>, deployment: &Arc<str>, cohort: &Arc<str>) -> Key {
        Key {
            minute: at_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            region: region.clone(),
            deployment: deployment.clone(),
            cohort: cohort.clone(),
        }
    }

    pub fn fold(
        &self,
        at_ms: i64,
        region: &Arc<str>,
        deployment: &Arc<str>,
        cohort: &Arc<str>,
        report: &Report,
    ) {
        lock(&self.pending)
            .entry(Self::key(at_ms, region, deployment, cohort))
            .or_default()
            .fold(report);
    }

    pub fn complaints(
        &self,
        at_ms: i64,
        region: &Arc<str>,
        deployment: &Arc<str>,
        cohort: &Arc<str>,
        count: u64,
    ) {
        lock(&self.pending)
            .entry(Self::key(at_ms, region, deployment, cohort))
            .or_default()
            .add_complaints(count);
    }

    /// Minutes that are over, as rows to write (with any left from a failed write).
    pub fn take_finished(&self, now_ms: i64) -> Vec<MetricMinuteRow> {
        let current = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let finished: Vec<(Key, Tally)> = {
            let mut pending = lock(&self.pending);
            let keys: Vec<Key> = pending
                .keys()
                .filter(|k| k.minute < current)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k).map(|t| (k, t)))
                .collect()
        };
        let mut rows = std::mem::take(&mut *lock(&self.unwritten));
        rows.extend(
            finished
                .iter()
                .map(|(key, tally)| to_row(key, &Tally::total([tally]))),
        );
        rows
    }

    /// Rows whose write failed: kept for the next flush (bounded).
    pub fn retry(&self, rows: Vec<MetricMinuteRow>) {
        let mut unwritten = lock(&self.unwritten);
        unwritten.extend(rows);
        let excess = unwritten.len().saturating_sub(100_000);
        unwritten.drain(..excess);
    }

    /// Minutes not yet written, from `since` on, matching the filters, by cohort.
    pub fn pending(
        &self,
        since: i64,
        region: Option<&str>,
        deployment: &str,
    ) -> Vec<(String, CohortWindow)> {
        let pending = lock(&self.pending);
        let mut out: Vec<(String, CohortWindow)> = pending
            .iter()
            .filter(|(k, _)| {
                k.minute >= since
                    && &*k.deployment == deployment
                    && region.is_none_or(|r| r.eq_ignore_ascii_case(&k.region))
            })
            .map(|(k, tally)| (k.cohort.to_string(), Tally::total([tally])))
            .collect();
        out.extend(
            lock(&self.unwritten)
                .iter()
                .filter(|r| {
                    r.minute >= since
                        && r.deployment_id == deployment
                        && region.is_none_or(|x| x.eq_ignore_ascii_case(&r.region))
                })
                .map(|r| (r.cohort.clone(), from_row(r))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_fold_finish_and_read_back() {
        let aggregates = Aggregates::default();
        let (eu, all, cohort): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("EU-WEST"), Arc::from(ALL), Arc::from("all"));
        let report = Report {
            players: 100,
            crashes: 2,
            healthy: true,
            latency_ms: vec![(20, 3), (30, 1)],
            ..Default::default()
        };
        aggregates.fold(60_500, &eu, &all, &cohort, &report);
        aggregates.fold(61_000, &eu, &all, &cohort, &report);
        aggregates.fold(120_100, &eu, &all, &cohort, &report);
        assert_eq!(aggregates.pending(0, Some("eu-west"), ALL).len(), 2);
        assert!(aggregates.pending(0, Some("APAC"), ALL).is_empty());
        let rows = aggregates.take_finished(120_200);
        assert_eq!(rows.len(), 1, "only the minute that is over");
        let back = from_row(&rows[0]);
        assert_eq!((back.reports, back.players, back.crashes), (2, 200, 4));
        assert_eq!(back.latency_ms.buckets(), &[(20, 6), (30, 2)]);
        aggregates.retry(rows);
        assert_eq!(aggregates.pending(0, None, ALL).len(), 2);
        assert_eq!(aggregates.take_finished(120_200).len(), 1);
    }
}
