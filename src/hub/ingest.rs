//! Metric ingest: where a server's report goes (its region, its cohort in
//! every deployment it takes part in) and folding it there, from memory.

use super::{
    Hub, aggregates,
    engine::{Event, RunHandle},
};
use hotswap_actors::ServerRecord;
use hotswap_client::protocol::Health;
use std::sync::{Arc, atomic::Ordering};

/// What a server's players reported: a metrics frame, or feedback.
pub(crate) enum Ingest {
    Report(Arc<crate::domain::window::Report>),
    Complaints(u64),
}

/// Where one server's report goes: its region, and its cohort in every
/// deployment it takes part in, as of `at_ms`.
pub(crate) struct Destinations {
    at_ms: i64,
    region: Arc<str>,
    pub(super) healthy: bool,
    cohorts: Vec<Cohort>,
}

/// Per deployment: its actor here (none while it is being created, or when
/// another node drives it: `mirror`), its id, the cohort.
type Cohort = (Option<RunHandle>, bool, Arc<str>, Arc<str>);

/// The minute aggregates' key for every server of every deployment.
fn everyone() -> (Arc<str>, Arc<str>) {
    static EVERYONE: std::sync::OnceLock<(Arc<str>, Arc<str>)> = std::sync::OnceLock::new();
    EVERYONE
        .get_or_init(|| (Arc::from(aggregates::ALL), Arc::from("all")))
        .clone()
}

impl Hub {
    /// Sends every metrics report to `sink` too (once; later calls are ignored).
    pub fn set_report_sink(&self, sink: super::ReportSink) {
        let _ = self.report_sink.set(sink);
    }

    /// Sends each report's split by experiment variant to `sink` (once;
    /// later calls are ignored).
    pub fn set_variant_sink(&self, sink: super::VariantSink) {
        let _ = self.variant_sink.set(sink);
    }

    /// Where what `record`'s players report goes. Cheap enough to run under
    /// the registry's lock, which the metric path does to copy nothing of
    /// the record (lock order: registry, then serving, then a run's record;
    /// nothing takes them the other way round). `report`: a metrics report,
    /// which counts for no cohort if it began before the server switched.
    pub(crate) fn destinations(
        &self,
        record: &ServerRecord,
        report: bool,
        at_ms: i64,
    ) -> Destinations {
        let mut cohorts = Vec::new();
        let serving = self.serving_read();
        for config in &record.subscriptions {
            let Some(entry) = serving.get(config) else {
                continue;
            };
            let Some(live) = entry
                .live()
                .filter(|_| entry.environment == record.environment)
            else {
                continue;
            };
            let Some(cohort) = entry.cohort_of(record, record.applied.get(config).copied()) else {
                continue;
            };
            // A report that began before the server switched revision
            // mixes both: it counts for neither cohort.
            if report
                && live
                    .record
                    .switched_since(&record.server_id, at_ms - self.settings.metrics_ms as i64)
            {
                continue;
            }
            cohorts.push((
                live.handle.clone(),
                live.mirror,
                live.deployment_id.clone(),
                cohort,
            ));
        }
        Destinations {
            at_ms,
            region: self.regions.name(&record.region, &record.key_id),
            healthy: record.status == Health::Healthy,
            cohorts,
        }
    }

    /// Folds what a server's players reported into the minute aggregates
    /// and into the cohort windows of every deployment the server is part of.
    pub(super) fn ingest(&self, to: Destinations, ingest: Ingest) {
        let Destinations {
            at_ms: at,
            region,
            cohorts,
            ..
        } = to;
        let (all, everyone) = everyone();
        if let (Ingest::Report(report), Some(sink)) = (&ingest, self.report_sink.get()) {
            sink(&region, report, at);
        }
        match &ingest {
            Ingest::Report(report) => self.aggregates.fold(at, &region, &all, &everyone, report),
            Ingest::Complaints(n) => self.aggregates.complaints(at, &region, &all, &everyone, *n),
        }
        for (handle, mirror, deployment, cohort) in cohorts {
            match &ingest {
                Ingest::Report(report) => {
                    self.aggregates
                        .fold(at, &region, &deployment, &cohort, report)
                }
                Ingest::Complaints(n) => {
                    self.aggregates
                        .complaints(at, &region, &deployment, &cohort, *n)
                }
            }
            let Some(handle) = handle else {
                if mirror {
                    // Its owner is another node: gathered into a slice.
                    self.gather_slice(&deployment, &cohort, &region, at, &ingest);
                }
                continue;
            };
            let event = match &ingest {
                Ingest::Report(report) => Event::Metrics {
                    cohort,
                    region: region.clone(),
                    report: report.clone(),
                    at_ms: at,
                },
                Ingest::Complaints(count) => Event::Complaints {
                    cohort,
                    region: region.clone(),
                    count: *count,
                    at_ms: at,
                },
            };
            if !handle.event(event) {
                self.stats
                    .metric_events_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
