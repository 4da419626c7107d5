//! `chaos`: the hub killed with SIGKILL at random instants while canary
//! deployments run, with servers connected and metrics flowing, then
//! restarted on the same store. Every other round the canary regresses, so
//! kills land in healthy phases, in judgements and in rollbacks alike.
//! After each restart the round's deployment must finish (`Completed`) or
//! roll back (`RolledBack`); no version or deployment may be lost; every
//! server must end on the revision that outcome gives (the hub's own
//! registry naming it for each one); the audit chain must hold.

use super::{Run, WAIT};
use crate::{now_us, progress};
use anyhow::{Context, bail};
use serde_json::json;
use std::time::Duration;

/// How long after a push the kill may land: the canary's three phases of
/// two seconds and its judgement all fall within it.
const KILL_WINDOW_MS: u64 = 6_000;

/// xorshift64*: kill instants that a seed repeats.
struct Instants(u64);

impl Instants {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below.max(1)
    }
}

impl Run {
    pub(super) async fn chaos(&mut self) -> anyhow::Result<()> {
        let seed = (now_us() | 1) ^ 0x9e37_79b9_7f4a_7c15;
        let mut instants = Instants(seed);
        self.report.section("chaos", "seed", json!(seed));
        let (mut restart_ms, mut settled_ms) = (Vec::new(), Vec::new());
        let mut outcomes = Vec::new();
        for round in 0..self.opts.rounds {
            progress("chaos", round, self.opts.rounds);
            let regress = round % 2 == 1;
            let (id, revision, previous, pushed_at) = self
                .push(
                    json!({"strategy": "Canary", "phases": [20, 50, 100], "phaseInterval": "PT2S"}),
                )
                .await?;
            if regress {
                self.fleet
                    .call(json!({"op": "regress", "revision": revision, "factor": self.opts.regression_factor}))
                    .await?;
            }
            let kill_after = instants.next_ms(KILL_WINDOW_MS);
            let since_push = (now_us() - pushed_at) / 1000;
            tokio::time::sleep(Duration::from_millis(kill_after.saturating_sub(since_push))).await;
            let seen = self.deployment(&id).await?;
            let hub = self
                .hub
                .as_mut()
                .context("chaos kills the harness's own hub")?;
            let usage = hub.usage().unwrap_or_default();
            self.cpu_before += usage.cpu_seconds;
            self.peak_rss = self.peak_rss.max(usage.peak_rss_bytes);
            let killed_at = now_us();
            hub.kill_and_restart().await?;
            restart_ms.push((now_us() - killed_at) as f64 / 1000.0);
            // Recovery: the deployment ends, and the fleet with it.
            let view = self
                .wait_status(
                    &id,
                    &["Completed", "RolledBack", "Failed", "Cancelled"],
                    WAIT,
                )
                .await?;
            let expected = match view["status"].as_str() {
                Some("Completed") => revision,
                Some("RolledBack") => previous,
                other => bail!(
                    "round {}: the deployment ended {other:?}: {view}",
                    round + 1
                ),
            };
            self.fleet
                .wait_all_on(expected, "settling after a kill", WAIT)
                .await?;
            settled_ms.push((now_us() - killed_at) as f64 / 1000.0);
            self.fleet
                .call(json!({"op": "regress", "revision": -1, "factor": 1.0}))
                .await?;
            self.check_nothing_lost(&id, expected).await?;
            eprintln!(
                "chaos {}: killed {kill_after} ms after the push ({} phase {}), ended {}, every server on {expected}",
                round + 1,
                seen["status"],
                seen["phase"],
                view["status"],
            );
            outcomes.push(json!({
                "killAfterPushMs": kill_after,
                "statusAtKill": seen["status"],
                "phaseAtKill": seen["phase"],
                "regressed": regress,
                "ended": view["status"],
                "revision": expected,
                "restartMs": restart_ms.last(),
                "settledMs": settled_ms.last(),
            }));
            self.revision = expected;
            self.note_usage();
        }
        let ended = |status: &str| outcomes.iter().filter(|o| o["ended"] == status).count();
        self.report.section("chaos", "kills", json!(outcomes.len()));
        self.report
            .section("chaos", "completed", json!(ended("Completed")));
        self.report
            .section("chaos", "rolledBack", json!(ended("RolledBack")));
        self.report.section("chaos", "rounds", json!(outcomes));
        self.report.row(
            "chaos: kills / completed / rolled back",
            format!(
                "{} / {} / {}",
                outcomes.len(),
                ended("Completed"),
                ended("RolledBack")
            ),
        );
        self.report.sample("chaos", "restartMs", &restart_ms);
        self.report
            .sample("chaos", "killToAllServersSettledMs", &settled_ms);
        self.report
            .series
            .push(("killToSettled".into(), settled_ms));
        Ok(())
    }

    /// After a kill: every version pushed is stored, the deployment and its
    /// decisions are in the audit chain (which holds), and the hub's
    /// registry names `revision` for every server.
    async fn check_nothing_lost(&self, id: &str, revision: i64) -> anyhow::Result<()> {
        let versions = self
            .api
            .get(&format!(
                "/api/v1/configs/{}/versions?limit=1000",
                self.config
            ))
            .await?
            .ok("listing versions")?;
        let stored = versions["items"].as_array().map_or(0, Vec::len);
        if stored != self.versions as usize {
            bail!("{} versions pushed, {stored} stored", self.versions);
        }
        let verified = self
            .api
            .get("/api/v1/audit/verify")
            .await?
            .ok("verifying the audit chain")?;
        if verified["valid"] != true {
            bail!("the audit chain is broken after a kill: {verified}");
        }
        let trail = self
            .api
            .get(&format!(
                "/api/v1/audit?resource=deployments/{id}&limit=1000"
            ))
            .await?
            .ok("reading the deployment's audit rows")?;
        let actions: Vec<&str> = trail["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["action"].as_str())
            .collect();
        if !actions.contains(&"deployment.create") {
            bail!("the deployment's creation is not in the audit trail: {actions:?}");
        }
        // Servers already on the revision may still be reconnecting.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let named = self
                .api
                .get(&format!(
                    "/api/v1/game-servers?config={}&revision={revision}&connected=true",
                    self.config
                ))
                .await?
                .ok("listing the servers")?;
            let on = named["items"].as_array().map_or(0, Vec::len);
            if on == self.opts.servers {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the hub names revision {revision} for {on} of {} connected servers",
                    self.opts.servers
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
