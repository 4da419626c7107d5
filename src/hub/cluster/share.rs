//! What this node's servers did for deployments other nodes drive, sent
//! to their owners; and what other nodes send for the ones this node drives.

use crate::{
    cluster::{Message, SliceEntry},
    hub::{
        Hub, Ingest,
        deployments::RunRecord,
        engine::{BASELINE, CANARY, Event},
    },
};
use hotswap_client::sync::lock;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// Metrics gathered for another node's deployment: per (deployment,
/// cohort, region, slot start).
pub(super) type SliceKey = (Arc<str>, Arc<str>, Arc<str>, i64);

/// The slot slices are gathered in.
const SLOT_MS: i64 = 1_000;

/// Servers' parts per progress message, at most: about 100 bytes each,
/// 600 with an error, well under the channel's 8 MB bound.
const PROGRESS_CHUNK: usize = 5_000;

/// A mirror's whole part is sent at least this often (a message lost on
/// the way is made up for).
const FULL_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What a node serving another's deployment last sent its owner.
pub(super) struct Sent {
    /// The record it was sent from (a new one is sent whole).
    record: Arc<RunRecord>,
    /// The record's change count and served state when last sent.
    changes: u64,
    served: i64,
    /// This numbering (drawn at random) and the last message's number.
    epoch: u64,
    seq: u64,
    /// When the whole part was last sent.
    full_at: Instant,
    /// Each server's part as last sent.
    parts: HashMap<Arc<str>, crate::hub::deployments::SentPart>,
}

impl Sent {
    fn new(record: Arc<RunRecord>, now: Instant) -> Self {
        Sent {
            record,
            changes: 0,
            served: 0,
            epoch: {
                let mut bytes = [0u8; 8];
                // Without randomness, the time: still a new numbering.
                if getrandom::fill(&mut bytes).is_err() {
                    bytes = (crate::store::now_ms() as u64).to_le_bytes();
                }
                u64::from_le_bytes(bytes)
            },
            seq: 0,
            full_at: now,
            parts: HashMap::new(),
        }
    }
}

impl Hub {
    /// Another node's metric slices, into the windows of the deployment
    /// this node drives (cohorts it does not have are ignored).
    pub(super) fn take_slices(&self, deployment: &str, slices: Vec<SliceEntry>) {
        let Some(live) = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            .find(|l| *l.deployment_id == *deployment && !l.mirror)
            .cloned()
        else {
            return;
        };
        let Some(handle) = live.handle else {
            return;
        };
        let now = crate::store::now_ms();
        for entry in slices {
            // A slice for another time (a clock far off) would move the
            // windows; the sender's slot is at most a few seconds old.
            if entry.at > now + 5_000 || entry.at < now - 120_000 {
                continue;
            }
            let cohort: Arc<str> = match entry.cohort.as_str() {
                BASELINE | CANARY => Arc::from(entry.cohort.as_str()),
                name => match live.variant_names.iter().find(|v| ***v == *name) {
                    Some(name) => name.clone(),
                    None => continue,
                },
            };
            let event = Event::Slice {
                cohort,
                region: Arc::from(entry.region.as_str()),
                slice: Box::new(entry.slice),
                at_ms: entry.at,
            };
            if !handle.event(event) {
                self.stats
                    .metric_events_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Folds a report from one of this node's servers for a deployment
    /// another node drives into the slice sent to it.
    pub(in crate::hub) fn gather_slice(
        &self,
        deployment: &Arc<str>,
        cohort: &Arc<str>,
        region: &Arc<str>,
        at_ms: i64,
        ingest: &Ingest,
    ) {
        let Some(node) = &self.cluster else {
            return;
        };
        let slot = at_ms.div_euclid(SLOT_MS) * SLOT_MS;
        let mut slices = lock(&node.slices);
        let tally = slices
            .entry((deployment.clone(), cohort.clone(), region.clone(), slot))
            .or_default();
        match ingest {
            Ingest::Report(report) => tally.fold(report),
            Ingest::Complaints(count) => tally.add_complaints(*count),
        }
    }

    /// Sends owners what this node's servers did for their deployments:
    /// each mirror's part when it moved (and every 2 s whatever happens),
    /// and the metric slices gathered since the last call.
    pub(super) fn share(&self) {
        let Some(node) = &self.cluster else {
            return;
        };
        let mirrors: Vec<(Arc<str>, Arc<RunRecord>)> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            .filter(|l| l.mirror)
            .map(|l| (l.deployment_id.clone(), l.record.clone()))
            .collect();
        let now = Instant::now();
        {
            let mut said = lock(&node.said_alive);
            if said.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                *said = Some(now);
                node.cluster.send(Message::Alive);
                node.cluster.send(Message::Fleet {
                    fleet: self.fleet_share(),
                });
                self.share_views();
            }
        }
        {
            let mut sent = lock(&node.sent);
            sent.retain(|id, _| mirrors.iter().any(|(m, _)| m == id));
            for (id, record) in &mirrors {
                let (changes, served) = (record.changes(), record.served());
                if served == 0 {
                    // Not brought to any state yet: nothing to say.
                    continue;
                }
                let same_record = |s: &Sent| Arc::ptr_eq(&s.record, record);
                let last = sent.get(id).filter(|s| same_record(s));
                let full =
                    last.is_none_or(|s| now.duration_since(s.full_at) >= FULL_PROGRESS_EVERY);
                let due = full || last.is_some_and(|s| s.changes != changes || s.served != served);
                if !due {
                    continue;
                }
                let state = match sent.get_mut(id).filter(|s| same_record(s)) {
                    Some(state) => state,
                    None => {
                        sent.insert(id.clone(), Sent::new(record.clone(), now));
                        sent.get_mut(id).expect("just inserted")
                    }
                };
                let said = state.served;
                (state.changes, state.served) = (changes, served);
                if full {
                    state.full_at = now;
                }
                let servers = record.progress_since(&mut state.parts, full);
                let mut chunks: Vec<&[crate::cluster::ProgressEntry]> =
                    servers.chunks(PROGRESS_CHUNK).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                let last = chunks.len() - 1;
                for (i, servers) in chunks.into_iter().enumerate() {
                    state.seq = state.seq.wrapping_add(1);
                    node.cluster.send(Message::Progress {
                        deployment: id.to_string(),
                        // Said with the last chunk only: the owner credits
                        // it once every chunk before it came.
                        served: if i == last { served } else { said },
                        servers: servers.to_vec(),
                        seq: state.seq,
                        // A whole part cut in chunks: the first says so,
                        // the rest follow it in order.
                        full: full && i == 0,
                        epoch: state.epoch,
                    });
                }
            }
        }
        let gathered = std::mem::take(&mut *lock(&node.slices));
        let mut by_deployment: HashMap<Arc<str>, Vec<SliceEntry>> = HashMap::new();
        for ((deployment, cohort, region, at), mut tally) in gathered {
            let slice = tally.take_slice();
            if slice.is_empty() {
                continue;
            }
            by_deployment
                .entry(deployment)
                .or_default()
                .push(SliceEntry {
                    cohort: cohort.to_string(),
                    region: region.to_string(),
                    at,
                    slice,
                });
        }
        for (deployment, slices) in by_deployment {
            for slices in slices.chunks(crate::cluster::wire::MAX_SLICES) {
                node.cluster.send(Message::Slices {
                    deployment: deployment.to_string(),
                    slices: slices.to_vec(),
                });
            }
        }
    }
}
