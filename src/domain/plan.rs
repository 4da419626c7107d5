//! A deployment's plan (what it was asked to do, as the engine understood
//! it; stored as the row's `spec`) and who it covers in each state.

use super::{
    judgement::{RankSettings, Rule},
    kinds::Strategy,
    rollout::{BUCKETS, Cover, DeploymentState, percent_limit},
};
use serde::{Deserialize, Serialize};

/// The largest A/B variant weight (weights are relative shares).
pub const MAX_VARIANT_WEIGHT: f64 = 1_000_000.0;

/// One A/B variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantPlan {
    pub name: String,
    pub version: String,
    pub revision: i64,
    pub weight: f64,
}

/// What a deployment was asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Canary: percentages. Blue-green: the green share, then 100. Direct: 100.
    pub phases: Vec<f64>,
    pub phase_interval_ms: u64,
    pub auto_promote: bool,
    pub batch_size: usize,
    pub batch_interval_ms: u64,
    pub stop_on_failure: bool,
    pub verification_ms: u64,
    pub keep_blue_ms: u64,
    #[serde(default)]
    pub scope: super::rollout::Scope,
    /// Geographic: the order of the regions.
    #[serde(default)]
    pub region_order: Vec<String>,
    /// Geographic: regions rolled back on their own.
    #[serde(default)]
    pub excluded_regions: Vec<String>,
    #[serde(default)]
    pub variants: Vec<VariantPlan>,
    pub rules: Vec<Rule>,
    pub rank: RankSettings,
    pub needs_approval: bool,
}

impl Plan {
    /// Phases the strategy has (Rolling: open-ended until everyone is covered).
    pub fn phase_count(&self, strategy: Strategy) -> usize {
        match strategy {
            Strategy::Canary | Strategy::BlueGreen => self.phases.len(),
            Strategy::Geographic => self.region_order.len().max(1),
            Strategy::Rolling => usize::MAX,
            Strategy::Direct | Strategy::ABTest => 1,
        }
    }

    /// Who the deployment covers in `state`. `cover_bucket` is a rolling
    /// deployment's stored bucket limit.
    pub fn cover(
        &self,
        strategy: Strategy,
        state: DeploymentState,
        cover_bucket: Option<i64>,
    ) -> Cover {
        match state {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => {
                match strategy {
                    Strategy::Direct => Cover::Below(BUCKETS),
                    Strategy::Canary | Strategy::BlueGreen => Cover::Below(percent_limit(
                        self.phases[phase.min(self.phases.len().saturating_sub(1))],
                    )),
                    Strategy::Rolling => Cover::Below(
                        cover_bucket.map_or(0, |b| b.clamp(0, i64::from(BUCKETS)) as u32),
                    ),
                    Strategy::Geographic => Cover::Regions(self.regions_through(phase)),
                    Strategy::ABTest => self.variant_cover(),
                }
            }
            DeploymentState::Completed => self.full_cover(strategy),
            _ => Cover::Nobody,
        }
    }

    /// The servers a finished deployment keeps (its last phase, whole).
    pub fn full_cover(&self, strategy: Strategy) -> Cover {
        match strategy {
            Strategy::Geographic => Cover::Regions(self.regions_through(usize::MAX)),
            Strategy::ABTest => self.variant_cover(),
            _ => Cover::Below(BUCKETS),
        }
    }

    /// Geographic: the regions of phases `0..=phase`, less those rolled back.
    fn regions_through(&self, phase: usize) -> Vec<String> {
        self.region_order
            .iter()
            .take(phase.saturating_add(1))
            .filter(|r| {
                !self
                    .excluded_regions
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(r))
            })
            .cloned()
            .collect()
    }

    fn variant_cover(&self) -> Cover {
        Cover::Variants(
            self.variants
                .iter()
                .map(|v| (v.weight, v.revision))
                .collect(),
        )
    }

    /// Whether finishing leaves some servers out: then the deployment
    /// stands as a layer of its own instead of becoming the config's
    /// active revision.
    pub fn scoped(&self, strategy: Strategy) -> bool {
        !self.scope.is_everything() || strategy == Strategy::Geographic
    }
}

/// Rolling: the bucket limit that covers `batch` more of the healthy
/// in-scope servers, given their buckets, than `current` does; `BUCKETS`
/// (everyone) when no more than `batch` are left out.
pub fn next_rolling_limit(mut buckets: Vec<u32>, current: u32, batch: usize) -> u32 {
    buckets.retain(|b| *b >= current);
    buckets.sort_unstable();
    if buckets.len() <= batch {
        BUCKETS
    } else {
        buckets[batch.max(1) - 1] + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{judgement::default_rules, rollout::Scope};

    fn plan() -> Plan {
        Plan {
            phases: vec![10.0, 50.0, 100.0],
            phase_interval_ms: 1000,
            auto_promote: true,
            batch_size: 2,
            batch_interval_ms: 1000,
            stop_on_failure: true,
            verification_ms: 1000,
            keep_blue_ms: 1000,
            scope: Scope::default(),
            region_order: vec!["NA".into(), "EU".into(), "APAC".into()],
            excluded_regions: vec!["eu".into()],
            variants: vec![
                VariantPlan {
                    name: "A".into(),
                    version: "1.0.0".into(),
                    revision: 1,
                    weight: 1.0,
                },
                VariantPlan {
                    name: "B".into(),
                    version: "1.1.0".into(),
                    revision: 2,
                    weight: 3.0,
                },
            ],
            rules: default_rules(),
            rank: RankSettings::default(),
            needs_approval: false,
        }
    }

    #[test]
    fn each_strategy_covers_what_its_phase_says() {
        use DeploymentState::*;
        use Strategy::*;
        let plan = plan();
        let regions = |list: &[&str]| Cover::Regions(list.iter().map(|r| r.to_string()).collect());
        // (strategy, state, rolling bucket, cover)
        let table = [
            (Canary, InProgress { phase: 0 }, None, Cover::Below(1000)),
            (Canary, Paused { phase: 1 }, None, Cover::Below(5000)),
            (Canary, InProgress { phase: 9 }, None, Cover::Below(BUCKETS)),
            (Direct, InProgress { phase: 0 }, None, Cover::Below(BUCKETS)),
            (
                Rolling,
                InProgress { phase: 3 },
                Some(1234),
                Cover::Below(1234),
            ),
            (Rolling, InProgress { phase: 0 }, None, Cover::Below(0)),
            (
                Rolling,
                InProgress { phase: 0 },
                Some(99_999),
                Cover::Below(BUCKETS),
            ),
            (Geographic, InProgress { phase: 0 }, None, regions(&["NA"])),
            (Geographic, InProgress { phase: 1 }, None, regions(&["NA"])),
            (
                Geographic,
                InProgress { phase: 2 },
                None,
                regions(&["NA", "APAC"]),
            ),
            (Geographic, Completed, None, regions(&["NA", "APAC"])),
            (
                ABTest,
                InProgress { phase: 0 },
                None,
                Cover::Variants(vec![(1.0, 1), (3.0, 2)]),
            ),
            (Canary, Completed, None, Cover::Below(BUCKETS)),
            (Canary, AwaitingApproval, None, Cover::Nobody),
            (Canary, RollingBack, None, Cover::Nobody),
            (Canary, Cancelled, None, Cover::Nobody),
        ];
        for (strategy, state, bucket, cover) in table {
            assert_eq!(
                plan.cover(strategy, state, bucket),
                cover,
                "{strategy} {state:?}"
            );
        }
        assert_eq!(plan.phase_count(Canary), 3);
        assert_eq!(plan.phase_count(Geographic), 3);
        assert_eq!(plan.phase_count(Direct), 1);
        assert_eq!(plan.phase_count(Rolling), usize::MAX);
        assert!(plan.scoped(Geographic) && !plan.scoped(Canary));
        let narrowed = Plan {
            scope: Scope {
                regions: vec!["NA".into()],
                tags: Vec::new(),
            },
            ..plan
        };
        assert!(narrowed.scoped(Canary));
    }

    #[test]
    fn a_rolling_batch_covers_the_next_servers_by_bucket() {
        let buckets = vec![900, 10, 500, 40, 7000];
        // (current limit, batch, next limit)
        let table = [
            (0, 2, 41),
            (41, 2, 901),
            (901, 2, BUCKETS),
            (0, 5, BUCKETS),
            (0, 1, 11),
            (0, 0, 11),
        ];
        for (current, batch, next) in table {
            assert_eq!(
                next_rolling_limit(buckets.clone(), current, batch),
                next,
                "from {current} by {batch}"
            );
        }
        assert_eq!(next_rolling_limit(Vec::new(), 0, 1), BUCKETS);
    }
}
