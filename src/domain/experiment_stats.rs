//! The statistics of player experiments (issue 17): per variant a mean or
//! a rate with its 95 % interval, the difference to control with its
//! p-value (Welch's t for means, the two-proportion z for rates), the
//! sample-ratio-mismatch check (Pearson's chi-square against the weights,
//! flagged below p = 0.001), and always-valid p-values (the mixture
//! sequential probability ratio test) so a result read early and often is
//! still honest. Pure functions over counts; pinned to scipy on fixed
//! inputs in the tests.
//!
//! The special functions behind them (log-gamma, the regularized
//! incomplete beta and gamma functions) are the textbook series and
//! continued fractions, accurate to about 1e-12 relative where the
//! p-values of an experiment live.

use super::stats::normal_sf;

/// An SRM p-value below this is a mismatch: the split is not the weights'.
pub const SRM_ALPHA: f64 = 0.001;

/// A variant's metric as a mean: units, mean, and the sample variance
/// (divided by `n - 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanSample {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
}

impl MeanSample {
    /// From running sums: `n` values, their sum and the sum of squares.
    pub fn from_sums(n: u64, sum: f64, sum_of_squares: f64) -> Self {
        let count = n as f64;
        let mean = if n == 0 { 0.0 } else { sum / count };
        let variance = if n < 2 {
            0.0
        } else {
            ((sum_of_squares - sum * mean) / (count - 1.0)).max(0.0)
        };
        MeanSample { n, mean, variance }
    }
}

/// A variant's metric as a rate: units and those that converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSample {
    pub n: u64,
    pub successes: u64,
}

impl RateSample {
    pub fn rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.successes as f64 / self.n as f64
        }
    }
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// A variant against control: the difference (variant − control), its
/// 95 % interval, the test statistic and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub difference: f64,
    pub interval: Interval,
    pub statistic: f64,
    pub p_value: f64,
    /// The variance of `difference` (for the sequential test).
    pub variance: f64,
}

/// The sample-ratio-mismatch check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    pub chi_square: f64,
    pub degrees_of_freedom: u32,
    pub p_value: f64,
    /// `p_value < SRM_ALPHA`: the assignment or the counting is broken.
    pub mismatch: bool,
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

const EPSILON: f64 = 1e-15;
const TINY: f64 = 1e-300;
const MAX_ITERATIONS: usize = 10_000;

/// One step of the modified Lentz method: the next `d` and `c` for the
/// fraction's term `aa` (and the shared `b` part), and the factor `h` takes.
fn lentz(d: &mut f64, c: &mut f64, aa: f64, b: f64) -> f64 {
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    *d = 1.0 / guard(b + aa * *d);
    *c = guard(b + aa / *c);
    *d * *c
}

/// The continued fraction of the incomplete beta function (modified
/// Lentz), for x < (a + 1) / (a + b + 2).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITERATIONS {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= lentz(
            &mut d,
            &mut c,
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            1.0,
        );
        let step = lentz(
            &mut d,
            &mut c,
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            1.0,
        );
        h *= step;
        if (step - 1.0).abs() < EPSILON {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The regularized upper incomplete gamma function Q(s, x).
pub fn upper_gamma(s: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_front = s * x.ln() - x - ln_gamma(s);
    if x < s + 1.0 {
        // The series of P(s, x), then Q = 1 − P.
        let (mut term, mut sum, mut n) = (1.0 / s, 1.0 / s, s);
        for _ in 0..MAX_ITERATIONS {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * EPSILON {
                break;
            }
        }
        (1.0 - sum * ln_front.exp()).max(0.0)
    } else {
        // The continued fraction of Q (modified Lentz).
        let mut b = x + 1.0 - s;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=MAX_ITERATIONS {
            let an = -(i as f64) * (i as f64 - s);
            b += 2.0;
            let step = lentz(&mut d, &mut c, an, b);
            h *= step;
            if (step - 1.0).abs() < EPSILON {
                break;
            }
        }
        ln_front.exp() * h
    }
}

/// P(|T| > |t|) for Student's t with `df` degrees of freedom.
pub fn t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// P(X > x) for a chi-square X with `df` degrees of freedom.
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    upper_gamma(df / 2.0, x / 2.0).clamp(0.0, 1.0)
}

/// The `t` with P(|T| > t) = `alpha` (bisection: 200 halvings of a
/// bracket that doubles until it holds the answer).
pub fn t_critical(alpha: f64, df: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    while t_two_sided(high, df) > alpha && high < 1e12 {
        low = high;
        high *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if t_two_sided(mid, df) > alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The `z` with P(|Z| > z) = `alpha`.
pub fn z_critical(alpha: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if 2.0 * normal_sf(mid) > alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The 95 % interval of a mean (Student's t with n − 1 degrees of
/// freedom); none below two units.
pub fn mean_interval(sample: &MeanSample) -> Option<Interval> {
    if sample.n < 2 {
        return None;
    }
    let half = t_critical(0.05, sample.n as f64 - 1.0) * (sample.variance / sample.n as f64).sqrt();
    Some(Interval {
        low: sample.mean - half,
        high: sample.mean + half,
    })
}

/// The 95 % Wilson score interval of a rate; none without units.
pub fn rate_interval(sample: &RateSample) -> Option<Interval> {
    if sample.n == 0 {
        return None;
    }
    let (n, p, z) = (sample.n as f64, sample.rate(), z_critical(0.05));
    let scale = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / scale;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / scale;
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// Welch's t-test of the variant's mean against control's, with the
/// Welch–Satterthwaite degrees of freedom; none below two units in either
/// or with no variance at all.
pub fn welch(control: &MeanSample, variant: &MeanSample) -> Option<Comparison> {
    if control.n < 2 || variant.n < 2 {
        return None;
    }
    let (a, b) = (
        control.variance / control.n as f64,
        variant.variance / variant.n as f64,
    );
    let variance = a + b;
    if variance <= 0.0 || !variance.is_finite() {
        return None;
    }
    let df =
        variance * variance / (a * a / (control.n as f64 - 1.0) + b * b / (variant.n as f64 - 1.0));
    let difference = variant.mean - control.mean;
    let se = variance.sqrt();
    let statistic = difference / se;
    let half = t_critical(0.05, df) * se;
    Some(Comparison {
        difference,
        interval: Interval {
            low: difference - half,
            high: difference + half,
        },
        statistic,
        p_value: t_two_sided(statistic, df),
        variance,
    })
}

/// The two-proportion z-test of the variant's rate against control's
/// (pooled under the null for the p-value; the interval of the
/// difference unpooled); none without units or when every unit (or none)
/// converted in both.
pub fn two_proportion(control: &RateSample, variant: &RateSample) -> Option<Comparison> {
    if control.n == 0 || variant.n == 0 {
        return None;
    }
    let (n1, n2) = (control.n as f64, variant.n as f64);
    let (p1, p2) = (control.rate(), variant.rate());
    let pooled = (control.successes + variant.successes) as f64 / (n1 + n2);
    let null_se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if null_se <= 0.0 {
        return None;
    }
    let difference = p2 - p1;
    let statistic = difference / null_se;
    let variance = p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2;
    let half = z_critical(0.05) * variance.sqrt();
    Some(Comparison {
        difference,
        interval: Interval {
            low: difference - half,
            high: difference + half,
        },
        statistic,
        p_value: (2.0 * normal_sf(statistic.abs())).min(1.0),
        variance,
    })
}

/// Pearson's chi-square of the units each variant got against its
/// weight's share; none with fewer than two variants, no units, or a
/// weight that is not positive.
pub fn sample_ratio(observed: &[u64], weights: &[f64]) -> Option<SampleRatio> {
    if observed.len() < 2 || observed.len() != weights.len() {
        return None;
    }
    let total: u64 = observed.iter().sum();
    let weight: f64 = weights.iter().sum();
    if total == 0 || weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return None;
    }
    let chi_square: f64 = observed
        .iter()
        .zip(weights)
        .map(|(o, w)| {
            let expected = total as f64 * w / weight;
            (*o as f64 - expected).powi(2) / expected
        })
        .sum();
    let degrees_of_freedom = (observed.len() - 1) as u32;
    let p_value = chi_square_sf(chi_square, f64::from(degrees_of_freedom));
    Some(SampleRatio {
        chi_square,
        degrees_of_freedom,
        p_value,
        mismatch: p_value < SRM_ALPHA,
    })
}

/// The mixture SPRT's p-value at one look (Johari, Koomen, Pekelis and
/// Walsh, "Always valid inference", 2017): the difference's likelihood
/// ratio against zero, mixed over effects drawn from N(0, `tau2`), with
/// `variance` the variance of the difference at this look; the p-value is
/// 1 / Λ, capped at one. The smallest value over every look so far is the
/// always-valid p-value: reading it at any time, as often as one likes,
/// rejects a true null at most `alpha` of the time.
pub fn sequential_p(difference: f64, variance: f64, tau2: f64) -> f64 {
    if !(variance > 0.0 && tau2 > 0.0 && difference.is_finite()) {
        return 1.0;
    }
    let ln_lambda = 0.5 * (variance / (variance + tau2)).ln()
        + tau2 * difference * difference / (2.0 * variance * (variance + tau2));
    (-ln_lambda).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= relative * expected.abs().max(1e-300)
    }

    macro_rules! assert_close {
        ($actual:expr, $expected:expr, $relative:expr) => {{
            let (a, e) = ($actual, $expected);
            assert!(
                close(a, e, $relative),
                "{} = {a}, scipy says {e}",
                stringify!($actual)
            );
        }};
    }

    #[test]
    fn special_functions_match_scipy() {
        // scipy.special.gammaln
        assert_close!(ln_gamma(0.5), 0.572_364_942_924_700_1, 1e-13);
        assert_close!(ln_gamma(10.0), 12.801_827_480_081_469, 1e-13);
        // scipy.stats.t.sf(t, df) * 2
        assert_close!(t_two_sided(2.0, 3.0), 0.139_325_968_558_843_05, 1e-10);
        assert_close!(t_two_sided(0.5, 1.5), 0.680_567_110_669_94, 1e-10);
        assert_close!(t_two_sided(10.0, 30.0), 4.575_251_408_229_618e-11, 1e-8);
        // scipy.stats.t.ppf(0.975, df), (0.995, 2.5)
        assert_close!(t_critical(0.05, 5.0), 2.570_581_835_636_314_6, 1e-10);
        assert_close!(t_critical(0.05, 49.0), 2.009_575_237_129_239_2, 1e-10);
        assert_close!(t_critical(0.01, 2.5), 7.163_728_138_948_783, 1e-9);
        // scipy.stats.chi2.sf
        assert_close!(chi_square_sf(3.84, 1.0), 0.050_043_521_248_705_19, 1e-10);
        assert_close!(chi_square_sf(10.0, 3.0), 0.018_566_135_463_043_25, 1e-10);
        assert_close!(chi_square_sf(0.5, 4.0), 0.973_500_978_839_256_1, 1e-10);
        assert_close!(chi_square_sf(30.0, 10.0), 0.000_856_641_210_775_301, 1e-9);
        // scipy.stats.norm.ppf(0.975) (erfc is good to ~1e-7 here)
        assert_close!(z_critical(0.05), 1.959_963_984_540_054, 1e-7);
    }

    #[test]
    fn welch_matches_scipy() {
        // scipy.stats.ttest_ind_from_stats(..., equal_var=False)
        let cases = [
            (
                (10.0, 4.0, 50),
                (11.0, 9.0, 40),
                -1.810_714_920_850_370_6,
                0.074_798_738_600_268_35,
            ),
            (
                (1520.0, 610.0_f64.powi(2), 1200),
                (1490.0, 640.0_f64.powi(2), 1185),
                1.171_537_775_783_370_3,
                0.241_500_233_118_074_06,
            ),
            (
                (3.2, 1.1_f64.powi(2), 8),
                (4.5, 2.3_f64.powi(2), 6),
                -1.279_118_292_533_126_1,
                0.243_240_966_405_095_18,
            ),
        ];
        for ((m1, v1, n1), (m2, v2, n2), t, p) in cases {
            // scipy's statistic is first − second: control − variant.
            let control = MeanSample {
                n: n1,
                mean: m1,
                variance: v1,
            };
            let variant = MeanSample {
                n: n2,
                mean: m2,
                variance: v2,
            };
            let result = welch(&control, &variant).unwrap();
            assert_close!(-result.statistic, t, 1e-12);
            assert_close!(result.p_value, p, 1e-9);
        }
        // The interval of the difference: t.ppf(0.975, Welch df) * se.
        let result = welch(
            &MeanSample {
                n: 50,
                mean: 10.0,
                variance: 4.0,
            },
            &MeanSample {
                n: 40,
                mean: 11.0,
                variance: 9.0,
            },
        )
        .unwrap();
        assert_close!(result.interval.low, -0.102_919_451_843_624_5, 1e-9);
        assert_close!(result.interval.high, 2.102_919_451_843_624_7, 1e-9);
        assert!(
            welch(
                &MeanSample {
                    n: 1,
                    mean: 1.0,
                    variance: 0.0
                },
                &control_of(10)
            )
            .is_none()
        );
    }

    fn control_of(n: u64) -> MeanSample {
        MeanSample {
            n,
            mean: 1.0,
            variance: 1.0,
        }
    }

    #[test]
    fn two_proportions_match_scipy() {
        // z by hand, p = 2 * scipy.stats.norm.sf(|z|)
        let cases = [
            (
                (120, 1000),
                (150, 1000),
                1.963_049_807_622_355,
                0.049_640_386_865_368_78,
            ),
            (
                (30, 400),
                (28, 410),
                -0.370_160_738_970_319_37,
                0.711_262_727_894_308,
            ),
            (
                (5000, 100_000),
                (5200, 100_000),
                2.032_810_070_666_857_7,
                0.042_071_715_304_714_52,
            ),
        ];
        for ((x1, n1), (x2, n2), z, p) in cases {
            let result = two_proportion(
                &RateSample {
                    n: n1,
                    successes: x1,
                },
                &RateSample {
                    n: n2,
                    successes: x2,
                },
            )
            .unwrap();
            assert_close!(result.statistic, z, 1e-12);
            assert_close!(result.p_value, p, 1e-6);
        }
        assert!(
            two_proportion(
                &RateSample {
                    n: 10,
                    successes: 0
                },
                &RateSample {
                    n: 10,
                    successes: 0
                }
            )
            .is_none()
        );
    }

    #[test]
    fn intervals_match_scipy() {
        // mean ± t.ppf(0.975, n - 1) * s / sqrt(n)
        let mean = mean_interval(&MeanSample {
            n: 50,
            mean: 10.0,
            variance: 4.0,
        })
        .unwrap();
        assert_close!(mean.low, 9.431_606_289_008_54, 1e-10);
        assert_close!(mean.high, 10.568_393_710_991_46, 1e-10);
        // Wilson with z = norm.ppf(0.975)
        for (x, n, low, high) in [
            (
                120,
                1000,
                0.101_299_260_601_309_13,
                0.141_609_075_847_712_76,
            ),
            (3, 40, 0.025_836_025_774_588_198, 0.198_642_335_243_105_43),
        ] {
            let interval = rate_interval(&RateSample { n, successes: x }).unwrap();
            assert_close!(interval.low, low, 1e-6);
            assert_close!(interval.high, high, 1e-6);
        }
        let none = rate_interval(&RateSample {
            n: 25,
            successes: 0,
        })
        .unwrap();
        assert_eq!(none.low, 0.0);
        assert_close!(none.high, 0.133_192_250_939_048_46, 1e-6);
        assert!(
            mean_interval(&MeanSample {
                n: 1,
                mean: 3.0,
                variance: 0.0
            })
            .is_none()
        );
        assert!(rate_interval(&RateSample { n: 0, successes: 0 }).is_none());
    }

    #[test]
    fn sample_ratio_mismatch_matches_scipy_and_flags_below_a_thousandth() {
        // scipy.stats.chisquare(observed, expected)
        let fair = sample_ratio(&[5100, 4900], &[50.0, 50.0]).unwrap();
        assert_close!(fair.chi_square, 4.0, 1e-12);
        assert_close!(fair.p_value, 0.045_500_263_896_358_57, 1e-10);
        assert!(!fair.mismatch, "p = 0.046 is not a mismatch");
        let skewed = sample_ratio(&[50_600, 49_400], &[1.0, 1.0]).unwrap();
        assert_close!(skewed.p_value, 0.000_147_802_310_334_453_98, 1e-9);
        assert!(skewed.mismatch);
        let three = sample_ratio(&[3400, 3300, 3050], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(three.degrees_of_freedom, 2);
        assert_close!(three.p_value, 4.539_992_976_248_486e-5, 1e-9);
        let weighted = sample_ratio(&[820, 180], &[80.0, 20.0]).unwrap();
        assert_close!(weighted.p_value, 0.113_846_298_006_657_63, 1e-9);
        assert!(sample_ratio(&[10], &[1.0]).is_none());
        assert!(sample_ratio(&[10, 10], &[1.0, 0.0]).is_none());
        assert!(sample_ratio(&[0, 0], &[1.0, 1.0]).is_none());
    }

    /// xorshift64* and Box–Muller: simulated experiments that a seed repeats.
    struct Normals(u64);

    impl Normals {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn next(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    #[test]
    fn the_sequential_p_value_stays_honest_when_read_at_every_look() {
        // 400 A/A experiments, each read after every 50 units per arm, 40
        // looks. Stopping at the first look with p < 0.05 finds a
        // difference where there is none far more often than 5 % with
        // Welch's test; with the running minimum of the sequential
        // p-value, at most 5 % (plus the simulation's noise).
        let mut normals = Normals(0x9e37_79b9_7f4a_7c15);
        let (experiments, looks, per_look) = (400, 40, 50);
        let (mut peeking_welch, mut peeking_sequential) = (0, 0);
        for _ in 0..experiments {
            let mut sums = [(0u64, 0.0, 0.0); 2];
            let mut best = 1.0_f64;
            let mut welch_hit = false;
            for _ in 0..looks {
                for arm in &mut sums {
                    for _ in 0..per_look {
                        let x = 10.0 + 2.0 * normals.next();
                        arm.0 += 1;
                        arm.1 += x;
                        arm.2 += x * x;
                    }
                }
                let control = MeanSample::from_sums(sums[0].0, sums[0].1, sums[0].2);
                let variant = MeanSample::from_sums(sums[1].0, sums[1].1, sums[1].2);
                let result = welch(&control, &variant).unwrap();
                welch_hit |= result.p_value < 0.05;
                // τ²: effects of the size of a tenth of the standard deviation.
                best = best.min(sequential_p(result.difference, result.variance, 0.04));
            }
            peeking_welch += usize::from(welch_hit);
            peeking_sequential += usize::from(best < 0.05);
        }
        let (welch_rate, sequential_rate) = (
            peeking_welch as f64 / experiments as f64,
            peeking_sequential as f64 / experiments as f64,
        );
        assert!(welch_rate > 0.12, "peeking at Welch's test: {welch_rate}");
        assert!(
            sequential_rate <= 0.075,
            "the sequential p-value: {sequential_rate}"
        );
    }

    #[test]
    fn the_sequential_p_value_finds_a_real_effect() {
        // 1,000 units per arm, a difference of half a standard deviation.
        let variance = 4.0 / 1000.0 + 4.0 / 1000.0;
        assert!(sequential_p(1.0, variance, 0.04) < 1e-6);
        assert_eq!(sequential_p(0.0, variance, 0.04), 1.0);
        assert_eq!(sequential_p(1.0, 0.0, 0.04), 1.0);
        // By hand: Λ = sqrt(V / (V + τ²)) · exp(τ² d² / (2 V (V + τ²))).
        let (v, tau2, d): (f64, f64, f64) = (0.01, 0.04, 0.3);
        let lambda = (v / (v + tau2)).sqrt() * (tau2 * d * d / (2.0 * v * (v + tau2))).exp();
        assert_close!(sequential_p(d, v, tau2), 1.0 / lambda, 1e-12);
        let means = MeanSample::from_sums(4, 10.0, 30.0);
        assert_eq!(means.mean, 2.5);
        assert_close!(means.variance, 5.0 / 3.0, 1e-12);
    }
}
