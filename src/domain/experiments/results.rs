//! An experiment's results from per-variant sums over its units: per
//! variant the mean or rate with its 95 % interval, the difference to
//! control with its p-value (Welch's t, or the two-proportion z), the
//! always-valid p-value of the mixture SPRT (the smallest over every look,
//! which the caller keeps), the sample-ratio-mismatch check on the units
//! each variant got, and the guardrails' verdict.

use super::spec::{ExperimentSpec, Guardrail, Harm, MetricKind};
use crate::domain::experiment_stats::{
    Comparison, Interval, MeanSample, RateSample, SampleRatio, mean_interval, rate_interval,
    sample_ratio, sequential_p, two_proportion, welch,
};
use std::collections::HashMap;

/// One variant's units for one metric, summed over units: for a rate
/// `total` counts the units that converted; for a mean it is the sum of
/// the units' values and `squares` the sum of their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    pub units: u64,
    pub total: f64,
    pub squares: f64,
}

/// A variant's value for a metric, and how it compares with control.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantOutcome {
    pub variant: String,
    pub units: u64,
    /// The mean per unit, or the rate.
    pub value: f64,
    pub interval: Option<Interval>,
    /// None for the control, or below two units.
    pub versus_control: Option<Versus>,
}

/// The difference to control.
#[derive(Debug, Clone, PartialEq)]
pub struct Versus {
    pub comparison: Comparison,
    /// The difference as a fraction of control's value (none when it is 0).
    pub relative: Option<f64>,
    /// The always-valid p-value: the smallest mixture-SPRT p over every
    /// look so far, this one included.
    pub sequential_p: f64,
}

/// One metric's results.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOutcome {
    pub metric: String,
    pub kind: MetricKind,
    pub variants: Vec<VariantOutcome>,
}

/// The smallest sequential p-value seen, by (metric, variant).
pub type Looks = HashMap<(String, String), f64>;

/// The mixture's spread: effects of about a tenth of a unit's standard
/// deviation (a scale-free prior; what the p-value is most sensitive to).
fn mixture_tau2(unit_variance: f64) -> f64 {
    0.01 * unit_variance
}

/// A variant's data for one metric: a rate, or a mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    Rate(RateSample),
    Mean(MeanSample),
}

impl Sample {
    fn units(&self) -> u64 {
        match self {
            Sample::Rate(rate) => rate.n,
            Sample::Mean(mean) => mean.n,
        }
    }

    fn value(&self) -> f64 {
        match self {
            Sample::Rate(rate) => rate.rate(),
            Sample::Mean(mean) => mean.mean,
        }
    }
}

impl Sums {
    /// As a rate (`total` units converted) or a mean per unit.
    pub fn sample(&self, rate: bool) -> Sample {
        if rate {
            Sample::Rate(RateSample {
                n: self.units,
                successes: self.total.round().max(0.0) as u64,
            })
        } else {
            Sample::Mean(MeanSample::from_sums(self.units, self.total, self.squares))
        }
    }
}

/// One metric's results from each variant's sums over units (in the
/// spec's order), updating `looks` with this look's sequential p-values.
pub fn metric_outcome(
    spec: &ExperimentSpec,
    metric: usize,
    sums: &[Sums],
    looks: &mut Looks,
) -> MetricOutcome {
    let rate = spec.metrics[metric].is_rate();
    let samples: Vec<Sample> = sums.iter().map(|s| s.sample(rate)).collect();
    metric_outcome_of(spec, metric, &samples, looks)
}

/// One metric's results from each variant's sample (in the spec's order),
/// updating `looks` (kept under the metric's storage key).
pub fn metric_outcome_of(
    spec: &ExperimentSpec,
    metric: usize,
    samples: &[Sample],
    looks: &mut Looks,
) -> MetricOutcome {
    let definition = &spec.metrics[metric];
    let control = spec.control;
    let variants = spec
        .variants
        .iter()
        .zip(samples)
        .enumerate()
        .map(|(index, (variant, s))| {
            let (interval, comparison, unit_variance) = match (s, &samples[control]) {
                (Sample::Rate(sample), Sample::Rate(base)) => {
                    let pooled = if sample.n + base.n == 0 {
                        0.0
                    } else {
                        (sample.successes + base.successes) as f64 / (sample.n + base.n) as f64
                    };
                    (
                        rate_interval(sample),
                        (index != control)
                            .then(|| two_proportion(base, sample))
                            .flatten(),
                        pooled * (1.0 - pooled),
                    )
                }
                (Sample::Mean(sample), Sample::Mean(base)) => {
                    let n = (sample.n + base.n).max(1) as f64;
                    (
                        mean_interval(sample),
                        (index != control).then(|| welch(base, sample)).flatten(),
                        (sample.variance * sample.n as f64 + base.variance * base.n as f64) / n,
                    )
                }
                // Never mixed: one metric reads one way.
                _ => (None, None, 0.0),
            };
            let value = s.value();
            let versus_control = comparison.map(|comparison| {
                let p = sequential_p(
                    comparison.difference,
                    comparison.variance,
                    mixture_tau2(unit_variance),
                );
                let key = (definition.storage_key(), variant.id.clone());
                let kept = looks.entry(key).or_insert(1.0);
                *kept = kept.min(p);
                let control_value = samples[control].value();
                Versus {
                    relative: (control_value != 0.0)
                        .then(|| comparison.difference / control_value.abs()),
                    sequential_p: *kept,
                    comparison,
                }
            });
            VariantOutcome {
                variant: variant.id.clone(),
                units: s.units(),
                value,
                interval,
                versus_control,
            }
        })
        .collect();
    MetricOutcome {
        metric: definition.name.clone(),
        kind: definition.kind,
        variants,
    }
}

/// The sample-ratio check of the units each variant got against the
/// weights (variants with no weight left out).
pub fn split_check(spec: &ExperimentSpec, assigned: &[u64]) -> Option<SampleRatio> {
    let (observed, weights): (Vec<u64>, Vec<f64>) = assigned
        .iter()
        .zip(&spec.variants)
        .filter(|(_, v)| v.weight > 0.0)
        .map(|(n, v)| (*n, v.weight))
        .unzip();
    sample_ratio(&observed, &weights)
}

/// A guardrail a variant broke.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub metric: String,
    pub variant: String,
    pub relative: f64,
    pub sequential_p: f64,
}

impl Breach {
    pub fn describe(&self) -> String {
        format!(
            "guardrail on {}: variant {} moved it {:+.1} % against control (always-valid p = {:.4})",
            self.metric,
            self.variant,
            self.relative * 100.0,
            self.sequential_p
        )
    }
}

/// The first guardrail broken: a variant with enough units in it and in
/// control that moves the metric the harmful way by more than allowed,
/// with an always-valid p-value under the guardrail's alpha.
pub fn guardrail_breach(
    guardrails: &[Guardrail],
    outcomes: &[MetricOutcome],
    control_units: impl Fn(&str) -> u64,
) -> Option<Breach> {
    for guardrail in guardrails {
        let Some(outcome) = outcomes.iter().find(|o| o.metric == guardrail.metric) else {
            continue;
        };
        if control_units(&outcome.metric) < guardrail.min_units {
            continue;
        }
        for variant in &outcome.variants {
            let Some(versus) = &variant.versus_control else {
                continue;
            };
            let Some(relative) = versus.relative else {
                continue;
            };
            let harmful = match guardrail.harm {
                Harm::Increase => relative > guardrail.max_change,
                Harm::Decrease => -relative > guardrail.max_change,
            };
            if variant.units >= guardrail.min_units
                && harmful
                && versus.sequential_p < guardrail.alpha
            {
                return Some(Breach {
                    metric: outcome.metric.clone(),
                    variant: variant.variant.clone(),
                    relative,
                    sequential_p: versus.sequential_p,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ExperimentSpec {
        ExperimentSpec::parse(&json!({
            "name": "sword-tuning",
            "config": "balance",
            "variants": [
                {"id": "control", "weight": 50, "patch": {}},
                {"id": "strong", "weight": 50, "patch": {"damage": 12}}
            ],
            "metrics": [
                {"name": "win", "kind": "binomial", "event": "run_end", "field": "won"},
                {"name": "runs", "kind": "count", "event": "run_end"}
            ],
            "guardrails": [{"metric": "runs", "maxDecrease": 0.1, "minUnits": 100}]
        }))
        .unwrap()
    }

    #[test]
    fn rates_and_means_compare_with_control_as_scipy_does() {
        let spec = spec();
        let mut looks = Looks::new();
        // 450/1000 against 500/1000: the pooled two-proportion z (scipy:
        // z = 2.2388683, 2 * norm.sf(z) = 0.0251644857).
        let win = metric_outcome(
            &spec,
            0,
            &[
                Sums {
                    units: 1000,
                    total: 450.0,
                    squares: 450.0,
                },
                Sums {
                    units: 1000,
                    total: 500.0,
                    squares: 500.0,
                },
            ],
            &mut looks,
        );
        assert_eq!(win.variants[0].versus_control, None);
        let versus = win.variants[1].versus_control.as_ref().unwrap();
        assert!(
            (versus.comparison.p_value - 0.025164486).abs() < 1e-8,
            "{versus:?}"
        );
        assert!((versus.relative.unwrap() - 0.05 / 0.45).abs() < 1e-12);
        let interval = win.variants[1].interval.unwrap();
        assert!(interval.low < 0.5 && 0.5 < interval.high);
        // The sequential p-value is at least the fixed-horizon one, and
        // the smallest over looks is kept.
        assert!(versus.sequential_p >= versus.comparison.p_value);
        let first = versus.sequential_p;
        let later = metric_outcome(
            &spec,
            0,
            &[
                Sums {
                    units: 1000,
                    total: 500.0,
                    squares: 500.0,
                },
                Sums {
                    units: 1000,
                    total: 500.0,
                    squares: 500.0,
                },
            ],
            &mut looks,
        );
        assert_eq!(
            later.variants[1]
                .versus_control
                .as_ref()
                .unwrap()
                .sequential_p,
            first
        );
        // Means: Welch on sums. Values 1..=4 against 2..=5 (scipy
        // ttest_ind(equal_var=False): t = -1.0954451, p = 0.31530)
        let sums = |values: &[f64]| Sums {
            units: values.len() as u64,
            total: values.iter().sum(),
            squares: values.iter().map(|v| v * v).sum(),
        };
        let runs = metric_outcome(
            &spec,
            1,
            &[sums(&[2.0, 3.0, 4.0, 5.0]), sums(&[1.0, 2.0, 3.0, 4.0])],
            &mut looks,
        );
        let versus = runs.variants[1].versus_control.as_ref().unwrap();
        assert!((versus.comparison.statistic + 1.0954451150103321).abs() < 1e-9);
        assert!(
            (versus.comparison.p_value - 0.3153336).abs() < 1e-6,
            "{versus:?}"
        );
    }

    #[test]
    fn a_split_off_its_weights_is_flagged() {
        let spec = spec();
        assert!(!split_check(&spec, &[5_020, 4_980]).unwrap().mismatch);
        assert!(split_check(&spec, &[5_300, 4_700]).unwrap().mismatch);
    }

    #[test]
    fn a_guardrail_pauses_only_on_a_large_enough_harm_with_enough_units() {
        let spec = spec();
        let mut looks = Looks::new();
        let counts = |control: (u64, f64), variant: (u64, f64)| {
            // Counts per unit with variance 1 around the mean.
            let sums = |(n, mean): (u64, f64)| Sums {
                units: n,
                total: mean * n as f64,
                squares: (1.0 + mean * mean) * (n as f64 - 1.0) + mean * mean,
            };
            [sums(control), sums(variant)]
        };
        let read = |looks: &mut Looks, c, v| {
            let outcome = metric_outcome(&spec, 1, &counts(c, v), looks);
            guardrail_breach(&spec.guardrails, &[outcome], |_| c.0)
        };
        // 40 % fewer runs, but too few units.
        assert_eq!(read(&mut looks, (50, 5.0), (50, 3.0)), None);
        // 2 % fewer runs with many units: significant, within the allowance.
        assert_eq!(
            read(&mut Looks::new(), (100_000, 5.0), (100_000, 4.9)),
            None
        );
        // 40 % fewer with enough units: paused.
        let breach = read(&mut Looks::new(), (500, 5.0), (500, 3.0)).expect("a breach");
        assert_eq!(breach.variant, "strong");
        assert!(breach.relative < -0.3);
        // More runs never breaches a maxDecrease guardrail.
        assert_eq!(read(&mut Looks::new(), (500, 3.0), (500, 5.0)), None);
    }
}
