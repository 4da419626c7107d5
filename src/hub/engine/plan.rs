//! A deployment request read into the domain's [`Plan`], and the versions
//! it names as revisions.

use super::serving::{BASELINE, CANARY};
use crate::{
    catalog::DeploymentTarget,
    domain::{
        judgement::{Metric, RankSettings, default_rules},
        kinds::Strategy,
        plan::{MAX_VARIANT_WEIGHT, Plan, VariantPlan},
        rollout::{
            DEFAULT_CANARY_PHASES, DEFAULT_REGION_ORDER, Scope, check_phases, parse_duration,
        },
    },
    hub::{
        Hub,
        deployments::{DeploymentError, NewDeploymentRequest, merge_rules},
    },
};
use serde_json::Value;

/// Builds the plan of a new deployment from its request and the settings.
pub(super) fn plan_for(
    hub: &Hub,
    request: &NewDeploymentRequest,
    variants: Vec<VariantPlan>,
) -> Result<Plan, DeploymentError> {
    let settings = &hub.deployment_settings;
    let invalid = |why: String| DeploymentError::Invalid(why);
    let duration =
        |value: &Option<Value>, name: &str, default: u64| -> Result<u64, DeploymentError> {
            value
                .as_ref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| invalid(format!("{name}: {e}")))
                .map(|v| v.unwrap_or(default))
        };
    let strategy = request.strategy;
    let mut phases = match strategy {
        Strategy::Canary => request
            .phases
            .clone()
            .unwrap_or_else(|| DEFAULT_CANARY_PHASES.to_vec()),
        Strategy::BlueGreen => {
            let green = request
                .green_percentage
                .unwrap_or(settings.green_percentage);
            if !(green > 0.0 && green < 100.0) {
                return Err(invalid("greenPercentage must be between 0 and 100".into()));
            }
            vec![green, 100.0]
        }
        _ => vec![100.0],
    };
    if strategy == Strategy::Canary {
        if let Some(first) = request.canary_percentage {
            if request.phases.is_none() {
                phases.retain(|p| *p > first);
            }
            if phases.first() != Some(&first) {
                phases.insert(0, first);
            }
            phases.retain(|p| *p >= first);
        }
    } else if request.phases.is_some() || request.canary_percentage.is_some() {
        return Err(invalid(format!(
            "phases and canaryPercentage apply to Canary deployments, not {strategy}"
        )));
    }
    check_phases(&phases).map_err(|e| invalid(format!("phases: {e}")))?;
    let clean = |list: &Option<Vec<String>>, what: &str| -> Result<Vec<String>, DeploymentError> {
        let list = list.clone().unwrap_or_default();
        if list.len() > 64 || list.iter().any(|r| r.is_empty() || r.len() > 64) {
            return Err(invalid(format!(
                "{what}: at most 64 names of 1-64 characters"
            )));
        }
        Ok(list)
    };
    let regions = clean(&request.regions, "regions")?;
    let tags = clean(&request.tags, "tags")?;
    let (scope, region_order) = if strategy == Strategy::Geographic {
        let order = if regions.is_empty() {
            DEFAULT_REGION_ORDER.iter().map(|r| r.to_string()).collect()
        } else {
            regions
        };
        (
            Scope {
                regions: order.clone(),
                tags,
            },
            order,
        )
    } else {
        (Scope { regions, tags }, Vec::new())
    };
    if (strategy == Strategy::ABTest) == variants.is_empty() {
        return Err(invalid(
            "variants are required for ABTest and apply to nothing else".into(),
        ));
    }
    let mut rules = default_rules();
    if request.health_check_enabled == Some(false) {
        rules.retain(|r| r.metric != Metric::HealthCheckFailures);
    }
    if let Some(changes) = &request.thresholds {
        merge_rules(&mut rules, changes)?;
    }
    let confidence = request.confidence.unwrap_or(settings.confidence);
    if !(0.5..1.0).contains(&confidence) {
        return Err(invalid("confidence must be in [0.5, 1)".into()));
    }
    let batch_size = request.batch_size.unwrap_or(settings.batch_size);
    if batch_size == 0 {
        return Err(invalid("batchSize must be at least 1".into()));
    }
    Ok(Plan {
        phases,
        phase_interval_ms: duration(
            &request.phase_interval,
            "phaseInterval",
            settings.phase_interval_ms,
        )?,
        auto_promote: request.auto_promote.unwrap_or(true),
        batch_size,
        batch_interval_ms: duration(
            &request.batch_interval,
            "batchInterval",
            settings.batch_interval_ms,
        )?,
        stop_on_failure: request.stop_on_failure.unwrap_or(true),
        verification_ms: duration(
            &request.verification_period,
            "verificationPeriod",
            settings.verification_ms,
        )?,
        keep_blue_ms: duration(
            &request.keep_blue_duration,
            "keepBlueDuration",
            settings.keep_blue_ms,
        )?,
        scope,
        region_order,
        excluded_regions: Vec::new(),
        variants,
        rules,
        rank: RankSettings {
            confidence,
            ..RankSettings::default()
        },
        needs_approval: false,
    })
}

impl Hub {
    /// The deployment's version (or variants) as revisions.
    pub(super) async fn resolve_targets(
        &self,
        request: &NewDeploymentRequest,
    ) -> Result<(DeploymentTarget, Vec<VariantPlan>), DeploymentError> {
        if request.strategy != Strategy::ABTest {
            let version = request.version.as_deref().ok_or_else(|| {
                DeploymentError::Invalid(format!(
                    "version is required for a {} deployment",
                    request.strategy
                ))
            })?;
            if request.variants.is_some() {
                return Err(DeploymentError::Invalid(
                    "variants apply to ABTest deployments".into(),
                ));
            }
            return Ok((
                self.catalog
                    .deployment_target(&request.config, version)
                    .await?,
                Vec::new(),
            ));
        }
        let variants = request.variants.clone().unwrap_or_default();
        if !(2..=8).contains(&variants.len()) {
            return Err(DeploymentError::Invalid(
                "an A/B test has 2 to 8 variants".into(),
            ));
        }
        if variants
            .iter()
            .any(|v| !v.weight.is_finite() || v.weight <= 0.0 || v.weight > MAX_VARIANT_WEIGHT)
        {
            return Err(DeploymentError::Invalid(format!(
                "variant weights are positive numbers up to {MAX_VARIANT_WEIGHT} (relative shares)"
            )));
        }
        let mut plans: Vec<VariantPlan> = Vec::new();
        let mut last = None;
        for (index, variant) in variants.iter().enumerate() {
            let target = self
                .catalog
                .deployment_target(&request.config, &variant.version)
                .await?;
            let name = variant
                .name
                .clone()
                .unwrap_or_else(|| char::from(b'A' + index as u8).to_string());
            if name.is_empty()
                || name.len() > 32
                || plans.iter().any(|p| p.name == name)
                || name == BASELINE
                || name == CANARY
            {
                return Err(DeploymentError::Invalid(format!(
                    "variant names are 1-32 characters, unique, and not {BASELINE} or {CANARY}"
                )));
            }
            if self.policy(&target.environment).breaking_needs_approval
                && target.breaking
                && !target.approved
            {
                return Err(DeploymentError::ApprovalRequired {
                    config: target.config,
                    version: target.version,
                });
            }
            plans.push(VariantPlan {
                name,
                version: target.version.clone(),
                revision: target.revision,
                weight: variant.weight,
            });
            last = Some(target);
        }
        Ok((last.expect("at least two variants"), plans))
    }
}
