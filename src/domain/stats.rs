//! Statistics over player metrics, computed from histogram buckets:
//! sparse histograms (sorted `(value, count)` pairs), means and quantiles,
//! the Mann-Whitney U rank test in O(buckets) with tie correction, in
//! the spirit of Netflix Kayenta's classifier, and the conditional test of
//! two Poisson rates (exact up to 2,000 events). No sample is ever expanded.

/// A histogram as sorted, de-duplicated `(value, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseHistogram {
    buckets: Vec<(u64, u64)>,
    total: u64,
}

impl SparseHistogram {
    /// From pairs in any order; equal values are merged, zero counts dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut buckets: Vec<(u64, u64)> = pairs.into_iter().filter(|(_, c)| *c > 0).collect();
        buckets.sort_unstable_by_key(|(v, _)| *v);
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(buckets.len());
        for (value, count) in buckets {
            match merged.last_mut() {
                Some((last, total)) if *last == value => *total = total.saturating_add(count),
                _ => merged.push((value, count)),
            }
        }
        let total = merged
            .iter()
            .fold(0_u64, |sum, (_, c)| sum.saturating_add(*c));
        Self {
            buckets: merged,
            total,
        }
    }

    /// Adds another histogram into this one (a merge of two sorted lists).
    pub fn add(&mut self, other: &SparseHistogram) {
        if other.total == 0 {
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(va, ca)), Some(&&(vb, cb))) => {
                    if va == vb {
                        merged.push((va, ca.saturating_add(cb)));
                        a.next();
                        b.next();
                    } else if va < vb {
                        merged.push((va, ca));
                        a.next();
                    } else {
                        merged.push((vb, cb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&y)) => {
                    merged.push(y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.total = self.total.saturating_add(other.total);
        self.buckets = merged;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn buckets(&self) -> &[(u64, u64)] {
        &self.buckets
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| {
            self.buckets
                .iter()
                .map(|(v, c)| *v as f64 * *c as f64)
                .sum::<f64>()
                / self.total as f64
        })
    }

    /// The smallest value with at least `q` of the samples at or below it.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen: u64 = 0;
        for (value, count) in &self.buckets {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                return Some(*value);
            }
        }
        self.buckets.last().map(|(v, _)| *v)
    }
}

/// The result of a Mann-Whitney U test of `canary` against `baseline`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the canary sample (scipy's `statistic` for `mannwhitneyu(canary, baseline)`).
    pub u_canary: f64,
    pub z: f64,
    pub p_two_sided: f64,
    /// Evidence that canary values tend to be larger (e.g. higher latency).
    pub p_canary_greater: f64,
    /// Evidence that canary values tend to be smaller (e.g. shorter sessions).
    pub p_canary_less: f64,
    /// P(canary > baseline) + ½ P(equal): 0.5 means no difference.
    pub probability_canary_greater: f64,
}

/// The Mann-Whitney U test from bucket counts, with the normal
/// approximation, tie correction and continuity correction (as scipy's
/// `mannwhitneyu(method="asymptotic", use_continuity=True)`). `None` when a
/// sample is empty or every value is tied.
pub fn mann_whitney(baseline: &SparseHistogram, canary: &SparseHistogram) -> Option<MannWhitney> {
    let (n_base, n_canary) = (baseline.count() as f64, canary.count() as f64);
    if n_base == 0.0 || n_canary == 0.0 {
        return None;
    }
    let n = n_base + n_canary;
    let (mut rank_below, mut canary_rank_sum, mut tie_term) = (0.0f64, 0.0f64, 0.0f64);
    let (mut a, mut b) = (
        baseline.buckets().iter().peekable(),
        canary.buckets().iter().peekable(),
    );
    loop {
        let (base_count, canary_count) = match (a.peek(), b.peek()) {
            (Some(&&(va, ca)), Some(&&(vb, cb))) if va == vb => {
                a.next();
                b.next();
                (ca, cb)
            }
            (Some(&&(va, ca)), Some(&&(vb, _))) if va < vb => {
                a.next();
                (ca, 0)
            }
            (_, Some(&&(_, cb))) => {
                b.next();
                (0, cb)
            }
            (Some(&&(_, ca)), None) => {
                a.next();
                (ca, 0)
            }
            (None, None) => break,
        };
        let tied = (base_count + canary_count) as f64;
        let average_rank = rank_below + (tied + 1.0) / 2.0;
        canary_rank_sum += canary_count as f64 * average_rank;
        tie_term += tied * tied * tied - tied;
        rank_below += tied;
    }
    let u_canary = canary_rank_sum - n_canary * (n_canary + 1.0) / 2.0;
    let u_base = n_base * n_canary - u_canary;
    let mean = n_base * n_canary / 2.0;
    let variance = n_base * n_canary / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    let sigma = variance.sqrt();
    let tail = |u: f64| normal_sf((u - mean - 0.5) / sigma);
    Some(MannWhitney {
        u_canary,
        z: (u_canary - mean) / sigma,
        p_two_sided: (2.0 * tail(u_canary.max(u_base))).min(1.0),
        p_canary_greater: tail(u_canary),
        p_canary_less: tail(u_base),
        probability_canary_greater: u_canary / (n_base * n_canary),
    })
}

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Chebyshev fit, relative error below
/// 1.2e-7 everywhere, far tails included).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let result = t * poly.exp();
    if x >= 0.0 { result } else { 2.0 - result }
}

/// Evidence a difference is real: one-sided p-value against "the canary's
/// rate is at most `ratio` × the baseline's" (at least, when lower is
/// worse). `ratio` 1 asks whether there is any difference; a rule asks
/// whether the canary is worse by more than its threshold, so a small real
/// or random difference in a huge sample is not read as a breach.
///
/// The conditional test for two Poisson rates: given all `k` events, the
/// canary's share is binomial with `q = n_c·r / (n_b + n_c·r)`. Exact up to
/// 2,000 events (the normal approximation invents significance for a
/// single rare event), a normal approximation with continuity correction
/// beyond. Proportions of rare events (churn, errors) are treated as rates,
/// which is conservative.
pub fn rate_p_value(
    base_events: f64,
    base_n: f64,
    canary_events: f64,
    canary_n: f64,
    ratio: f64,
    canary_higher_is_worse: bool,
) -> Option<f64> {
    if base_n <= 0.0 || canary_n <= 0.0 || ratio <= 0.0 {
        return None;
    }
    let total = base_events + canary_events;
    if total <= 0.0 {
        return Some(1.0);
    }
    let q = canary_n * ratio / (base_n + canary_n * ratio);
    if total <= EXACT_EVENTS {
        let (k, x) = (total as u64, canary_events as u64);
        return Some(if canary_higher_is_worse {
            binomial_tail_at_least(k, x, q)
        } else {
            1.0 - binomial_tail_at_least(k, x + 1, q)
        });
    }
    let sd = (total * q * (1.0 - q)).sqrt();
    if sd <= 0.0 {
        return Some(1.0);
    }
    let z = if canary_higher_is_worse {
        (canary_events - 0.5 - total * q) / sd
    } else {
        (total * q - canary_events - 0.5) / sd
    };
    Some(normal_sf(z))
}

/// Up to this many events in both cohorts together, rates are compared exactly.
const EXACT_EVENTS: f64 = 2000.0;

/// P(X ≥ x) for X ~ Binomial(k, q), summed in log space.
pub fn binomial_tail_at_least(k: u64, x: u64, q: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if x > k {
        return 0.0;
    }
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (ln_q, ln_r) = (q.ln(), (1.0 - q).ln());
    // ln C(k, i) built up from i = 0.
    let mut ln_choose = 0.0;
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((k - i + 1) as f64).ln() - (i as f64).ln();
        }
        if i >= x {
            tail += (ln_choose + i as f64 * ln_q + (k - i) as f64 * ln_r).exp();
        }
    }
    tail.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(u64, u64)]) -> SparseHistogram {
        SparseHistogram::from_pairs(pairs.iter().copied())
    }

    /// Close in relative terms (tiny p-values included).
    fn close(actual: f64, expected: f64) -> bool {
        if expected == 0.0 {
            actual.abs() < 1e-300
        } else {
            ((actual - expected) / expected).abs() < 1e-5
        }
    }

    /// Reference values from scipy 1.17.1:
    /// `mannwhitneyu(canary, baseline, alternative=..., method="asymptotic", use_continuity=True)`
    /// on the expanded samples.
    #[test]
    fn the_rank_test_matches_scipy() {
        type Case = (
            &'static str,
            &'static [(u64, u64)],
            &'static [(u64, u64)],
            f64,
            f64,
            f64,
            f64,
        );
        let cases: &[Case] = &[
            (
                "shifted_latency",
                &[(20, 50), (30, 30), (40, 15), (80, 5)],
                &[(20, 30), (30, 35), (40, 25), (80, 10)],
                6187.5,
                0.002150079328714208,
                0.001075039664357104,
                0.9989342256335239,
            ),
            (
                "identical",
                &[(10, 40), (20, 40), (30, 20)],
                &[(10, 40), (20, 40), (30, 20)],
                5000.0,
                1.0,
                0.5005243366794891,
                0.5005243366794891,
            ),
            (
                "small_with_ties",
                &[(1, 3), (2, 2), (3, 1)],
                &[(2, 1), (3, 3), (4, 2)],
                32.5,
                0.02033072629585609,
                0.010165363147928045,
                0.9935390656473443,
            ),
            (
                "canary_faster",
                &[(50, 100), (60, 100), (70, 50)],
                &[(40, 120), (50, 100), (60, 30)],
                9500.0,
                1.525948478647114e-45,
                1.0,
                7.62974239323557e-46,
            ),
            (
                "all_tied_apart",
                &[(10, 200)],
                &[(12, 200)],
                40000.0,
                9.182598395744396e-89,
                4.591299197872198e-89,
                1.0,
            ),
        ];
        for (name, baseline, canary, u, two, greater, less) in cases {
            let result = mann_whitney(&h(baseline), &h(canary)).unwrap();
            assert!(
                close(result.u_canary, *u),
                "{name}: U {} vs {u}",
                result.u_canary
            );
            assert!(
                close(result.p_two_sided, *two),
                "{name}: two-sided {} vs {two}",
                result.p_two_sided
            );
            assert!(
                close(result.p_canary_greater, *greater),
                "{name}: greater {} vs {greater}",
                result.p_canary_greater
            );
            assert!(
                close(result.p_canary_less, *less),
                "{name}: less {} vs {less}",
                result.p_canary_less
            );
        }
    }

    #[test]
    fn empty_or_fully_tied_samples_have_no_test() {
        assert!(mann_whitney(&h(&[]), &h(&[(1, 5)])).is_none());
        assert!(mann_whitney(&h(&[(7, 5)]), &h(&[(7, 9)])).is_none());
    }

    #[test]
    fn histograms_merge_and_summarise() {
        let mut a = h(&[(30, 1), (10, 2), (10, 1)]);
        a.add(&h(&[(20, 4), (30, 2)]));
        assert_eq!(a.buckets(), &[(10, 3), (20, 4), (30, 3)]);
        assert_eq!(a.count(), 10);
        assert_eq!(a.mean(), Some(20.0));
        assert_eq!(a.quantile(0.5), Some(20));
        assert_eq!(a.quantile(0.99), Some(30));
        assert_eq!(a.quantile(0.0), Some(10));
        assert_eq!(h(&[]).quantile(0.5), None);
    }

    #[test]
    fn erfc_is_accurate_across_the_range() {
        // Reference: scipy.special.erfc.
        for (x, expected) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (3.0, 2.209049699858544e-05),
            (-1.0, 1.8427007929497148),
            (10.0, 2.088487583762545e-45),
        ] {
            assert!(
                close(erfc(x), expected),
                "erfc({x}) = {} vs {expected}",
                erfc(x)
            );
        }
    }
}
