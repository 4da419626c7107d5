//! Engagement of live events, from the servers' metrics frames: for each
//! occurrence and region, the sessions started and purchases on the
//! servers it covers, and the custom counters the game reports for the
//! event (`event.<name>.participants`, `event.<name>.conversions`).
//! Participation rate = participants ÷ sessions started on the covered
//! servers during the occurrence. Kept in memory (bounded: events ×
//! occurrences × regions), from the hub's start.

use super::{LiveOps, LiveOpsError, LiveOpsResult, views::EngagementView};
use crate::{catalog::views::rfc3339, domain::window::Report};
use hotswap_client::sync::lock;
use std::collections::BTreeMap;

/// Occurrence × region tallies kept per event (the oldest go first).
const KEPT_PER_EVENT: usize = 4_096;

/// What one occurrence drew in one region.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub participants: f64,
    pub conversions: f64,
    pub purchases: u64,
    pub sessions: u64,
    pub reports: u64,
}

/// Tallies by event, then (occurrence start, region).
pub(super) type Tallies = BTreeMap<String, BTreeMap<(i64, String), Tally>>;

impl LiveOps {
    /// Folds one server's report into the events in force in its region.
    pub(super) fn fold_engagement(&self, region: &str, report: &Report) {
        let definitions = self.definitions();
        let mut touched: Vec<(String, i64, Tally)> = Vec::new();
        for event in definitions.events.values() {
            let Some(slot) = event.applied.iter().find(|slot| match &slot.region {
                Some(own) => own.eq_ignore_ascii_case(region),
                None => {
                    event.spec.regions.is_empty()
                        || event
                            .spec
                            .regions
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(region))
                }
            }) else {
                continue;
            };
            let name = event.name();
            let mut tally = Tally {
                purchases: report.purchases,
                sessions: report.sessions_started,
                reports: 1,
                ..Tally::default()
            };
            for (metric, value) in &report.custom {
                let Some(rest) = metric
                    .strip_prefix("event.")
                    .and_then(|m| m.strip_prefix(name))
                else {
                    continue;
                };
                match rest {
                    ".participants" => tally.participants += value.max(0.0),
                    ".conversions" => tally.conversions += value.max(0.0),
                    _ => {}
                }
            }
            touched.push((name.to_owned(), slot.start_ms, tally));
        }
        if touched.is_empty() {
            return;
        }
        let region = region.to_ascii_uppercase();
        let mut tallies = lock(&self.engagement);
        for (event, start, add) in touched {
            let per_event = tallies.entry(event).or_default();
            let tally = per_event.entry((start, region.clone())).or_default();
            tally.participants += add.participants;
            tally.conversions += add.conversions;
            tally.purchases = tally.purchases.saturating_add(add.purchases);
            tally.sessions = tally.sessions.saturating_add(add.sessions);
            tally.reports += 1;
            while per_event.len() > KEPT_PER_EVENT {
                per_event.pop_first();
            }
        }
    }

    /// An event's engagement per occurrence and region, filtered.
    pub async fn engagement(
        &self,
        name: &str,
        region: Option<&str>,
        occurrence: Option<i64>,
    ) -> LiveOpsResult<EngagementView> {
        // Since the event was created, or its first occurrence in force
        // started, whichever is earlier (one created late counts from
        // its scheduled start).
        let Some(created_at) = self.definitions().events.get(name).map(|e| {
            e.applied
                .iter()
                .map(|slot| slot.start_ms)
                .fold(e.created_at, i64::min)
        }) else {
            return Err(LiveOpsError::EventNotFound(name.to_owned()));
        };
        let to = crate::store::now_ms();
        let from = created_at.max(to - crate::domain::kpis::MAX_WINDOW_DAYS * 86_400_000);
        let (participants, joins, progress, completions, runs) = {
            let mut conn = self.store.conn().await?;
            crate::store::kpis::event_participation(&mut conn, self.store.backend(), name, from, to)
                .await?
        };
        let telemetry = super::views::TelemetryEngagement {
            from: rfc3339(from),
            to: rfc3339(to),
            participants,
            joins,
            progress,
            completions,
            runs,
        };
        let tallies = lock(&self.engagement);
        let items = tallies
            .get(name)
            .into_iter()
            .flat_map(|per_event| per_event.iter())
            .filter(|((start, r), _)| {
                region.is_none_or(|want| r.eq_ignore_ascii_case(want))
                    && occurrence.is_none_or(|want| *start == want)
            })
            .map(|((start, region), tally)| super::views::EngagementItem {
                occurrence: rfc3339(*start),
                region: region.clone(),
                participants: tally.participants,
                participation_rate: (tally.sessions > 0)
                    .then(|| (tally.participants / tally.sessions as f64).min(1.0)),
                conversions: tally.conversions,
                purchases: tally.purchases,
                sessions: tally.sessions,
                reports: tally.reports,
            })
            .collect();
        Ok(EngagementView {
            event: name.to_owned(),
            items,
            telemetry,
        })
    }
}
