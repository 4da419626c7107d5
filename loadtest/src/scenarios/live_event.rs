//! `live-event`: a server-wide live event scheduled a few seconds ahead,
//! activating on every connected server at its instant. The hub's event
//! actor wakes at the instant, stores the event's version of the config
//! and deploys it (Direct); each server gets the delta and acks it. The
//! figure is the scheduled instant to the last ack (target ≤ 1 s at
//! 10,000 servers). Each round then ends the event by hand and times the
//! way back the same way (the request to the last ack of the base).

use super::{Run, WAIT, latest_after};
use crate::{now_us, progress};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// How far ahead of its creation the event is scheduled: the request, the
/// store and the overlap checks are well done by then.
const LEAD_MS: i64 = 3_000;

impl Run {
    pub(super) async fn live_event(&mut self) -> anyhow::Result<()> {
        let stamp = now_us() / 1000;
        let (mut last_ack, mut last_delivery, mut first_delivery) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut delivery, mut end_last_ack, mut hub_cpu) = (Vec::new(), Vec::new(), Vec::new());
        let mut late = Vec::new();
        // Deliveries before the scheduled instant (an event must never
        // start early): counted, not dropped.
        let mut early = 0usize;
        for round in 0..self.opts.rounds {
            progress("live events", round, self.opts.rounds);
            let name = format!("loadtest-{stamp}-{round}");
            let created_us = now_us();
            let start_ms = (created_us / 1000) as i64 + LEAD_MS;
            let body = json!({
                "name": name,
                "displayName": "Load-test event",
                "eventType": "LimitedTimeOffer",
                "rules": {"rewardMultipliers": {"xp": 2.0}},
                "overrides": [{
                    "config": self.config,
                    "patch": {"weapons": {"rifle": {"damage": 500 + round}}},
                }],
                "schedule": {
                    "startTime": format_rfc3339_ms(start_ms),
                    "endTime": format_rfc3339_ms(start_ms + 3_600_000),
                },
            });
            self.api
                .post("/api/v1/live-events", &body)
                .await?
                .ok("creating the live event")?;
            // CPU from just before the instant to the last ack.
            let until_start = start_ms - (now_us() / 1000) as i64 - 200;
            if until_start > 0 {
                tokio::time::sleep(Duration::from_millis(until_start as u64)).await;
            }
            let cpu_at = self.usage().map(|u| u.cpu_seconds);
            let (id, revision) = self.event_deployment(&name).await?;
            self.fleet
                .wait_all_on(revision, &format!("event {}", round + 1), WAIT)
                .await?;
            self.wait_status(&id, &["Completed"], WAIT).await?;
            if let (Some(before), Some(after)) = (cpu_at, self.usage()) {
                hub_cpu.push((after.cpu_seconds - before) * 1000.0);
            }
            let of = self.deliveries_of(revision, created_us).await?;
            let instant_us = (start_ms as u64).saturating_mul(1000);
            early += of.iter().filter(|d| d.received_us < instant_us).count();
            let at = start_ms as f64;
            last_ack.push(latest_after(&of, at, |d| d.acked_us));
            last_delivery.push(latest_after(&of, at, |d| d.received_us));
            if let Some(first) = of.iter().map(|d| d.received_us).min() {
                first_delivery.push(first as f64 / 1000.0 - at);
            }
            delivery.extend(of.iter().map(|d| d.received_us as f64 / 1000.0 - at));
            let view = self
                .api
                .get(&format!("/api/v1/live-events/{name}"))
                .await?
                .ok("reading the live event")?;
            late.push(view["lateMs"].as_f64().unwrap_or(0.0));
            // The way back: ended by hand, every server on the base again.
            let ended_at = now_us();
            self.api
                .post(&format!("/api/v1/live-events/{name}/end"), &json!({}))
                .await?
                .ok("ending the live event")?;
            self.fleet
                .wait_all_on(self.revision, &format!("end {}", round + 1), WAIT)
                .await?;
            let back = self.deliveries_of(self.revision, ended_at).await?;
            end_last_ack.push(latest_after(&back, ended_at as f64 / 1000.0, |d| {
                d.acked_us
            }));
            self.note_usage();
        }
        progress("live events", self.opts.rounds, self.opts.rounds);
        eprintln!();
        self.report
            .sample("liveEvent", "instantToLastAckMs", &last_ack);
        self.report
            .sample("liveEvent", "instantToLastDeliveryMs", &last_delivery);
        self.report
            .sample("liveEvent", "instantToFirstDeliveryMs", &first_delivery);
        self.report.sample("liveEvent", "deliveryMs", &delivery);
        self.report
            .sample("liveEvent", "endToLastAckMs", &end_last_ack);
        // CPU from just before the instant until the deployment completed.
        self.report
            .sample("liveEvent", "hubCpuMsPerActivation", &hub_cpu);
        self.report.sample("liveEvent", "lateMs", &late);
        self.report
            .section("liveEvent", "earlyDeliveries", json!(early));
        self.report.row("deliveries before the instant", early);
        self.report
            .series
            .push(("live event: scheduled instant to delivery".into(), delivery));
        Ok(())
    }

    /// Waits for the deployment the hub's event actor starts for the event
    /// at its instant; (its id, the revision it deploys).
    async fn event_deployment(&self, name: &str) -> anyhow::Result<(String, i64)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let page = self
                .api
                .get("/api/v1/deployments?limit=1")
                .await?
                .ok("listing deployments")?;
            let newest: &Value = &page["items"][0];
            if newest["createdBy"] == "system"
                && newest["config"] == self.config.as_str()
                && newest["revision"].as_i64() > Some(self.revision)
                && newest["status"] != "RolledBack"
            {
                let id = newest["id"].as_str().context("deployment id")?.to_owned();
                let revision = newest["revision"].as_i64().context("revision")?;
                return Ok((id, revision));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("live event {name}: no deployment after {WAIT:?} (newest: {newest})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Unix milliseconds to `2026-11-21T10:00:00.123Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // The civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::parse_rfc3339_ms;

    #[test]
    fn unix_milliseconds_format_as_rfc3339_and_back() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_255_200_123),
            "2026-11-21T10:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_868_801_000),
            "2000-03-01T00:00:01.000Z"
        );
        for ms in [1_709_164_800_000, 1_803_859_199_999, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }
}
