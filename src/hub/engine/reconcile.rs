//! Bringing every connected server of a config to what the layers give it.

use super::serving::{Serving, who};
use crate::{
    domain::{
        layers::{Source, moves_now},
        plan::next_rolling_limit,
        rollout::{Assignment, bucket},
    },
    hub::Hub,
};
use bytes::Bytes;
use hotswap_actors::{ConnectedTarget, Fanout, ServerRecord};
use hotswap_client::protocol::Health;
use std::{collections::BTreeMap, sync::Arc};

/// Servers a reconcile walks under one registry lock (and one claim of the
/// deployment's record) before it wakes their writers: small enough that
/// the first frames leave within a millisecond or two and the acks they
/// bring (each takes the registry's write lock, then the record's) wait
/// no longer; large enough that each slice's wake is one message per
/// worker, not one per server.
const SLICE: usize = 512;

/// A server's move: the revision it holds, if any, and the one it is sent.
type Pair = (Option<i64>, i64);

/// What `server` is to be sent of `config` now, if anything: its move,
/// and whether the deployment in flight makes it.
fn move_for(serving: &Serving, config: &str, server: &ServerRecord) -> Option<(Pair, bool)> {
    if server.environment != serving.environment {
        return None;
    }
    let resolved = serving.desired(server)?;
    let applied = server.applied.get(config).copied();
    moves_now(resolved, applied, server.status == Health::Healthy).then_some((
        (applied, resolved.revision),
        resolved.source == Source::InFlight,
    ))
}

impl Hub {
    /// Pushes to every connected server of `config` whatever it should run
    /// and does not (nor has on its way); the deployment in flight, if
    /// any, tracks the servers it moves. One frame per (from, to) pair.
    ///
    /// The fleet is walked a slice at a time: each slice's targets are
    /// claimed, their frames queued, then their writers woken, so the
    /// first frames leave while the rest of the fleet is walked (on the
    /// other workers, at once). Each target is claimed before its frame
    /// leaves.
    pub(in crate::hub) async fn reconcile(&self, config: &str) -> usize {
        let Some(serving) = self.serving_read().get(config).cloned() else {
            return 0;
        };
        let live = serving.live();
        let record = live.map(|l| l.record.clone());
        let deployment = live.map(|l| l.deployment_id.clone());
        // The frame of each (from, to) pair, made at its first server.
        let mut frames: Vec<(Pair, Option<Bytes>)> = Vec::new();
        let mut pushed = 0;
        let mut next = Some(0);
        while let Some(from) = next {
            let mut fanout = Fanout::new();
            // Servers whose pair has no frame yet, and those the frame did
            // not reach.
            let mut waiting: BTreeMap<Pair, Vec<ConnectedTarget>> = BTreeMap::new();
            let mut gone: Vec<Arc<str>> = Vec::new();
            {
                // Taken under the registry's lock, as the lock order says.
                let mut claims = None;
                next = self
                    .registry
                    .visit_connected(config, from, SLICE, |id, server, outbox| {
                        let Some(((applied, target), in_flight)) =
                            move_for(&serving, config, server)
                        else {
                            return;
                        };
                        // The deployment tracks the servers it covers, and
                        // those it moved and now moves back (a rollback, a
                        // cancel; a kill switch: every server it moves off
                        // its revision), and only those: a server outside it
                        // is no target, and nothing it acks counts.
                        let claims = record
                            .as_ref()
                            .map(|r| claims.get_or_insert_with(|| r.claims()))
                            .filter(|c| {
                                in_flight
                                    || c.tracks(id)
                                    || c.moved_from()
                                        .is_some_and(|r| applied == Some(r) && r != target)
                            });
                        if applied == Some(target) {
                            if let Some(claims) = claims {
                                claims.already_on(id, target);
                            }
                            return;
                        }
                        if claims.is_some_and(|c| !c.claim(id, target)) {
                            return;
                        }
                        match frames.iter().find(|(pair, _)| *pair == (applied, target)) {
                            Some((_, Some(frame))) => {
                                if self.push_to(&mut fanout, outbox, frame.clone()) {
                                    pushed += 1;
                                } else {
                                    gone.push(id.clone());
                                }
                            }
                            Some((_, None)) => gone.push(id.clone()),
                            None => waiting.entry((applied, target)).or_default().push(
                                ConnectedTarget {
                                    server_id: id.clone(),
                                    applied,
                                    outbox: outbox.clone(),
                                },
                            ),
                        }
                    });
            }
            for ((from, to), servers) in waiting {
                let frame: Option<Bytes> = self
                    .frame_towards(config, from, to, deployment.as_deref())
                    .await;
                for server in servers {
                    match &frame {
                        Some(frame) if self.push_to(&mut fanout, &server.outbox, frame.clone()) => {
                            pushed += 1;
                        }
                        _ => gone.push(server.server_id),
                    }
                }
                frames.push(((from, to), frame));
            }
            if let Some(record) = &record {
                for id in gone {
                    record.server_gone(&id);
                }
            }
            // Every frame of the slice is queued before its writers wake;
            // each worker wakes its own sessions (`hotswap_actors::Fanout`).
            fanout.wake();
        }
        if pushed > 0 {
            // Behind the writers just woken on this worker: what callers do
            // next (counts, cohorts, the answer) waits until the frames are out.
            tokio::task::yield_now().await;
        }
        pushed
    }

    /// Rolling: the bucket limit covering `batch` more healthy in-scope
    /// servers than `current` does (`domain::plan::next_rolling_limit`).
    pub(super) fn rolling_limit(
        &self,
        config: &str,
        environment: &str,
        assignment: &Assignment,
        current: u32,
        batch: usize,
    ) -> u32 {
        let buckets = self
            .registry
            .targets_with(config, |record| {
                let who = who(record);
                (record.environment == environment
                    && record.status == Health::Healthy
                    && assignment
                        .scope
                        .contains(&record.region, |t| who.has_tag(t)))
                .then(|| bucket(&assignment.deployment_id, &record.server_id))
            })
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        next_rolling_limit(buckets, current, batch)
    }
}
