//! The next step of a deployment, for each strategy: from its state, the
//! verdict on its cohorts, its acks and how long its phase has run. The
//! engine carries the step out (commit, then push); the decision is here.
//!
//! A step is decided in two stages, because the engine pushes what servers
//! miss between them: [`on_verdict`] first (a critical breach acts before
//! anything else is pushed), then, for a running phase whose frames are
//! out, [`on_progress`].

use super::{judgement::Verdict, kinds::Strategy, plan::Plan};

/// What a deployment does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet.
    Wait,
    /// Into the next phase (or batch, or region).
    Advance { why: &'static str },
    /// Every phase is done.
    Complete,
    /// Roll back every server the deployment moved.
    RollBack(Cause),
    /// A critical breach, but the config has no previous revision to go
    /// back to: pause for an operator.
    PauseWithoutPrevious,
    /// The servers moved back have acked (or the ack timeout passed).
    FinishRollback,
}

/// Why a deployment rolls back by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A rule's critical threshold was breached (significantly).
    Breach,
    /// A rolling deployment that stops on failure: this server could not
    /// apply the new revision.
    ServerFailed {
        server: String,
        error: Option<String>,
    },
}

/// What the verdict alone decides. `None`: the phase is running and
/// healthy enough; go on to [`on_progress`] once what servers miss is
/// pushed. `can_roll_back`: the config has a previous revision, or the
/// deployment is narrowed (its servers return to what the layers below
/// give them).
pub fn on_verdict(
    running: bool,
    paused: bool,
    verdict: Verdict,
    can_roll_back: bool,
) -> Option<Next> {
    if !(running || paused) {
        return Some(Next::Wait);
    }
    if verdict == Verdict::Rollback {
        return Some(if can_roll_back {
            Next::RollBack(Cause::Breach)
        } else if running {
            Next::PauseWithoutPrevious
        } else {
            Next::Wait
        });
    }
    if running { None } else { Some(Next::Wait) }
}

/// Where a running phase stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: usize,
    /// Servers sent a frame of this deployment that have not acked it.
    pub unacked: i64,
    /// The first server (by id) that failed to apply, with its error.
    pub first_failure: Option<(String, Option<String>)>,
    /// Since the phase started.
    pub elapsed_ms: i64,
    pub verdict: Verdict,
}

/// What a running phase's progress decides: a phase moves on once every
/// server it pushed to acked, no warning holds it, and it has run for the
/// strategy's interval; the last phase completes once acked.
pub fn on_progress(plan: &Plan, strategy: Strategy, progress: &Progress) -> Next {
    if strategy == Strategy::Rolling
        && plan.stop_on_failure
        && let Some((server, error)) = &progress.first_failure
    {
        return Next::RollBack(Cause::ServerFailed {
            server: server.clone(),
            error: error.clone(),
        });
    }
    let acked = progress.unacked == 0;
    let holding = progress.verdict == Verdict::Hold;
    let due = |interval: u64| {
        acked && !holding && progress.elapsed_ms >= i64::try_from(interval).unwrap_or(i64::MAX)
    };
    let phase = progress.phase;
    let last_phase = phase.saturating_add(1) >= plan.phase_count(strategy);
    match strategy {
        Strategy::Direct if acked => Next::Complete,
        Strategy::Canary | Strategy::Geographic if last_phase && acked => Next::Complete,
        Strategy::Canary | Strategy::Geographic
            if plan.auto_promote && due(plan.phase_interval_ms) =>
        {
            Next::Advance {
                why: "the phase stayed healthy for its interval",
            }
        }
        Strategy::Rolling if plan.auto_promote && due(plan.batch_interval_ms) => Next::Advance {
            why: "the batch acked and stayed healthy",
        },
        Strategy::BlueGreen if phase == 0 && plan.auto_promote && due(plan.verification_ms) => {
            Next::Advance {
                why: "green verified: switching",
            }
        }
        Strategy::BlueGreen if phase > 0 && due(plan.keep_blue_ms) => Next::Advance {
            why: "blue no longer kept",
        },
        // An A/B test runs until an operator ends it.
        _ => Next::Wait,
    }
}

/// Whether the last ack a running phase waits on may move it on at once,
/// rather than at the next evaluation tick: true when, all else healthy,
/// only the acks held it (a direct deployment, a last phase, a phase past
/// its interval). The step itself still judges and decides; this only
/// spares a step that could not move anything (a canary phase mid-way
/// through its interval, an A/B test).
pub fn acks_move_it(plan: &Plan, strategy: Strategy, phase: usize, elapsed_ms: i64) -> bool {
    let acked = Progress {
        phase,
        unacked: 0,
        first_failure: None,
        elapsed_ms,
        verdict: Verdict::Healthy,
    };
    on_progress(plan, strategy, &acked) != Next::Wait
}

/// A rollback finishes when every server it moves back acked, or its ack
/// timeout passed (the rest are listed as unacked).
pub fn on_rolling_back(waiting: usize, overdue: bool) -> Next {
    if waiting == 0 || overdue {
        Next::FinishRollback
    } else {
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        judgement::{RankSettings, default_rules},
        rollout::Scope,
    };

    fn plan(auto_promote: bool) -> Plan {
        Plan {
            phases: vec![10.0, 50.0, 100.0],
            phase_interval_ms: 60_000,
            auto_promote,
            batch_size: 2,
            batch_interval_ms: 30_000,
            stop_on_failure: true,
            verification_ms: 20_000,
            keep_blue_ms: 10_000,
            scope: Scope::default(),
            region_order: vec!["NA".into(), "EU".into()],
            excluded_regions: Vec::new(),
            variants: Vec::new(),
            rules: default_rules(),
            rank: RankSettings::default(),
            needs_approval: false,
        }
    }

    #[test]
    fn the_verdict_decides_first() {
        use Verdict::*;
        let rollback = Some(Next::RollBack(Cause::Breach));
        // (running, paused, verdict, can roll back, next)
        let table = [
            (true, false, Rollback, true, rollback.clone()),
            (false, true, Rollback, true, rollback),
            (
                true,
                false,
                Rollback,
                false,
                Some(Next::PauseWithoutPrevious),
            ),
            (false, true, Rollback, false, Some(Next::Wait)),
            (true, false, Hold, true, None),
            (true, false, Healthy, false, None),
            (true, false, NotEnoughData, true, None),
            (false, true, Healthy, true, Some(Next::Wait)),
            (false, false, Rollback, true, Some(Next::Wait)),
        ];
        for (running, paused, verdict, can, next) in table {
            assert_eq!(
                on_verdict(running, paused, verdict, can),
                next,
                "running {running}, paused {paused}, {verdict:?}, can roll back {can}"
            );
        }
    }

    #[test]
    fn each_strategy_moves_on_when_acked_healthy_and_due() {
        use Strategy::*;
        use Verdict::*;
        let advance = |why| Next::Advance { why };
        let phase_ok = advance("the phase stayed healthy for its interval");
        let batch_ok = advance("the batch acked and stayed healthy");
        // (strategy, auto-promote, phase, unacked, elapsed ms, verdict, next)
        let table = [
            (Direct, true, 0, 0, 0, Healthy, Next::Complete),
            (Direct, true, 0, 3, 999_999, Healthy, Next::Wait),
            (Direct, false, 0, 0, 0, Hold, Next::Complete),
            (Canary, true, 0, 0, 60_000, Healthy, phase_ok.clone()),
            (Canary, true, 0, 0, 60_000, NotEnoughData, phase_ok.clone()),
            (Canary, true, 0, 0, 59_999, Healthy, Next::Wait),
            (Canary, true, 0, 1, 60_000, Healthy, Next::Wait),
            (Canary, true, 0, 0, 60_000, Hold, Next::Wait),
            (Canary, false, 0, 0, 60_000, Healthy, Next::Wait),
            (Canary, true, 2, 0, 0, Healthy, Next::Complete),
            (Canary, false, 2, 0, 0, Hold, Next::Complete),
            (Canary, true, 2, 1, 0, Healthy, Next::Wait),
            (Geographic, true, 0, 0, 60_000, Healthy, phase_ok),
            (Geographic, true, 1, 0, 0, Healthy, Next::Complete),
            (Rolling, true, 7, 0, 30_000, Healthy, batch_ok),
            (Rolling, true, 7, 0, 29_999, Healthy, Next::Wait),
            (Rolling, false, 7, 0, 30_000, Healthy, Next::Wait),
            (
                BlueGreen,
                true,
                0,
                0,
                20_000,
                Healthy,
                advance("green verified: switching"),
            ),
            (BlueGreen, false, 0, 0, 20_000, Healthy, Next::Wait),
            (
                BlueGreen,
                false,
                1,
                0,
                10_000,
                Healthy,
                advance("blue no longer kept"),
            ),
            (BlueGreen, true, 1, 0, 9_999, Healthy, Next::Wait),
            (BlueGreen, true, 1, 0, 10_000, Hold, Next::Wait),
            (ABTest, true, 0, 0, 999_999, Healthy, Next::Wait),
        ];
        for (strategy, auto, phase, unacked, elapsed_ms, verdict, next) in table {
            let progress = Progress {
                phase,
                unacked,
                first_failure: None,
                elapsed_ms,
                verdict,
            };
            assert_eq!(
                on_progress(&plan(auto), strategy, &progress),
                next,
                "{strategy} auto {auto} phase {phase} unacked {unacked} after {elapsed_ms} ms, {verdict:?}"
            );
        }
    }

    #[test]
    fn a_failed_server_stops_a_rolling_deployment_that_says_so() {
        let failed = Progress {
            phase: 1,
            unacked: 0,
            first_failure: Some(("eu-1".into(), Some("bad".into()))),
            elapsed_ms: 0,
            verdict: Verdict::Healthy,
        };
        assert_eq!(
            on_progress(&plan(true), Strategy::Rolling, &failed),
            Next::RollBack(Cause::ServerFailed {
                server: "eu-1".into(),
                error: Some("bad".into())
            })
        );
        let keep_going = Plan {
            stop_on_failure: false,
            ..plan(true)
        };
        assert_eq!(
            on_progress(&keep_going, Strategy::Rolling, &failed),
            Next::Wait
        );
        // Other strategies judge failures through their metrics.
        assert_eq!(
            on_progress(&plan(true), Strategy::Canary, &failed),
            Next::Wait
        );
    }

    #[test]
    fn a_rollback_finishes_when_acked_or_overdue() {
        assert_eq!(on_rolling_back(0, false), Next::FinishRollback);
        assert_eq!(on_rolling_back(3, true), Next::FinishRollback);
        assert_eq!(on_rolling_back(3, false), Next::Wait);
    }

    #[test]
    fn the_last_ack_steps_only_a_phase_it_can_move() {
        use Strategy::*;
        // (strategy, phase, elapsed, auto-promote, steps now)
        let table = [
            (Direct, 0, 0, true, true),
            (Direct, 0, 0, false, true),
            // Canary: a phase waits out its interval; the last completes.
            (Canary, 0, 1_000, true, false),
            (Canary, 0, 60_000, true, true),
            (Canary, 0, 60_000, false, false),
            (Canary, 2, 0, true, true),
            (Canary, 2, 0, false, true),
            (Geographic, 1, 0, true, true),
            (Rolling, 0, 29_999, true, false),
            (Rolling, 0, 30_000, true, true),
            (BlueGreen, 0, 19_000, true, false),
            (BlueGreen, 0, 20_000, true, true),
            (BlueGreen, 1, 10_000, false, true),
            // An A/B test runs until an operator ends it.
            (ABTest, 0, 3_600_000, true, false),
        ];
        for (strategy, phase, elapsed, auto, steps) in table {
            assert_eq!(
                acks_move_it(&plan(auto), strategy, phase, elapsed),
                steps,
                "{strategy:?} phase {phase} after {elapsed} ms, auto-promote {auto}"
            );
        }
    }
}
