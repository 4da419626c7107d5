//! How a deployment advances: which servers belong to which cohort, what
//! each phase covers, and which state changes are allowed.
//!
//! Cohort membership is a stable function of the deployment id and the
//! server id (SHA-256, not a per-process hasher), so the same servers stay
//! in the canary across phases, reconnects and hub restarts, and a
//! percentage that grows only ever adds servers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets a server can fall in: percentages are resolved to 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The server's bucket in `[0, BUCKETS)` for this deployment.
pub fn bucket(deployment_id: &str, server_id: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(deployment_id.as_bytes())
        .chain_update([0u8])
        .chain_update(server_id.as_bytes())
        .finalize();
    let head = u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 8 bytes to spare"),
    );
    (head % u64::from(BUCKETS)) as u32
}

/// Whether a server in `bucket` is within the first `percent` of servers.
pub fn within(bucket: u32, percent: f64) -> bool {
    f64::from(bucket) < percent.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0
}

/// The variant (index into `weights`) a server in `bucket` runs; weights
/// need not add up to anything in particular (they are shares, scaled by
/// the largest so no sum overflows; non-finite or non-positive ones get
/// nothing).
pub fn variant(bucket: u32, weights: &[f64]) -> Option<usize> {
    let share = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
    let largest = weights.iter().map(|w| share(*w)).fold(0.0, f64::max);
    if largest <= 0.0 {
        return None;
    }
    let total: f64 = weights.iter().map(|w| share(*w) / largest).sum();
    let point = (f64::from(bucket) + 0.5) / f64::from(BUCKETS) * total;
    let mut cumulative = 0.0;
    for (index, weight) in weights.iter().enumerate() {
        cumulative += share(*weight) / largest;
        if point < cumulative {
            return Some(index);
        }
    }
    weights.iter().rposition(|w| share(*w) > 0.0)
}

/// The canary phases by default.
pub const DEFAULT_CANARY_PHASES: [f64; 4] = [10.0, 30.0, 50.0, 100.0];
/// The region order of a geographic rollout by default.
pub const DEFAULT_REGION_ORDER: [&str; 5] = ["NA-WEST", "NA-EAST", "EU-WEST", "EU-EAST", "APAC"];

/// Checks a list of canary percentages: increasing, in (0, 100], ending at 100.
pub fn check_phases(phases: &[f64]) -> Result<(), String> {
    if phases.is_empty() {
        return Err("phases must not be empty".into());
    }
    if phases
        .iter()
        .any(|p| !p.is_finite() || *p <= 0.0 || *p > 100.0)
    {
        return Err("each phase is a percentage in (0, 100]".into());
    }
    if phases.windows(2).any(|w| w[1] <= w[0]) {
        return Err("phases must increase".into());
    }
    if phases.last() != Some(&100.0) {
        return Err("the last phase must be 100".into());
    }
    Ok(())
}

/// Which servers a deployment may touch: every listed region (any of them)
/// and every listed tag (all of them); empty lists do not narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Scope {
    pub fn is_everything(&self) -> bool {
        self.regions.is_empty() && self.tags.is_empty()
    }

    pub fn contains(&self, region: &str, has_tag: impl Fn(&str) -> bool) -> bool {
        (self.regions.is_empty() || self.regions.iter().any(|r| r.eq_ignore_ascii_case(region)))
            && self.tags.iter().all(|t| has_tag(t))
    }
}

/// Which in-scope servers a deployment has reached so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Cover {
    /// Nobody (awaiting approval, rolling back, cancelled).
    Nobody,
    /// Servers whose bucket is below this (canary percentages, rolling
    /// batches, the green set); `BUCKETS` is everyone.
    Below(u32),
    /// Servers in these regions (geographic phases).
    Regions(Vec<String>),
    /// Everyone, each on the revision of its variant (A/B): `(weight, revision)`.
    Variants(Vec<(f64, i64)>),
}

/// What a deployment makes a server run: `Some(revision)` when it covers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub deployment_id: String,
    pub revision: i64,
    pub scope: Scope,
    pub cover: Cover,
}

impl Assignment {
    pub fn revision_for(
        &self,
        server_id: &str,
        region: &str,
        has_tag: impl Fn(&str) -> bool,
    ) -> Option<i64> {
        if matches!(self.cover, Cover::Nobody) || !self.scope.contains(region, has_tag) {
            return None;
        }
        match &self.cover {
            Cover::Nobody => None,
            Cover::Below(limit) => (*limit >= BUCKETS
                || bucket(&self.deployment_id, server_id) < *limit)
                .then_some(self.revision),
            Cover::Regions(regions) => regions
                .iter()
                .any(|r| r.eq_ignore_ascii_case(region))
                .then_some(self.revision),
            Cover::Variants(variants) => {
                let weights: Vec<f64> = variants.iter().map(|v| v.0).collect();
                variant(bucket(&self.deployment_id, server_id), &weights).map(|i| variants[i].1)
            }
        }
    }
}

/// The bucket limit covering `percent` of servers.
pub fn percent_limit(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0).ceil() as u32
}

/// ISO 8601 durations (`PT5M`) or seconds, in milliseconds (shared with the SDK).
pub use hotswap_client::liveops::parse_duration;

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum DeploymentState {
    Pending,
    AwaitingApproval,
    InProgress { phase: usize },
    Paused { phase: usize },
    Completed,
    RollingBack,
    RolledBack,
    Cancelled,
    Failed,
}

impl DeploymentState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::RolledBack | Self::Cancelled | Self::Failed
        )
    }

    /// The phase, while one is running or paused.
    pub fn phase(self) -> Option<usize> {
        match self {
            Self::InProgress { phase } | Self::Paused { phase } => Some(phase),
            _ => None,
        }
    }

    /// The state's stored (and API) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::InProgress { .. } => "InProgress",
            Self::Paused { .. } => "Paused",
            Self::Completed => "Completed",
            Self::RollingBack => "RollingBack",
            Self::RolledBack => "RolledBack",
            Self::Cancelled => "Cancelled",
            Self::Failed => "Failed",
        }
    }

    /// A stored status and phase read back. The store holds only names
    /// [`DeploymentState::name`] wrote; an unknown one reads as
    /// `Completed`, which nothing drives any more.
    pub fn from_stored(status: &str, phase: i64) -> Self {
        let phase = usize::try_from(phase).unwrap_or(0);
        match status {
            "Pending" => Self::Pending,
            "AwaitingApproval" => Self::AwaitingApproval,
            "InProgress" => Self::InProgress { phase },
            "Paused" => Self::Paused { phase },
            "RollingBack" => Self::RollingBack,
            "RolledBack" => Self::RolledBack,
            "Cancelled" => Self::Cancelled,
            "Failed" => Self::Failed,
            _ => Self::Completed,
        }
    }
}

/// What can happen to a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Created; production deployments wait for an approval.
    Start {
        needs_approval: bool,
    },
    Approve,
    Pause,
    Resume,
    /// The current phase was healthy long enough, or an operator promoted it.
    Advance {
        phases: usize,
    },
    Cancel,
    /// A critical breach or an operator's rollback.
    Rollback,
    /// Every server that had the new revision acked the previous one.
    RollbackFinished,
    Fail,
}

/// A transition that is not allowed, with the state it was tried from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event:?} a deployment that is {from:?}")]
pub struct InvalidTransition {
    pub from: DeploymentState,
    pub event: Event,
}

/// The state after `event`.
pub fn transition(
    from: DeploymentState,
    event: Event,
) -> Result<DeploymentState, InvalidTransition> {
    use DeploymentState as S;
    use Event as E;
    let next = match (from, event) {
        (
            S::Pending,
            E::Start {
                needs_approval: true,
            },
        ) => S::AwaitingApproval,
        (
            S::Pending,
            E::Start {
                needs_approval: false,
            },
        )
        | (S::AwaitingApproval, E::Approve) => S::InProgress { phase: 0 },
        (S::InProgress { phase }, E::Pause) => S::Paused { phase },
        (S::Paused { phase }, E::Resume) => S::InProgress { phase },
        (S::InProgress { phase } | S::Paused { phase }, E::Advance { phases }) => {
            if phase + 1 >= phases {
                S::Completed
            } else {
                S::InProgress { phase: phase + 1 }
            }
        }
        (S::Pending | S::AwaitingApproval | S::InProgress { .. } | S::Paused { .. }, E::Cancel) => {
            S::Cancelled
        }
        (S::InProgress { .. } | S::Paused { .. } | S::Completed, E::Rollback) => S::RollingBack,
        (S::RollingBack, E::RollbackFinished) => S::RolledBack,
        (state, E::Fail) if !state.is_finished() => S::Failed,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_iso_8601_or_seconds() {
        use serde_json::json;
        assert_eq!(parse_duration(&json!("PT5M")), Ok(300_000));
        assert_eq!(parse_duration(&json!("PT1H30M")), Ok(5_400_000));
        assert_eq!(parse_duration(&json!("P1D")), Ok(86_400_000));
        assert_eq!(parse_duration(&json!("PT0.5S")), Ok(500));
        assert_eq!(parse_duration(&json!(2)), Ok(2_000));
        assert_eq!(parse_duration(&json!(0.25)), Ok(250));
        for bad in [
            json!("5M"),
            json!("PT"),
            json!("PT5X"),
            json!("PT5"),
            json!(-1),
            json!(true),
            json!("P90D"),
        ] {
            assert!(parse_duration(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assignments_cover_by_scope_bucket_region_and_variant() {
        let servers: Vec<String> = (0..1_000).map(|i| format!("s{i}")).collect();
        let mut a = Assignment {
            deployment_id: "dep".into(),
            revision: 7,
            scope: Scope::default(),
            cover: Cover::Below(percent_limit(30.0)),
        };
        let covered = servers
            .iter()
            .filter(|s| a.revision_for(s, "EU-WEST", |_| false) == Some(7))
            .count();
        assert!((250..350).contains(&covered), "{covered}");
        a.cover = Cover::Below(BUCKETS);
        assert!(
            servers
                .iter()
                .all(|s| a.revision_for(s, "x", |_| false) == Some(7))
        );
        a.scope = Scope {
            regions: vec!["eu-west".into()],
            tags: vec!["pvp".into()],
        };
        assert_eq!(a.revision_for("s1", "EU-WEST", |t| t == "pvp"), Some(7));
        assert_eq!(a.revision_for("s1", "EU-WEST", |_| false), None);
        assert_eq!(a.revision_for("s1", "NA-EAST", |t| t == "pvp"), None);
        a.scope = Scope::default();
        a.cover = Cover::Regions(vec!["NA-WEST".into()]);
        assert_eq!(a.revision_for("s1", "na-west", |_| false), Some(7));
        assert_eq!(a.revision_for("s1", "APAC", |_| false), None);
        a.cover = Cover::Variants(vec![(50.0, 3), (50.0, 4)]);
        let on_four = servers
            .iter()
            .filter(|s| a.revision_for(s, "x", |_| false) == Some(4))
            .count();
        assert!((430..570).contains(&on_four), "{on_four}");
        a.cover = Cover::Nobody;
        assert_eq!(a.revision_for("s1", "x", |_| true), None);
    }

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket("d1", "server-1"), bucket("d1", "server-1"));
        assert_ne!(
            bucket("d1", "server-1"),
            bucket("d2", "server-1"),
            "another deployment draws another canary"
        );
        let in_ten: usize = (0..10_000)
            .filter(|i| within(bucket("d1", &format!("s{i}")), 10.0))
            .count();
        assert!(
            (900..1100).contains(&in_ten),
            "{in_ten} of 10,000 in a 10 % canary"
        );
    }

    #[test]
    fn a_growing_percentage_only_adds_servers() {
        let servers: Vec<String> = (0..2_000).map(|i| format!("s{i}")).collect();
        let members = |percent| -> Vec<&String> {
            servers
                .iter()
                .filter(|s| within(bucket("dep", s), percent))
                .collect()
        };
        let (ten, thirty) = (members(10.0), members(30.0));
        assert!(ten.iter().all(|s| thirty.contains(s)));
        assert_eq!(members(100.0).len(), 2_000);
        assert!(members(0.0).is_empty());
    }

    #[test]
    fn variants_follow_their_weights() {
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[variant(bucket("ab", &format!("s{i}")), &[1.0, 1.0, 2.0]).unwrap()] += 1;
        }
        assert!(
            (6_800..8_200).contains(&counts[0]) && (6_800..8_200).contains(&counts[1]),
            "{counts:?}"
        );
        assert!((14_200..15_800).contains(&counts[2]), "{counts:?}");
        assert_eq!(variant(5, &[0.0, 0.0]), None);
        assert_eq!(variant(9_999, &[1.0, 0.0]), Some(0));
        // Shares that would overflow a sum split as their ratios say.
        let mut huge = [0usize; 2];
        for i in 0..10_000 {
            huge[variant(bucket("ab", &format!("s{i}")), &[1e308, 1e308]).unwrap()] += 1;
        }
        assert!((4_500..5_500).contains(&huge[0]), "{huge:?}");
        assert_eq!(variant(1, &[f64::INFINITY, f64::NAN]), None);
    }

    #[test]
    fn phase_lists_are_checked() {
        assert!(check_phases(&DEFAULT_CANARY_PHASES).is_ok());
        for bad in [
            &[][..],
            &[10.0, 5.0, 100.0],
            &[10.0, 50.0],
            &[0.0, 100.0],
            &[50.0, 150.0],
        ] {
            assert!(check_phases(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_read_back_from_their_stored_names() {
        use DeploymentState as S;
        for state in [
            S::Pending,
            S::AwaitingApproval,
            S::InProgress { phase: 3 },
            S::Paused { phase: 2 },
            S::Completed,
            S::RollingBack,
            S::RolledBack,
            S::Cancelled,
            S::Failed,
        ] {
            let phase = state.phase().unwrap_or(0) as i64;
            assert_eq!(S::from_stored(state.name(), phase), state);
        }
        assert_eq!(S::from_stored("InProgress", -1), S::InProgress { phase: 0 });
    }

    #[test]
    fn the_state_machine_allows_what_the_design_says_and_nothing_else() {
        use DeploymentState as S;
        use Event as E;
        let allowed = [
            (
                S::Pending,
                E::Start {
                    needs_approval: true,
                },
                S::AwaitingApproval,
            ),
            (
                S::Pending,
                E::Start {
                    needs_approval: false,
                },
                S::InProgress { phase: 0 },
            ),
            (S::AwaitingApproval, E::Approve, S::InProgress { phase: 0 }),
            (S::InProgress { phase: 1 }, E::Pause, S::Paused { phase: 1 }),
            (
                S::Paused { phase: 1 },
                E::Resume,
                S::InProgress { phase: 1 },
            ),
            (
                S::InProgress { phase: 1 },
                E::Advance { phases: 4 },
                S::InProgress { phase: 2 },
            ),
            (
                S::InProgress { phase: 3 },
                E::Advance { phases: 4 },
                S::Completed,
            ),
            (
                S::Paused { phase: 0 },
                E::Advance { phases: 4 },
                S::InProgress { phase: 1 },
            ),
            (S::AwaitingApproval, E::Cancel, S::Cancelled),
            (S::InProgress { phase: 2 }, E::Rollback, S::RollingBack),
            (S::Completed, E::Rollback, S::RollingBack),
            (S::RollingBack, E::RollbackFinished, S::RolledBack),
            (S::InProgress { phase: 0 }, E::Fail, S::Failed),
        ];
        for (from, event, to) in allowed {
            assert_eq!(transition(from, event), Ok(to), "{from:?} + {event:?}");
        }
        let refused = [
            (S::AwaitingApproval, E::Pause),
            (S::Completed, E::Cancel),
            (S::RolledBack, E::Rollback),
            (S::Cancelled, E::Resume),
            (S::Pending, E::Approve),
            (S::InProgress { phase: 0 }, E::Approve),
            (S::Completed, E::Fail),
            (S::RollingBack, E::Pause),
        ];
        for (from, event) in refused {
            assert_eq!(
                transition(from, event),
                Err(InvalidTransition { from, event }),
                "{from:?} + {event:?}"
            );
        }
    }
}
