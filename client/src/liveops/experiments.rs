//! Which variant of an experiment a unit (a player, or any attribute: a
//! guild, a match) gets: deterministic from the unit's bucket and the
//! variants' weights, the same on the hub and in every game server. The
//! first assignment is what sticks (stored by the hub); this is how a new
//! unit is placed.
//!
//! The bucket is SHA-256 of the experiment's name and the unit, read as a
//! number in [0, 1): independent of the live events' percentage buckets
//! (another salt) and of other experiments'.

use super::{
    resolution::PlayerRef,
    segments::{SegmentBook, in_percentage},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::{borrow::Cow, collections::BTreeMap};

/// A unit's value is at most this long (longer: not in the experiment).
pub const MAX_UNIT_CHARS: usize = 256;

/// One variant: its id, its weight and its RFC 7396 merge patch (the
/// control's is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantDefinition {
    pub id: String,
    pub weight: f64,
    pub patch: Value,
}

/// A running experiment as the hub and servers resolve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentDefinition {
    pub name: String,
    /// The config its variants patch.
    pub config: String,
    /// `player`, or the player attribute whose value is the unit (a guild,
    /// a match).
    pub unit: String,
    pub variants: Vec<VariantDefinition>,
    /// The player must be in one of these (none: every player)...
    #[serde(default)]
    pub segments: Vec<String>,
    /// ...and the unit among the experiment's first `percentage` buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    /// In force from this instant (Unix ms; none: since it started)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// ...until this one (none: until it is finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// Units whose first (stored) assignment is not where the weights
    /// place them now: a weight change moves only new units.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
}

impl ExperimentDefinition {
    /// The player's unit: its id, or the unit attribute's value (a text or
    /// an integer); none when the attribute is missing or too long.
    pub fn unit_of<'a>(&self, player: PlayerRef<'a>) -> Option<Cow<'a, str>> {
        let unit: Cow<'a, str> = if self.unit == "player" {
            Cow::Borrowed(player.id)
        } else {
            match player.attributes.get(&self.unit)? {
                Value::String(text) => Cow::Borrowed(text.as_str()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Cow::Owned(n.to_string()),
                _ => return None,
            }
        };
        (!unit.is_empty() && unit.chars().count() <= MAX_UNIT_CHARS).then_some(unit)
    }

    /// The variant the player gets at `now_ms` (its index) and the unit:
    /// none outside the experiment's window, outside its audience, or
    /// without a unit. A pinned unit keeps its first variant.
    pub fn variant_for<'a>(
        &self,
        player: PlayerRef<'a>,
        now_ms: i64,
        book: &SegmentBook,
    ) -> Option<(usize, Cow<'a, str>)> {
        if self.start_ms.is_some_and(|start| now_ms < start)
            || self.end_ms.is_some_and(|end| now_ms >= end)
        {
            return None;
        }
        if !self.segments.is_empty()
            && !self
                .segments
                .iter()
                .any(|s| book.contains(s, player.id, player.attributes, now_ms))
        {
            return None;
        }
        let unit = self.unit_of(player)?;
        if self
            .percentage
            .is_some_and(|p| !in_percentage(&self.name, &unit, p))
        {
            return None;
        }
        let index = match self.pins.get(unit.as_ref()) {
            Some(pinned) => self.variants.iter().position(|v| &v.id == pinned)?,
            None => {
                let weights: Vec<f64> = self.variants.iter().map(|v| v.weight).collect();
                assign(&self.name, &unit, &weights)?
            }
        };
        Some((index, unit))
    }
}

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

    fn definition() -> ExperimentDefinition {
        ExperimentDefinition {
            name: "sword-tuning".into(),
            config: "balance".into(),
            unit: "player".into(),
            variants: vec![
                VariantDefinition {
                    id: "control".into(),
                    weight: 50.0,
                    patch: serde_json::json!({}),
                },
                VariantDefinition {
                    id: "strong".into(),
                    weight: 50.0,
                    patch: serde_json::json!({"damage": 12}),
                },
            ],
            segments: Vec::new(),
            percentage: None,
            start_ms: Some(1_000),
            end_ms: Some(2_000),
            pins: BTreeMap::new(),
        }
    }

    #[test]
    fn a_definition_places_players_by_weight_within_its_window_and_keeps_pins() {
        let book = SegmentBook::with_built_ins();
        let attributes = serde_json::Map::new();
        let player = |id: &'static str| PlayerRef {
            id,
            attributes: &attributes,
        };
        let mut experiment = definition();
        assert_eq!(experiment.variant_for(player("p1"), 999, &book), None);
        assert_eq!(experiment.variant_for(player("p1"), 2_000, &book), None);
        let (index, unit) = experiment.variant_for(player("p1"), 1_500, &book).unwrap();
        assert_eq!(unit, "p1");
        assert_eq!(Some(index), assign("sword-tuning", "p1", &[50.0, 50.0]));
        // Weights moved everyone to control, but p1's first variant stays.
        let first = experiment.variants[index].id.clone();
        experiment.variants[0].weight = 100.0;
        experiment.variants[1].weight = 0.0;
        experiment.pins.insert("p1".into(), first);
        assert_eq!(
            experiment
                .variant_for(player("p1"), 1_500, &book)
                .unwrap()
                .0,
            index
        );
        for id in ["p2", "p3", "p4", "p5"] {
            assert_eq!(
                experiment.variant_for(player(id), 1_500, &book).unwrap().0,
                0
            );
        }
    }

    #[test]
    fn an_attribute_unit_puts_a_whole_guild_in_one_variant() {
        let book = SegmentBook::with_built_ins();
        let mut experiment = definition();
        experiment.unit = "guild".into();
        let mut seen = std::collections::BTreeSet::new();
        for player in 0..50 {
            let mut attributes = serde_json::Map::new();
            attributes.insert("guild".into(), Value::from(7));
            let id = format!("p{player}");
            let (index, unit) = experiment
                .variant_for(
                    PlayerRef {
                        id: &id,
                        attributes: &attributes,
                    },
                    1_500,
                    &book,
                )
                .unwrap();
            assert_eq!(unit, "7");
            seen.insert(index);
        }
        assert_eq!(seen.len(), 1, "one guild, one variant");
        let none = serde_json::Map::new();
        assert_eq!(
            experiment.variant_for(
                PlayerRef {
                    id: "p1",
                    attributes: &none
                },
                1_500,
                &book
            ),
            None,
            "no guild: not in the experiment"
        );
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
