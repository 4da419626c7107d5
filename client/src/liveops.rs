//! Live ops that game servers resolve locally, the same code the hub
//! runs: segments (rules over player attributes, id lists, stable
//! percentage buckets) and the resolution of what a player sees (base,
//! then the player's live events, then an experiment variant, each an
//! RFC 7396 merge patch). The hub's `domain` re-exports these, so the
//! hub's REST answers and [`crate::Client::for_player`] agree by
//! construction; a shared table of cases proves it.

pub mod experiments;
pub mod resolution;
pub mod segments;

use experiments::ExperimentDefinition;
use resolution::{Audience, EventLayer, PlayerRef, Resolution, Target, VariantLayer, resolve};
use segments::SegmentBook;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The config name a server acks `liveops` frames under.
pub const LIVEOPS_CONFIG: &str = "$liveops";

/// A segment as servers receive it: a rule, or a list of ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// An occurrence of a live event in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveOccurrence {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The region whose local time it follows; absent: every region of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One config a live event changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideDefinition {
    pub config: String,
    /// An RFC 7396 merge patch.
    pub patch: Value,
}

/// A live event as servers receive it, with the occurrences in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDefinition {
    pub name: String,
    pub priority: i64,
    /// Upper-case regions; empty: every region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// The player must be in one of these (empty: every player)...
    #[serde(default)]
    pub segments: Vec<String>,
    /// ...and among the event's first `percentage` of stable buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    /// A semver requirement on the player's `contentVersion`; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_version: Option<String>,
    #[serde(default)]
    pub overrides: Vec<OverrideDefinition>,
    #[serde(default)]
    pub rules: Value,
    /// Occurrences in force; none: the event applies to nobody now.
    #[serde(default)]
    pub active: Vec<ActiveOccurrence>,
}

/// Everything a server needs to resolve its players.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub revision: i64,
    book: SegmentBook,
    /// Built with `targeting`, entry for entry ([`Definitions::from_frame`]).
    events: Vec<EventDefinition>,
    /// Each event's audience and content-version requirement, read once
    /// (none: an unreadable requirement, which reaches nobody).
    targeting: Vec<Option<(Audience, Option<semver::VersionReq>)>>,
    /// Running experiments (at most one per config).
    experiments: Vec<ExperimentDefinition>,
}

/// A player: an id and attributes (`region`, `platform`, `level`,
/// `contentVersion`, `firstSeen`...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Player {
    pub id: String,
    pub attributes: Map<String, Value>,
}

impl Player {
    pub fn new(id: impl Into<String>) -> Self {
        Player {
            id: id.into(),
            attributes: Map::new(),
        }
    }

    /// Sets an attribute.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.attributes.insert(key.to_owned(), value.into());
        self
    }
}

impl Definitions {
    /// Builds the definitions of a `liveops` frame: lists first, then rule
    /// segments in rounds (a rule may name one defined after it). A
    /// segment that cannot be defined matches nobody.
    pub fn from_frame(
        revision: i64,
        segments: Vec<SegmentDefinition>,
        events: Vec<EventDefinition>,
        experiments: Vec<ExperimentDefinition>,
    ) -> Definitions {
        let mut book = SegmentBook::with_built_ins();
        let mut rules = Vec::new();
        for segment in segments {
            match segment.rule {
                Some(rule) => rules.push((segment.name, rule)),
                None => {
                    let _ = book.define_list(&segment.name, segment.members);
                }
            }
        }
        loop {
            let before = rules.len();
            rules.retain(|(name, rule)| book.define_rule(name, rule).is_err());
            if rules.is_empty() || rules.len() == before {
                break;
            }
        }
        let targeting = events
            .iter()
            .map(|event| {
                let content = match &event.content_version {
                    None => None,
                    Some(need) => Some(semver::VersionReq::parse(need).ok()?),
                };
                let audience = Audience {
                    segments: event.segments.clone(),
                    percentage: event.percentage,
                };
                Some((audience, content))
            })
            .collect();
        Definitions {
            revision,
            book,
            events,
            targeting,
            experiments,
        }
    }

    /// The running experiments, as the hub sent them.
    pub fn experiments(&self) -> &[ExperimentDefinition] {
        &self.experiments
    }

    /// The experiment on `config` and the variant `player` gets at
    /// `now_ms`, if any (the hub's `/experiments/assignments` answers the
    /// same).
    pub fn variant_for<'a>(
        &'a self,
        player: &Player,
        config: &str,
        now_ms: i64,
    ) -> Option<(&'a ExperimentDefinition, usize)> {
        let player = PlayerRef {
            id: &player.id,
            attributes: &player.attributes,
        };
        self.experiments
            .iter()
            .filter(|e| e.config == config)
            .find_map(|e| Some((e, e.variant_for(player, now_ms, &self.book)?.0)))
    }

    /// The events, as the hub sent them.
    pub fn events(&self) -> &[EventDefinition] {
        &self.events
    }

    /// The events in force for `player` at `now_ms`, with the start of
    /// the occurrence that applies.
    pub fn active_for<'a>(
        &'a self,
        player: &Player,
        now_ms: i64,
    ) -> Vec<(&'a EventDefinition, i64)> {
        let target = Target::of(&player.id, &player.attributes);
        self.events
            .iter()
            .zip(&self.targeting)
            .filter_map(|(event, targeting)| {
                // An unreadable content-version requirement reaches nobody.
                let (audience, content) = targeting.as_ref()?;
                // In force now (a server cut off from the hub stops applying
                // an occurrence at its end all the same).
                let occurrence = event.active.iter().find(|o| {
                    o.start_ms <= now_ms
                        && now_ms < o.end_ms
                        && target.in_region(o.region.as_deref(), &event.regions)
                })?;
                target
                    .reached_by(&event.name, audience, content.as_ref(), now_ms, &self.book)
                    .then_some((event, occurrence.start_ms))
            })
            .collect()
    }

    /// What `player` sees of `config` over `base`.
    pub fn resolve(
        &self,
        player: &Player,
        config: &str,
        base: &Value,
        now_ms: i64,
        explain: bool,
    ) -> Resolution {
        let layers: Vec<EventLayer> = self
            .active_for(player, now_ms)
            .into_iter()
            .filter_map(|(event, start_ms)| {
                let change = event.overrides.iter().find(|o| o.config == config)?;
                Some(EventLayer {
                    name: &event.name,
                    priority: event.priority,
                    start_ms,
                    patch: &change.patch,
                })
            })
            .collect();
        let variant = self
            .variant_for(player, config, now_ms)
            .map(|(experiment, index)| VariantLayer {
                experiment: &experiment.name,
                variant: &experiment.variants[index].id,
                patch: &experiment.variants[index].patch,
            });
        resolve(base, layers, variant, explain)
    }
}

/// Reads a duration: ISO 8601 (`PT5M`, `P7D`) or a number of seconds,
/// between 0 and 30 days; in milliseconds.
pub fn parse_duration(value: &serde_json::Value) -> Result<u64, String> {
    let invalid =
        || format!("{value} is not a duration: use ISO 8601 like \"PT5M\" or a number of seconds");
    let seconds = match value {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(invalid)?,
        serde_json::Value::String(text) => {
            let upper = text.trim().to_ascii_uppercase();
            let rest = upper.strip_prefix('P').ok_or_else(invalid)?;
            let (days, time) = match rest.split_once('T') {
                Some((days, time)) => (days, time),
                None => (rest, ""),
            };
            if days.is_empty() && time.is_empty() {
                return Err(invalid());
            }
            let mut total = 0.0;
            let mut number = String::new();
            for (part, units) in [
                (days, &[('D', 86_400.0), ('W', 604_800.0)][..]),
                (time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)][..]),
            ] {
                for c in part.chars() {
                    if c.is_ascii_digit() || c == '.' {
                        number.push(c);
                        continue;
                    }
                    let unit = units.iter().find(|(u, _)| *u == c).ok_or_else(invalid)?.1;
                    let n: f64 = number.parse().map_err(|_| invalid())?;
                    total += n * unit;
                    number.clear();
                }
                if !number.is_empty() {
                    return Err(invalid());
                }
            }
            total
        }
        _ => return Err(invalid()),
    };
    if !seconds.is_finite() || !(0.0..=30.0 * 86_400.0).contains(&seconds) {
        return Err(format!("{value}: a duration is between 0 and 30 days"));
    }
    Ok((seconds * 1000.0).round() as u64)
}
