//! `fanout` and `kill-switch`: one frame to every server, against the
//! floor paired round by round (`floors.rs`).

use super::{Run, WAIT, earliest_after, latest_after, since_sent};
use crate::worker::FloorClient;
use serde_json::json;
use std::time::Duration;

/// The pause before each measured round (the hub's push, the floor's
/// write, nchan's publish), so none starts on the heels of another.
const PAUSE: Duration = Duration::from_millis(200);

/// The rounds whose hub figure was measured, with the same rounds' other
/// figure (pairs stay by round when a reading failed).
fn aligned(hub: &[Option<f64>], other: &[f64]) -> (Vec<f64>, Vec<f64>) {
    hub.iter()
        .zip(other)
        .filter_map(|(h, o)| Some((h.as_ref().copied()?, *o)))
        .unzip()
}

impl Run {
    pub(super) async fn fanout(&mut self) -> anyhow::Result<()> {
        let (mut delivery, mut last_delivery, mut last_ack) = (Vec::new(), Vec::new(), Vec::new());
        let (mut handled, mut last_handled) = (Vec::new(), Vec::new());
        let (mut hub_cpu, mut client_cpu, mut after) = (Vec::new(), Vec::new(), Vec::new());
        let (mut from_request, mut first_from_request) = (Vec::new(), Vec::new());
        let idle = self.idle_cores("fanout").await;
        let mut paired = self.open_floor(FloorClient::WebSocket).await?;
        let mut nchan = match self.opts.nchan {
            true => Some(self.open_nchan().await?),
            false => None,
        };
        for push in 0..self.opts.rounds {
            // Every measured round (push, floor, nchan) starts after a pause.
            tokio::time::sleep(PAUSE).await;
            let cpu_at = (
                self.usage().map(|u| u.cpu_seconds),
                self.fleet.cpu_seconds(),
            );
            let (id, revision, _, at) = self.push(json!({"strategy": "Direct"})).await?;
            self.fleet
                .wait_all_on(
                    revision,
                    &format!("push {}/{}", push + 1, self.opts.rounds),
                    WAIT,
                )
                .await?;
            self.wait_status(&id, &["Completed"], WAIT).await?;
            // One reading closes the push's window and opens the settling's.
            let (completed, cpu_done) = (
                tokio::time::Instant::now(),
                self.usage().map(|u| u.cpu_seconds),
            );
            hub_cpu.push(cpu_at.0.zip(cpu_done).map(|(a, b)| (b - a) * 1000.0));
            client_cpu.push((self.fleet.cpu_seconds() - cpu_at.1) * 1000.0);
            after.push(self.settle(completed, cpu_done).await);
            let of = self.deliveries_of(revision, at).await?;
            let sent_ms = of.iter().map(|d| d.sent_at_ms).min().unwrap_or(0) as f64;
            delivery.extend(since_sent(&of));
            last_delivery.push(latest_after(&of, sent_ms, |d| d.received_us));
            from_request.push(latest_after(&of, at as f64 / 1000.0, |d| d.received_us));
            first_from_request.push(earliest_after(&of, at as f64 / 1000.0, |d| d.received_us));
            last_handled.push(latest_after(&of, sent_ms, |d| d.handled_us));
            last_ack.push(latest_after(&of, sent_ms, |d| d.acked_us));
            handled.extend(
                of.iter()
                    .map(|d| d.handled_us as f64 / 1000.0 - d.sent_at_ms as f64),
            );
            self.revision = revision;
            self.note_usage();
            self.floor_round(&mut paired).await?;
            if let Some(nchan) = &mut nchan {
                tokio::time::sleep(PAUSE).await;
                self.nchan_round(nchan, paired.payload()).await?;
            }
        }
        let nchan = nchan.map(|peer| self.close_nchan(peer));
        if self.opts.nodes > 1 {
            self.cluster_server_list().await?;
        }
        self.report.sample("fanout", "deliveryMs", &delivery);
        self.report
            .sample("fanout", "lastDeliveryMs", &last_delivery);
        self.report.sample("fanout", "lastAckMs", &last_ack);
        // From the deployment's request (its store commit and targeting
        // included), as a peer's figures are timed from the publish.
        self.report
            .sample("fanout", "lastDeliveryFromRequestMs", &from_request);
        // The first frame's, from the same request: what the hub does
        // before any frame leaves.
        self.report
            .sample("fanout", "firstDeliveryFromRequestMs", &first_from_request);
        // The same frames, timed when each simulated server's task had
        // decoded them (includes waiting for the others on its thread).
        self.report.sample("fanout", "handledMs", &handled);
        self.report.sample("fanout", "lastHandledMs", &last_handled);
        // CPU from upload to completion (REST, store, push, acks; 10 ms
        // ticks). The pushes are apart now: the flush of the push before
        // no longer falls in a push's window (the settling holds it).
        let measured = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
        self.report
            .sample("fanout", "hubCpuMsPerPush", &measured(&hub_cpu));
        let servers = self.opts.servers.max(1) as f64;
        let per_server: Vec<Option<f64>> = hub_cpu
            .iter()
            .map(|ms| ms.map(|ms| ms * 1000.0 / servers))
            .collect();
        self.report
            .sample_us("fanout", "hubCpuUsPerServer", &measured(&per_server));
        // The hub's CPU while it settled (its flusher storing the push's
        // rows, and the idle work of the time), and the whole push: upload
        // to completion, plus the settling less what the hub spends idle
        // in as long.
        self.report
            .sample("fanout", "hubCpuMsAfter", &measured(&after));
        if let Some(idle) = idle {
            let idle_ms = idle * super::floors::SETTLE.as_secs_f64() * 1000.0;
            let whole: Vec<Option<f64>> = hub_cpu
                .iter()
                .zip(&after)
                .map(|(push, after)| {
                    let (push, after) = (push.as_ref()?, after.as_ref()?);
                    Some((push + (after - idle_ms).max(0.0)) * 1000.0 / servers)
                })
                .collect();
            self.report
                .sample_us("fanout", "hubCpuUsPerServerWithStore", &measured(&whole));
        }
        self.report
            .sample("fanout", "clientCpuMsPerPush", &client_cpu);
        self.report
            .series
            .push(("hub fan-out: delivery per server".into(), delivery));
        let (floor, raw) = self.finish_floors(paired).await?;
        self.paired_ratio(
            "fanout",
            "ratioToFloor",
            "last delivery / the round's floor",
            &last_delivery,
            &floor.last,
        );
        // The same rounds over the floor's median, as before the pairing.
        self.ratio_to_floor(
            "fanout",
            "ratioToFloorMedian",
            "last delivery / floor p50",
            &last_delivery,
            &floor.last,
        );
        self.ratio_to_floor(
            "fanout",
            "ratioToRawFloor",
            "last delivery / bare-read floor p50",
            &last_delivery,
            &raw.last,
        );
        self.paired_ratio(
            "fanout",
            "handledRatioToFloor",
            "last handled / the round's floor",
            &last_handled,
            &floor.last_handled,
        );
        // Upload to completion (the acks too) against the floor's writes.
        let (hub, floor_cpu) = aligned(&per_server, &floor.cpu_us);
        self.paired_ratio(
            "fanout",
            "cpuRatioToFloor",
            "hub CPU per server / the round's floor CPU per socket",
            &hub,
            &floor_cpu,
        );
        if let Some(nchan) = nchan {
            // Both from their request (the deployment's, the publish):
            // each round against the same round's.
            self.paired_ratio(
                "fanout",
                "ratioToNchan",
                "last delivery from the request / the round's nginx + nchan",
                &from_request,
                &nchan.last,
            );
            let (hub, nchan_cpu) = aligned(&per_server, &nchan.cpu_us);
            self.paired_ratio(
                "fanout",
                "cpuRatioToNchan",
                "hub CPU per server / nginx's per subscriber, the round's",
                &hub,
                &nchan_cpu,
            );
        }
        Ok(())
    }

    pub(super) async fn kill_switch(&mut self) -> anyhow::Result<()> {
        let (mut last_ack, mut last_delivery, mut delivery) = (Vec::new(), Vec::new(), Vec::new());
        let mut frame_built = Vec::new();
        let mut paired = self.open_floor(FloorClient::WebSocket).await?;
        for round in 0..self.opts.rounds {
            tokio::time::sleep(PAUSE).await;
            let (id, revision, previous, _) = self.push(json!({"strategy": "Direct"})).await?;
            self.fleet
                .wait_all_on(revision, &format!("deploy {}", round + 1), WAIT)
                .await?;
            self.wait_status(&id, &["Completed"], WAIT).await?;
            self.fleet.collect().await?;
            let at = crate::now_us();
            self.api
                .post(
                    &format!("/api/v1/deployments/{id}/rollback"),
                    &json!({"reason": "load test kill switch"}),
                )
                .await?
                .ok("the kill switch")?;
            self.fleet
                .wait_all_on(previous, &format!("kill switch {}", round + 1), WAIT)
                .await?;
            self.wait_status(&id, &["RolledBack"], WAIT).await?;
            let (completed, cpu) = (
                tokio::time::Instant::now(),
                self.usage().map(|u| u.cpu_seconds),
            );
            let back = self.deliveries_of(previous, at).await?;
            let at_ms = at as f64 / 1000.0;
            last_ack.push(latest_after(&back, at_ms, |d| d.acked_us));
            // The request until the hub had its frame (committed, targeted, encoded).
            if let Some(sent) = back.iter().map(|d| d.sent_at_ms).min() {
                frame_built.push(sent as f64 - at_ms);
            }
            last_delivery.push(latest_after(&back, at_ms, |d| d.received_us));
            delivery.extend(back.iter().map(|d| d.received_us as f64 / 1000.0 - at_ms));
            self.revision = previous;
            self.note_usage();
            self.settle(completed, cpu).await;
            self.floor_round(&mut paired).await?;
        }
        self.report.sample("killSwitch", "lastAckMs", &last_ack);
        self.report
            .sample("killSwitch", "frameBuiltMs", &frame_built);
        self.report
            .sample("killSwitch", "lastDeliveryMs", &last_delivery);
        self.report.sample("killSwitch", "deliveryMs", &delivery);
        self.report
            .series
            .push(("kill switch: request to delivery".into(), delivery));
        // What the machine allows the same sockets and clients: the floor's
        // last ack (no request, no store, no hub), the same round.
        let (floor, raw) = self.finish_floors(paired).await?;
        self.paired_ratio(
            "killSwitch",
            "ratioToFloor",
            "last ack / the round's floor's last ack",
            &last_ack,
            &floor.last_ack,
        );
        self.ratio_to_floor(
            "killSwitch",
            "ratioToFloorMedian",
            "last ack / floor's last ack p50",
            &last_ack,
            &floor.last_ack,
        );
        self.ratio_to_floor(
            "killSwitch",
            "ratioToRawFloor",
            "last ack / bare-read floor's last ack p50",
            &last_ack,
            &raw.last_ack,
        );
        Ok(())
    }
}
