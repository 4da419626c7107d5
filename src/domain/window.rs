//! Sliding windows of player metrics, one per cohort of a deployment.
//!
//! A window is a ring of time slots (one second by default). Folding a
//! report adds its counters and appends its histogram pairs to the current
//! slot: no histogram is merged per report. Pairs are merged (sorted and
//! de-duplicated) when a slot holds too many, once when the slot closes (so
//! reading a minute of 10,000 servers merges 60 small histograms, not
//! 600,000 reports' pairs), and when the window is read for a judgement.

use super::{judgement::CohortWindow, stats::SparseHistogram};

/// One `metrics` frame, decoded once and shared by every window it feeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub players: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub churned: u64,
    pub crashes: u64,
    pub errors: u64,
    pub requests: u64,
    pub complaints: u64,
    pub purchases: u64,
    /// Whether the server reported itself healthy when this frame arrived.
    pub healthy: bool,
    pub latency_ms: Vec<(u64, u64)>,
    pub session_secs: Vec<(u64, u64)>,
    pub fps: Vec<(u64, u64)>,
    pub custom: Vec<(String, f64)>,
}

/// Pairs a slot holds before they are merged.
const COMPACT_AT: usize = 4_096;

#[derive(Debug, Clone, Default)]
struct Pending {
    pairs: Vec<(u64, u64)>,
}

impl Pending {
    fn extend(&mut self, pairs: &[(u64, u64)]) {
        self.pairs.extend_from_slice(pairs);
        if self.pairs.len() > COMPACT_AT {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let merged = SparseHistogram::from_pairs(self.pairs.drain(..));
        self.pairs.extend_from_slice(merged.buckets());
    }
}

/// Latency, session and fps pairs being gathered for a merge.
type HistogramBuffers<'a> = (
    &'a mut Vec<(u64, u64)>,
    &'a mut Vec<(u64, u64)>,
    &'a mut Vec<(u64, u64)>,
);

/// Counters and unmerged histogram pairs: one slot of a window, or one
/// minute of the stored aggregates.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    counts: CohortWindow,
    latency: Pending,
    sessions: Pending,
    fps: Pending,
}

impl Tally {
    pub fn fold(&mut self, report: &Report) {
        let c = &mut self.counts;
        // Saturating: reports are bounded at the edge, sums never wrap.
        c.reports = c.reports.saturating_add(1);
        c.players = c.players.saturating_add(report.players);
        c.sessions_started = c.sessions_started.saturating_add(report.sessions_started);
        c.sessions_ended = c.sessions_ended.saturating_add(report.sessions_ended);
        c.churned = c.churned.saturating_add(report.churned);
        c.crashes = c.crashes.saturating_add(report.crashes);
        c.errors = c.errors.saturating_add(report.errors);
        c.requests = c.requests.saturating_add(report.requests);
        c.complaints = c.complaints.saturating_add(report.complaints);
        c.purchases = c.purchases.saturating_add(report.purchases);
        c.health_checks += 1;
        c.health_failures += u64::from(!report.healthy);
        for (name, value) in &report.custom {
            let Some(entry) = super::judgement::custom_entry(&mut c.custom, name) else {
                continue;
            };
            entry.0 += value;
            entry.1 = entry.1.saturating_add(1);
        }
        self.latency.extend(&report.latency_ms);
        self.sessions.extend(&report.session_secs);
        self.fps.extend(&report.fps);
    }

    /// Merges the pending pairs (once a slot is closed: every later read
    /// of the window then merges a few hundred values per slot, not every
    /// report's pairs again).
    fn compact(&mut self) {
        self.latency.compact();
        self.sessions.compact();
        self.fps.compact();
    }

    /// Complaints that came outside a report (player feedback).
    pub fn add_complaints(&mut self, complaints: u64) {
        self.counts.complaints = self.counts.complaints.saturating_add(complaints);
    }

    /// Adds this tally into `total`, leaving the histograms as pairs in the buffers.
    fn add_into(&self, total: &mut CohortWindow, pairs: HistogramBuffers<'_>) {
        total.add_counters(&self.counts);
        pairs.0.extend_from_slice(&self.latency.pairs);
        pairs.1.extend_from_slice(&self.sessions.pairs);
        pairs.2.extend_from_slice(&self.fps.pairs);
    }

    /// The sum of `tallies`, histograms merged.
    pub fn total<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> CohortWindow {
        let mut total = CohortWindow::default();
        let (mut latency, mut sessions, mut fps) = (Vec::new(), Vec::new(), Vec::new());
        for tally in tallies {
            tally.add_into(&mut total, (&mut latency, &mut sessions, &mut fps));
        }
        total.latency_ms = SparseHistogram::from_pairs(latency);
        total.session_secs = SparseHistogram::from_pairs(sessions);
        total.fps = SparseHistogram::from_pairs(fps);
        total
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    index: i64,
    tally: Tally,
}

/// The last `span` slots of `slot_ms` each.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slot_ms: i64,
    span: i64,
    slots: std::collections::VecDeque<Slot>,
}

impl SlidingWindow {
    /// A window of `window_ms`, in slots of `slot_ms`.
    pub fn new(window_ms: u64, slot_ms: u64) -> Self {
        let slot_ms = slot_ms.max(1) as i64;
        Self {
            slot_ms,
            span: ((window_ms.max(1) as i64) + slot_ms - 1) / slot_ms,
            slots: Default::default(),
        }
    }

    fn evict(&mut self, current: i64) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.index <= current - self.span)
        {
            self.slots.pop_front();
        }
    }

    /// Adds a report received at `now_ms`.
    pub fn fold(&mut self, now_ms: i64, report: &Report) {
        let index = now_ms.div_euclid(self.slot_ms);
        self.evict(index);
        if self.slots.back().is_none_or(|s| s.index < index) {
            if let Some(closed) = self.slots.back_mut() {
                closed.tally.compact();
            }
            self.slots.push_back(Slot {
                index,
                ..Default::default()
            });
        }
        self.slots
            .back_mut()
            .expect("a slot was just ensured")
            .tally
            .fold(report);
    }

    /// Adds complaints outside a report (player feedback).
    pub fn add_complaints(&mut self, now_ms: i64, complaints: u64) {
        let index = now_ms.div_euclid(self.slot_ms);
        self.evict(index);
        if self.slots.back().is_none_or(|s| s.index < index) {
            if let Some(closed) = self.slots.back_mut() {
                closed.tally.compact();
            }
            self.slots.push_back(Slot {
                index,
                ..Default::default()
            });
        }
        self.slots
            .back_mut()
            .expect("a slot was just ensured")
            .tally
            .add_complaints(complaints);
    }

    /// Everything in the window ending at `now_ms`.
    pub fn snapshot(&mut self, now_ms: i64) -> CohortWindow {
        self.snapshot_last(now_ms, u64::MAX)
    }

    /// The last `last_ms` of the window ending at `now_ms` (whole slots).
    pub fn snapshot_last(&mut self, now_ms: i64, last_ms: u64) -> CohortWindow {
        let current = now_ms.div_euclid(self.slot_ms);
        self.evict(current);
        let span = (i64::try_from(last_ms).unwrap_or(i64::MAX) / self.slot_ms).max(1);
        Tally::total(
            self.slots
                .iter()
                .filter(|s| s.index > current - span)
                .map(|s| &s.tally),
        )
    }

    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// Adds a slice another node gathered for the slot of `at_ms`: into
    /// that slot if the window still holds it (a slice crosses the network
    /// after its second began), as the newest slot if it is newer, not at
    /// all if the window has moved past it.
    pub fn merge(&mut self, at_ms: i64, slice: &Slice) {
        let index = at_ms.div_euclid(self.slot_ms);
        let newest = self.slots.back().map(|s| s.index);
        if newest.is_some_and(|newest| index < newest - self.span + 1) {
            return;
        }
        if newest.is_none_or(|newest| newest < index) {
            self.evict(index);
            if let Some(closed) = self.slots.back_mut() {
                closed.tally.compact();
            }
            self.slots.push_back(Slot {
                index,
                ..Default::default()
            });
        }
        let at = match self.slots.iter().position(|s| s.index >= index) {
            Some(at) if self.slots[at].index == index => at,
            Some(at) => {
                self.slots.insert(
                    at,
                    Slot {
                        index,
                        ..Default::default()
                    },
                );
                at
            }
            None => unreachable!("the newest slot is at least `index`"),
        };
        self.slots[at].tally.merge(slice);
    }
}

/// A slot's tally as one node sends it to another (a deployment's owner
/// judges cohorts whose servers are connected all over the cluster): the
/// counters, the custom metrics' sums, and the histograms merged. Read
/// from the network, so [`Slice::check`] bounds it before it is merged.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    /// Players, sessions started, sessions ended, churned, crashes,
    /// errors, requests, complaints, health checks, health failures,
    /// purchases, reports.
    pub counts: [u64; 12],
    /// Custom metric, sum, samples.
    pub custom: Vec<(String, f64, u64)>,
    pub latency_ms: Vec<(u64, u64)>,
    pub session_secs: Vec<(u64, u64)>,
    pub fps: Vec<(u64, u64)>,
}

/// The most (value, count) pairs one histogram of a slice may carry (a
/// merged histogram of HDR buckets has a few hundred).
pub const MAX_SLICE_PAIRS: usize = 16_384;

impl Slice {
    /// Whether the slice is within bounds: histograms, custom metrics and
    /// their names, finite sums.
    pub fn check(&self) -> Result<(), String> {
        for (name, pairs) in [
            ("latencyMs", &self.latency_ms),
            ("sessionSecs", &self.session_secs),
            ("fps", &self.fps),
        ] {
            if pairs.len() > MAX_SLICE_PAIRS {
                return Err(format!(
                    "{name} has {} pairs, more than {MAX_SLICE_PAIRS}",
                    pairs.len()
                ));
            }
        }
        if self.custom.len() > super::judgement::MAX_CUSTOM_METRICS {
            return Err(format!("{} custom metrics", self.custom.len()));
        }
        if self
            .custom
            .iter()
            .any(|(name, sum, _)| name.is_empty() || name.len() > 128 || !sum.is_finite())
        {
            return Err("a custom metric's name or sum is out of bounds".into());
        }
        Ok(())
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }
}

impl Tally {
    /// What was gathered as a [`Slice`]; the tally starts over empty.
    pub fn take_slice(&mut self) -> Slice {
        self.compact();
        let taken = std::mem::take(self);
        let c = taken.counts;
        Slice {
            counts: [
                c.players,
                c.sessions_started,
                c.sessions_ended,
                c.churned,
                c.crashes,
                c.errors,
                c.requests,
                c.complaints,
                c.health_checks,
                c.health_failures,
                c.purchases,
                c.reports,
            ],
            custom: c
                .custom
                .into_iter()
                .map(|(name, (sum, n))| (name, sum, n))
                .collect(),
            latency_ms: taken.latency.pairs,
            session_secs: taken.sessions.pairs,
            fps: taken.fps.pairs,
        }
    }

    /// Adds another node's slice.
    pub fn merge(&mut self, slice: &Slice) {
        let [
            players,
            sessions_started,
            sessions_ended,
            churned,
            crashes,
            errors,
            requests,
            complaints,
            health_checks,
            health_failures,
            purchases,
            reports,
        ] = slice.counts;
        let mut other = CohortWindow {
            players,
            sessions_started,
            sessions_ended,
            churned,
            crashes,
            errors,
            requests,
            complaints,
            health_checks,
            health_failures,
            purchases,
            reports,
            ..Default::default()
        };
        other.custom = slice
            .custom
            .iter()
            .map(|(name, sum, n)| (name.clone(), (*sum, *n)))
            .collect();
        self.counts.add_counters(&other);
        self.latency.extend(&slice.latency_ms);
        self.sessions.extend(&slice.session_secs);
        self.fps.extend(&slice.fps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(players: u64, crashes: u64, latency: &[(u64, u64)]) -> Report {
        Report {
            players,
            crashes,
            healthy: true,
            latency_ms: latency.to_vec(),
            custom: vec![("queueSecs".into(), 4.0)],
            ..Default::default()
        }
    }

    #[test]
    fn reports_fold_into_slots_and_old_slots_fall_out() {
        let mut window = SlidingWindow::new(3_000, 1_000);
        window.fold(10_000, &report(100, 1, &[(20, 5), (30, 5)]));
        window.fold(10_500, &report(100, 2, &[(20, 1)]));
        window.fold(11_200, &report(50, 0, &[(40, 2)]));
        let now = window.snapshot(11_900);
        assert_eq!((now.reports, now.players, now.crashes), (3, 250, 3));
        assert_eq!(now.latency_ms.buckets(), &[(20, 6), (30, 5), (40, 2)]);
        assert_eq!(now.custom["queueSecs"], (12.0, 3));
        assert_eq!(now.health_checks, 3);
        // At 13.0 s the 10.x slot is out of the 3 s window; the 11.x one stays.
        let later = window.snapshot(13_000);
        assert_eq!((later.players, later.crashes), (50, 0));
        assert_eq!(later.latency_ms.buckets(), &[(40, 2)]);
        assert_eq!(window.snapshot(20_000), CohortWindow::default());
        window.fold(30_000, &report(10, 1, &[]));
        window.fold(31_000, &report(20, 2, &[]));
        assert_eq!(window.snapshot_last(31_500, 1_000).players, 20);
        assert_eq!(window.snapshot_last(31_500, 2_000).players, 30);
    }

    #[test]
    fn a_flood_of_pairs_is_compacted_not_kept() {
        let mut window = SlidingWindow::new(1_000, 1_000);
        let pairs: Vec<(u64, u64)> = (0..100).map(|v| (v, 1)).collect();
        for _ in 0..1_000 {
            window.fold(5_000, &report(1, 0, &pairs));
        }
        assert!(window.slots[0].tally.latency.pairs.len() <= COMPACT_AT + pairs.len());
        let now = window.snapshot(5_000);
        assert_eq!(now.latency_ms.count(), 100_000);
        assert_eq!(now.latency_ms.buckets().len(), 100);
    }

    #[test]
    fn a_slice_from_another_node_counts_as_its_reports_did() {
        // Node B gathers two reports into a slice; the owner's window,
        // with one report of its own, then reads as if all three were its own.
        let mut gathered = Tally::default();
        gathered.fold(&report(100, 1, &[(20, 5), (30, 5)]));
        gathered.fold(&report(50, 2, &[(20, 1)]));
        let slice = gathered.take_slice();
        assert!(gathered.take_slice().is_empty(), "taking it starts over");
        assert_eq!(slice.latency_ms, [(20, 6), (30, 5)], "merged once");
        slice.check().unwrap();
        let wire = serde_json::to_string(&slice).unwrap();
        let slice: Slice = serde_json::from_str(&wire).unwrap();
        let mut mine = SlidingWindow::new(3_000, 1_000);
        mine.fold(12_100, &report(10, 0, &[(40, 1)]));
        // It arrives after the owner's own newer report: its own slot.
        mine.merge(11_900, &slice);
        let now = mine.snapshot(12_500);
        assert_eq!((now.reports, now.players, now.crashes), (3, 160, 3));
        assert_eq!(now.latency_ms.buckets(), &[(20, 6), (30, 5), (40, 1)]);
        assert_eq!(now.custom["queueSecs"], (12.0, 3));
        assert_eq!(
            mine.snapshot_last(12_500, 1_000).players,
            10,
            "not in the newest second"
        );
        // Newer than anything held: a slot of its own.
        mine.merge(13_100, &slice);
        assert_eq!(mine.snapshot_last(13_500, 1_000).players, 150);
        // Older than the window: nothing.
        mine.merge(9_000, &slice);
        assert_eq!(mine.snapshot(13_500).players, 310);
        // Out of bounds.
        let mut huge = slice.clone();
        huge.fps = (0..=MAX_SLICE_PAIRS as u64).map(|v| (v, 1)).collect();
        assert!(huge.check().is_err());
        let mut nan = slice;
        nan.custom.push(("x".into(), f64::NAN, 1));
        assert!(nan.check().is_err());
    }

    #[test]
    fn feedback_complaints_count_without_being_reports() {
        let mut window = SlidingWindow::new(1_000, 1_000);
        window.add_complaints(1_000, 2);
        let now = window.snapshot(1_000);
        assert_eq!((now.complaints, now.reports, now.health_checks), (2, 0, 0));
    }
}
