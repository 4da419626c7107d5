//! The frames that bring a server to what it should run: a delta when the
//! hub still has the server's revision, a snapshot otherwise; queued to a
//! fan-out.

use super::Hub;
use bytes::Bytes;
use hotswap_actors::{CloseReason, Fanout, Outbox, ServerRecord};
use hotswap_client::protocol::close_code;
use std::sync::atomic::Ordering;

impl Hub {
    /// What `record` should run of `config`: `(environment, desired)`.
    pub(super) fn desired(
        &self,
        config: &str,
        record: &ServerRecord,
    ) -> Option<(String, Option<i64>)> {
        let serving = self.serving_read();
        let entry = serving.get(config)?;
        Some((
            entry.environment.clone(),
            entry.desired(record).map(|r| r.revision),
        ))
    }

    /// The frame that brings a server holding `known` to `target` of
    /// `config`: nothing when it is there, a delta when the hub still has the
    /// base revision, a snapshot otherwise.
    pub(super) async fn frame_towards(
        &self,
        config: &str,
        known: Option<i64>,
        target: i64,
        deployment: Option<&str>,
    ) -> Option<Bytes> {
        if known == Some(target) {
            return None;
        }
        let target_doc = match self.documents.document(&self.catalog, config, target).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return None,
            Err(error) => {
                // Logged once by the read every waiting server shares.
                tracing::debug!(%config, target, error = %error, "no document for this server");
                return None;
            }
        };
        let base = match known {
            Some(base) if base > 0 => self
                .documents
                .document(&self.catalog, config, base)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        Some(match base {
            Some(base) => self
                .documents
                .delta_or_snapshot(&base, &target_doc, deployment),
            None => self.documents.snapshot(&target_doc, deployment),
        })
    }

    /// Queues one encoded frame to every connected server `keep` picks
    /// (a live event's phase change); the number it reached.
    pub fn announce(&self, frame: Bytes, keep: impl Fn(&ServerRecord) -> bool) -> usize {
        let mut fanout = Fanout::new();
        let mut reached = 0;
        for outbox in self.registry.connected_where(keep) {
            reached += usize::from(self.push_to(&mut fanout, &outbox, frame.clone()));
        }
        fanout.wake();
        reached
    }

    /// Keeps `frame` (the live-ops definitions) for servers saying hello
    /// from now on, and sends it to the connected servers that asked.
    /// A frame older than the one kept (two changes published out of
    /// order) is dropped.
    pub fn publish_liveops(&self, revision: i64, frame: Bytes) -> usize {
        {
            let mut kept = hotswap_client::sync::write(&self.liveops_frame);
            if kept.as_ref().is_some_and(|(newest, _)| *newest > revision) {
                return 0;
            }
            *kept = Some((revision, frame.clone()));
            // Sent under the lock: servers get the frames in order.
            self.announce(frame, |server| server.liveops)
        }
    }

    /// Queues a frame to one server of a fan-out; a full queue closes the
    /// session.
    pub(super) fn push_to(&self, fanout: &mut Fanout, outbox: &Outbox, frame: Bytes) -> bool {
        match fanout.push(outbox, frame) {
            Ok(()) => {
                self.stats.frames_pushed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(hotswap_actors::PushError::Full) => {
                outbox.close(CloseReason::new(
                    close_code::SLOW_CONSUMER,
                    "the server did not read its frames fast enough",
                ));
                false
            }
            Err(hotswap_actors::PushError::Closed) => false,
        }
    }
}
