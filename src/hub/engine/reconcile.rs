//! Bringing every connected server of a config to what the layers give it.

use super::serving::who;
use crate::{
    domain::{
        layers::{Source, moves_now},
        plan::next_rolling_limit,
        rollout::{Assignment, bucket},
    },
    hub::Hub,
};
use bytes::Bytes;
use hotswap_actors::{ConnectedTarget, Fanout};
use hotswap_client::protocol::Health;
use std::collections::BTreeMap;

impl Hub {
    /// Pushes to every connected server of `config` whatever it should run
    /// and does not (nor has on its way); the deployment in flight, if
    /// any, tracks the servers it moves. One frame per (from, to) pair.
    pub(in crate::hub) async fn reconcile(&self, config: &str) -> usize {
        let Some(serving) = self.serving_read().get(config).cloned() else {
            return 0;
        };
        let live = serving.live();
        let record = live.map(|l| l.record.clone());
        let deployment = live.map(|l| l.deployment_id.clone());
        let picks = self.registry.targets_with(config, |server| {
            if server.environment != serving.environment {
                return None;
            }
            let resolved = serving.desired(server)?;
            let applied = server.applied.get(config).copied();
            moves_now(resolved, applied, server.status == Health::Healthy)
                .then_some((resolved.revision, resolved.source == Source::InFlight))
        });
        let mut groups: BTreeMap<(Option<i64>, i64), Vec<ConnectedTarget>> = BTreeMap::new();
        // Every target is claimed before the first frame leaves.
        let mut claims = record.as_ref().map(|r| r.claims());
        if let Some(claims) = &mut claims {
            claims.reserve_for(picks.len());
        }
        for (server, (target, in_flight)) in picks {
            // The deployment tracks the servers it covers, and those it
            // moved and now moves back (a rollback, a cancel), and only
            // those: a server outside it is no target, and nothing it acks
            // counts.
            let claims = claims
                .as_mut()
                .filter(|c| in_flight || c.tracks(&server.server_id));
            if server.applied == Some(target) {
                if let Some(claims) = claims {
                    claims.already_on(&server.server_id, target);
                }
                continue;
            }
            if claims.is_some_and(|c| !c.claim(&server.server_id, target)) {
                continue;
            }
            groups
                .entry((server.applied, target))
                .or_default()
                .push(server);
        }
        drop(claims);
        let mut pushed = 0;
        for ((from, to), servers) in groups {
            let frame: Option<Bytes> = self
                .frame_towards(config, from, to, deployment.as_deref())
                .await;
            // Every frame is queued before any writer wakes; each worker
            // then wakes its own sessions (`hotswap_actors::Fanout`).
            let mut fanout = Fanout::new();
            for server in servers {
                let delivered = match &frame {
                    Some(frame) => self.push_to(&mut fanout, &server.outbox, frame.clone()),
                    None => false,
                };
                if !delivered && let Some(record) = &record {
                    record.server_gone(&server.server_id);
                }
                pushed += usize::from(delivered);
            }
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
