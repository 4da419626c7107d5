//! The floor: what the same clients on the same machine take to get and
//! ack one frame from a bare loop (`floor.rs`), the yardstick of the
//! hub's fan-out and kill switch.
//!
//! The WebSocket floor is **paired** with the hub: its sockets open beside
//! the hub's before the first round, and each round writes the hub's
//! frame, lets the hub settle, then writes the floor's. Each ratio is a
//! round's figure over the same round's floor, so a machine that slows
//! down or speeds up during the run moves both sides of it. (Until
//! 2026-12-04 the floor ran after every hub round, and a floor that ran
//! a quarter slower or faster than during the hub's rounds moved every
//! ratio by as much.) The bare-read floor runs after, unpaired, as a
//! reference.

use super::{Run, WAIT};
use crate::{
    floor::{Floor, ws_binary_frame},
    nchan::Nchan,
    report::Summary,
    worker::FloorClient,
};
use anyhow::bail;
use hotswap_client::protocol::{self, HubMessage};
use serde_json::json;
use std::time::Duration;

/// How long the hub is left alone after each of its rounds, before the
/// floor's: its flusher (every second) stores the round's rows in that
/// time, and the floor's round does not share the machine with it. The
/// hub's CPU over it is reported (`hubCpuMsAfter`), and counted in
/// `hubCpuUsPerServerWithStore`.
pub(super) const SETTLE: Duration = Duration::from_millis(1_200);

/// How long the hub's idle CPU is measured for, before the rounds: a
/// heartbeat interval (10 s), so the pings' wave counts once.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// nginx + nchan and its subscribers, one per server.
pub(super) struct PeerSockets {
    nchan: Nchan,
    run: PeerRun,
    delivery: Vec<f64>,
}

/// The peer's figures per round: last delivery and last ack (ms, from the
/// publish request), and its CPU per subscriber (µs).
#[derive(Debug, Default)]
pub(super) struct PeerRun {
    pub last: Vec<f64>,
    pub last_ack: Vec<f64>,
    pub cpu_us: Vec<f64>,
}

impl FloorSockets {
    /// The payload the floor's frame carries.
    pub(super) fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// The floor's figures per round, in ms, for the ratios to it.
#[derive(Debug, Default)]
pub(super) struct FloorRun {
    pub last: Vec<f64>,
    pub last_handled: Vec<f64>,
    pub last_ack: Vec<f64>,
    /// The floor's CPU per socket per write round, µs.
    pub cpu_us: Vec<f64>,
}

/// A floor's open sockets and what its rounds measured so far.
pub(super) struct FloorSockets {
    floor: Floor,
    /// The frame the floor writes, and its payload (what a peer publishes).
    frame: Vec<u8>,
    payload: Vec<u8>,
    run: FloorRun,
    delivery: Vec<f64>,
    handled: Vec<f64>,
}

impl Run {
    /// Opens one floor socket per server (read by `client`), beside the
    /// hub's.
    pub(super) async fn open_floor(&mut self, client: FloorClient) -> anyhow::Result<FloorSockets> {
        let payload = protocol::encode(&HubMessage::Delta {
            config: self.config.clone(),
            base_revision: self.revision,
            revision: self.revision + 1,
            version: "1.999.0".into(),
            patch: json!([{"op": "replace", "path": "/weapons/rifle/damage", "value": 50}]),
            checksum: "0".repeat(64),
            signature: Some("x".repeat(88)),
            deployment_id: Some("0".repeat(36)),
            sent_at_ms: 0,
        });
        let frame = ws_binary_frame(&payload);
        let mut floor = Floor::bind().await?;
        let addr = floor.addr()?;
        let (accepted, connected) = tokio::join!(
            floor.accept(self.opts.servers),
            self.fleet.call(
                json!({"op": "floor", "addr": addr, "frameLen": frame.len(), "client": client})
            )
        );
        accepted?;
        connected?;
        Ok(FloorSockets {
            floor,
            frame,
            payload,
            run: FloorRun::default(),
            delivery: Vec::new(),
            handled: Vec::new(),
        })
    }

    /// One floor round: the frame written to every socket in turn, then
    /// every socket's (receive, handled, acked) times collected.
    pub(super) async fn floor_round(&mut self, floor: &mut FloorSockets) -> anyhow::Result<()> {
        let n = self.opts.servers;
        let since = |started: u64, at: u64| at.saturating_sub(started) as f64 / 1000.0;
        let cpu_at = crate::hubproc::own_cpu_seconds();
        let started = floor.floor.write_all(&floor.frame).await?;
        // The harness does nothing else meanwhile (the simulated servers
        // are other processes): its CPU is the floor's writes.
        floor
            .run
            .cpu_us
            .push((crate::hubproc::own_cpu_seconds() - cpu_at) * 1e6 / n.max(1) as f64);
        let received = self
            .collect_stamps("floorCollect", "the floor frames")
            .await?;
        floor
            .delivery
            .extend(received.iter().map(|r| since(started, r.0)));
        floor
            .handled
            .extend(received.iter().map(|r| since(started, r.1)));
        let last = |at: fn(&(u64, u64, u64)) -> u64| {
            since(started, received.iter().map(at).max().unwrap_or(started))
        };
        floor.run.last.push(last(|r| r.0));
        floor.run.last_handled.push(last(|r| r.1));
        floor.run.last_ack.push(last(|r| r.2));
        Ok(())
    }

    /// Starts nginx + nchan and opens one subscriber per server to it.
    pub(super) async fn open_nchan(&mut self) -> anyhow::Result<PeerSockets> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let connections = self.opts.servers as u64 + 64;
        let nchan = Nchan::start(&self.opts.out, workers, connections).await?;
        let path = format!("/sub/{}", crate::nchan::CHANNEL);
        self.fleet
            .call(json!({"op": "peer", "addr": nchan.addr, "path": path}))
            .await?;
        Ok(PeerSockets {
            nchan,
            run: PeerRun::default(),
            delivery: Vec::new(),
        })
    }

    /// One peer round: the floor's payload published once, then every
    /// subscriber's (receive, handled, acked) times collected; the
    /// peer's CPU from the publish until it has read the acks.
    pub(super) async fn nchan_round(
        &mut self,
        peer: &mut PeerSockets,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let n = self.opts.servers;
        let cpu_at = peer.nchan.cpu_seconds();
        let started = crate::now_us();
        peer.nchan.publish(payload).await?;
        let received = self
            .collect_stamps("peerCollect", "nchan's messages")
            .await?;
        // Until nginx has read (and republished) the answers.
        peer.nchan.until_still().await;
        peer.run
            .cpu_us
            .push((peer.nchan.cpu_seconds() - cpu_at) * 1e6 / n.max(1) as f64);
        let since = |at: u64| at.saturating_sub(started) as f64 / 1000.0;
        peer.delivery.extend(received.iter().map(|r| since(r.0)));
        peer.run
            .last
            .push(since(received.iter().map(|r| r.0).max().unwrap_or(started)));
        peer.run
            .last_ack
            .push(since(received.iter().map(|r| r.2).max().unwrap_or(started)));
        Ok(())
    }

    /// Reports the peer's figures as `nchan.*` and stops it.
    pub(super) fn close_nchan(&mut self, peer: PeerSockets) -> PeerRun {
        let PeerSockets { run, delivery, .. } = peer;
        self.report.sample("nchan", "deliveryMs", &delivery);
        self.report.sample("nchan", "lastDeliveryMs", &run.last);
        self.report.sample("nchan", "lastAckMs", &run.last_ack);
        self.report
            .sample_us("nchan", "cpuUsPerSubscriber", &run.cpu_us);
        self.report
            .series
            .push(("nginx + nchan: publish to delivery".into(), delivery));
        run
    }

    /// Every server's (kernel receive time, read time, ack written) for
    /// the round, asked of the workers with `op` until all are in.
    async fn collect_stamps(
        &mut self,
        op: &str,
        what: &str,
    ) -> anyhow::Result<Vec<(u64, u64, u64)>> {
        let n = self.opts.servers;
        let mut received: Vec<(u64, u64, u64)> = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while received.len() < n {
            for reply in self.fleet.call(json!({ "op": op })).await? {
                let got: Vec<(u64, u64, u64)> =
                    serde_json::from_value(reply["receivedUs"].clone())?;
                received.extend(got);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{what} did not all arrive: {}/{n}", received.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(received)
    }

    /// Closes a floor's sockets and reports its figures as `<section>.*`.
    pub(super) fn close_floor(&mut self, floor: FloorSockets, section: &str) -> FloorRun {
        let FloorSockets {
            floor: _,
            run,
            delivery,
            handled,
            ..
        } = floor;
        self.report.sample(section, "deliveryMs", &delivery);
        self.report.sample(section, "lastDeliveryMs", &run.last);
        self.report.sample(section, "handledMs", &handled);
        self.report
            .sample(section, "lastHandledMs", &run.last_handled);
        self.report.sample(section, "lastAckMs", &run.last_ack);
        self.report
            .sample_us(section, "cpuUsPerSocket", &run.cpu_us);
        self.report
            .series
            .push((format!("{section}: plain sockets"), delivery));
        run
    }

    /// Closes the paired WebSocket floor (`floor.*`), then runs the
    /// bare-read floor on its own (`floorRaw.*`: `rounds` writes 100 ms
    /// apart, less client work per frame than the hub's frames cost; the
    /// floor before 2026-12-04), for comparison.
    pub(super) async fn finish_floors(
        &mut self,
        paired: FloorSockets,
    ) -> anyhow::Result<(FloorRun, FloorRun)> {
        let run = self.close_floor(paired, "floor");
        // The paired floor's (and a peer's) sockets closed on the servers'
        // side too before the next floor's open: three sockets a server
        // at most.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut raw = self.open_floor(FloorClient::Raw).await?;
        for _ in 0..self.opts.rounds {
            self.floor_round(&mut raw).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let raw = self.close_floor(raw, "floorRaw");
        let ratio = |a: &[f64], b: &[f64]| match (Summary::of(a), Summary::of(b)) {
            (Some(a), Some(b)) if b.p50 > 0.0 => a.p50 / b.p50,
            _ => f64::NAN,
        };
        // What the WebSocket client's own work adds to the machine's floor.
        self.report.section(
            "floor",
            "lastAckOverRaw",
            json!(ratio(&run.last_ack, &raw.last_ack)),
        );
        self.report.section(
            "floor",
            "lastDeliveryOverRaw",
            json!(ratio(&run.last, &raw.last)),
        );
        // The floor against itself: each round over the one before it, the
        // same sockets and clients. What the machine's noise alone makes of
        // a paired ratio: a hub exactly as fast as the floor would show
        // about these.
        let round_to_round = |rounds: &[f64]| -> Vec<f64> {
            rounds
                .windows(2)
                .filter(|pair| pair[0] > 0.0)
                .map(|pair| pair[1] / pair[0])
                .collect()
        };
        self.ratio_row(
            "floor",
            "lastDeliveryRoundToRound",
            "the floor's last delivery over its round before",
            &round_to_round(&run.last),
        );
        self.ratio_row(
            "floor",
            "lastAckRoundToRound",
            "the floor's last ack over its round before",
            &round_to_round(&run.last_ack),
        );
        Ok((run, raw))
    }

    /// Leaves the hub alone until [`SETTLE`] after `since` (the moment its
    /// round ended, when its CPU read `cpu`); its CPU meanwhile, ms.
    pub(super) async fn settle(
        &mut self,
        since: tokio::time::Instant,
        cpu: Option<f64>,
    ) -> Option<f64> {
        tokio::time::sleep_until(since + SETTLE).await;
        Some((self.usage()?.cpu_seconds - cpu?) * 1000.0)
    }

    /// The hub's CPU at rest (connected servers heartbeating and, unless
    /// `--no-metrics`, reporting metrics; pinged), in cores, reported as
    /// `<section>.hubIdleCores`.
    pub(super) async fn idle_cores(&mut self, section: &str) -> Option<f64> {
        let before = self.usage().map(|u| u.cpu_seconds);
        tokio::time::sleep(IDLE_WINDOW).await;
        let cores = (self.usage()?.cpu_seconds - before?) / IDLE_WINDOW.as_secs_f64();
        self.report.section(
            section,
            "hubIdleCores",
            json!((cores * 1000.0).round() / 1000.0),
        );
        Some(cores)
    }

    /// Each round's figure over the same round's floor figure, as
    /// `<section>.<key>`.
    pub(super) fn paired_ratio(
        &mut self,
        section: &str,
        key: &str,
        what: &str,
        hub: &[f64],
        floor: &[f64],
    ) {
        self.ratio_row(section, key, what, &paired(hub, floor));
    }

    /// Each round's figure over the floor's median, as `<section>.<key>`
    /// (a floor not paired with the rounds).
    pub(super) fn ratio_to_floor(
        &mut self,
        section: &str,
        key: &str,
        what: &str,
        hub: &[f64],
        floor: &[f64],
    ) {
        let floor_p50 = Summary::of(floor).map_or(f64::NAN, |s| s.p50).max(0.001);
        let ratios: Vec<f64> = hub.iter().map(|h| h / floor_p50).collect();
        self.ratio_row(section, key, what, &ratios);
    }

    fn ratio_row(&mut self, section: &str, key: &str, what: &str, ratios: &[f64]) {
        let mut summary = Summary::json(ratios);
        if let Some(fields) = summary.as_object_mut() {
            // Each round's, in order: which rounds make the max.
            let rounds: Vec<f64> = ratios
                .iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect();
            fields.insert("rounds".into(), json!(rounds));
        }
        self.report.section(section, key, summary);
        if let Some(s) = Summary::of(ratios) {
            self.report.row(
                &format!("{section}.{key} ({what})"),
                format!("p50 {:.2}  max {:.2}", s.p50, s.max),
            );
        }
    }
}

/// Each round's figure over the same round's floor figure; a round whose
/// floor figure is 0 (below what it is measured to: CPU comes in 10 ms
/// ticks) has no ratio.
fn paired(hub: &[f64], floor: &[f64]) -> Vec<f64> {
    hub.iter()
        .zip(floor)
        .filter(|(_, f)| **f > 0.0)
        .map(|(h, f)| h / f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_is_put_against_its_own_floor() {
        // A machine that slowed down halfway: the hub's rounds and the
        // floor's slowed alike, and every round's ratio is the same.
        let hub = [100.0, 100.0, 200.0, 200.0];
        let floor = [80.0, 80.0, 160.0, 160.0];
        assert_eq!(paired(&hub, &floor), vec![1.25; 4]);
        // Rounds pair by position: a shorter side pairs what it has.
        assert_eq!(paired(&hub[..2], &floor), vec![1.25; 2]);
        // A floor figure of 0 (a peer's CPU under one 10 ms tick) gives
        // that round no ratio rather than an infinite one.
        assert_eq!(paired(&[1.0, 2.0], &[0.0, 4.0]), vec![0.5]);
    }
}
