//! Which variant of an experiment a unit (a player, or any attribute: a
//! guild, a match) gets: deterministic from the unit's bucket and the
//! variants' weights, the same on the hub and in every game server. The
//! first assignment is what sticks (stored by the hub); this is how a new
//! unit is placed.
//!
//! The bucket is SHA-256 of the experiment's name and the unit, read as a
//! number in [0, 1): independent of the live events' percentage buckets
//! (another salt) and of other experiments'.

use sha2::{Digest, Sha256};

/// The unit's place in [0, 1) for this experiment.
pub fn variant_position(experiment: &str, unit: &str) -> f64 {
    let digest = Sha256::new()
        .chain_update(b"experiment:")
        .chain_update(experiment.as_bytes())
        .chain_update(b":")
        .chain_update(unit.as_bytes())
        .finalize();
    let head = u64::from_be_bytes(digest[..8].try_into().expect("a digest has 8 bytes"));
    // The top 53 bits: every value exact in an f64.
    (head >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the variant `unit` falls in: the variant whose share of
/// the weights' sum covers the unit's position, in order. None when a
/// weight is negative or not finite, or they sum to zero. Weights need not
/// sum to 100 (`[1, 1]` splits as `[50, 50]` does).
pub fn assign(experiment: &str, unit: &str, weights: &[f64]) -> Option<usize> {
    if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        return None;
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let at = variant_position(experiment, unit) * total;
    let mut covered = 0.0;
    for (index, weight) in weights.iter().enumerate() {
        covered += weight;
        if at < covered && *weight > 0.0 {
            return Some(index);
        }
    }
    // Rounding left `at` at the very top: the last variant with weight.
    weights.iter().rposition(|w| *w > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_thousand_units_split_within_the_binomial_bounds_of_the_weights() {
        let weights = [50.0, 30.0, 20.0];
        let n = 100_000;
        let mut counts = [0u64; 3];
        for unit in 0..n {
            counts[assign("balance-test", &format!("player-{unit}"), &weights).unwrap()] += 1;
        }
        for (count, weight) in counts.iter().zip(weights) {
            let p = weight / 100.0;
            let (expected, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
            assert!(
                (*count as f64 - expected).abs() <= 4.0 * sd,
                "{counts:?}: {count} is more than 4 sd from {expected}"
            );
        }
    }

    #[test]
    fn assignments_are_stable_and_each_experiment_draws_its_own() {
        let weights = [1.0, 1.0];
        let first: Vec<Option<usize>> = (0..1000)
            .map(|u| assign("a", &format!("p{u}"), &weights))
            .collect();
        let again: Vec<Option<usize>> = (0..1000)
            .map(|u| assign("a", &format!("p{u}"), &[50.0, 50.0]))
            .collect();
        assert_eq!(first, again, "stable, and only the weights' shares count");
        let other = (0..1000)
            .filter(|u| assign("b", &format!("p{u}"), &weights) == first[*u as usize])
            .count();
        // Independent draws agree about half the time.
        assert!((400..600).contains(&other), "{other}");
    }

    #[test]
    fn weights_that_place_nobody_are_refused_and_zero_weights_get_nobody() {
        assert_eq!(assign("x", "p1", &[0.0, 0.0]), None);
        assert_eq!(assign("x", "p1", &[]), None);
        assert_eq!(assign("x", "p1", &[1.0, -1.0]), None);
        assert_eq!(assign("x", "p1", &[1.0, f64::NAN]), None);
        for unit in 0..1000 {
            assert_eq!(assign("x", &format!("p{unit}"), &[0.0, 1.0, 0.0]), Some(1));
        }
        let position = variant_position("x", "p1");
        assert!((0.0..1.0).contains(&position));
    }
}
