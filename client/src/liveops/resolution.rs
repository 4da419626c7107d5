//! What a player sees of a config: one function over layers in a fixed
//! order, each a JSON Merge Patch (RFC 7396) over the one before.
//!
//! 1. **base**: the revision the player's server runs (or the config's
//!    active revision);
//! 2. **live events** active for this player that override the config,
//!    lowest `priority` first (ties: earlier start first, then name);
//! 3. **the experiment variant** the player is assigned to, if any.
//!
//! The answer is the document, its checksum (`hotswap_client`'s, the one
//! servers verify), the layers applied, and on request which layer set
//! or removed each path. The hub's REST answers and the SDK's local
//! resolution call this same function.

use super::segments::{SegmentBook, in_percentage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Who an event reaches among players.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audience {
    /// The player must be in one of these (none: every player).
    pub segments: Vec<String>,
    /// Then in the first `percentage` of the event's stable buckets.
    pub percentage: Option<f64>,
}

/// A player, as the resolution sees one.
#[derive(Debug, Clone, Copy)]
pub struct PlayerRef<'a> {
    pub id: &'a str,
    pub attributes: &'a Map<String, Value>,
}

impl Audience {
    /// Whether the audience includes the player. `salt` keeps each event's
    /// percentage draw its own (the event's name).
    pub fn includes(&self, salt: &str, player: PlayerRef, now_ms: i64, book: &SegmentBook) -> bool {
        (self.segments.is_empty()
            || self
                .segments
                .iter()
                .any(|s| book.contains(s, player.id, player.attributes, now_ms)))
            && self
                .percentage
                .is_none_or(|p| in_percentage(salt, player.id, p))
    }
}

/// A player as live events target them: who, the region they play in
/// (upper case; empty when unknown) and the content version they run.
/// The hub and the SDK pick a player's events with these same checks.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub player: PlayerRef<'a>,
    pub region: String,
    pub content: Option<semver::Version>,
}

impl<'a> Target<'a> {
    /// Reads `region` and `contentVersion` from the attributes.
    pub fn of(id: &'a str, attributes: &'a Map<String, Value>) -> Self {
        Target {
            player: PlayerRef { id, attributes },
            region: attributes
                .get("region")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_uppercase(),
            content: attributes
                .get("contentVersion")
                .and_then(Value::as_str)
                .and_then(|v| semver::Version::parse(v).ok()),
        }
    }

    /// Whether an occurrence reaches the player's region: the region it
    /// follows (`regionLocal`), else one of the event's (none: all).
    pub fn in_region(&self, occurrence_region: Option<&str>, event_regions: &[String]) -> bool {
        match occurrence_region {
            Some(own) => own == self.region,
            None => event_regions.is_empty() || event_regions.contains(&self.region),
        }
    }

    /// Whether an event reaches the player: its requirement on the
    /// player's content version (none: any), then its audience.
    pub fn reached_by(
        &self,
        event: &str,
        audience: &Audience,
        content: Option<&semver::VersionReq>,
        now_ms: i64,
        book: &SegmentBook,
    ) -> bool {
        content.is_none_or(|need| self.content.as_ref().is_some_and(|have| need.matches(have)))
            && audience.includes(event, self.player, now_ms, book)
    }
}

/// One event's patch of the config, for a player it is active for.
#[derive(Debug, Clone, Copy)]
pub struct EventLayer<'a> {
    pub name: &'a str,
    pub priority: i64,
    /// When the occurrence in force started.
    pub start_ms: i64,
    pub patch: &'a Value,
}

/// The variant an experiment assigned the player.
#[derive(Debug, Clone, Copy)]
pub struct VariantLayer<'a> {
    pub experiment: &'a str,
    pub variant: &'a str,
    pub patch: &'a Value,
}

/// What a player sees of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub document: Value,
    pub checksum: String,
    /// The layers applied, in order: `base`, `event:<name>`,
    /// `experiment:<name>/<variant>`.
    pub layers: Vec<String>,
    /// With `explain`: each path (JSON Pointer) a layer set or removed, and
    /// the last layer that did.
    pub explain: Option<BTreeMap<String, String>>,
}

/// Resolves a config for a player: `base`, then `events` (sorted here by
/// priority, start, name), then `variant`.
pub fn resolve(
    base: &Value,
    mut events: Vec<EventLayer>,
    variant: Option<VariantLayer>,
    explain: bool,
) -> Resolution {
    events.sort_by(|a, b| (a.priority, a.start_ms, a.name).cmp(&(b.priority, b.start_ms, b.name)));
    let mut document = base.clone();
    let mut layers = vec!["base".to_owned()];
    let mut paths = explain.then(BTreeMap::new);
    for event in &events {
        let layer = format!("event:{}", event.name);
        merge_patch(&mut document, event.patch, "", &layer, paths.as_mut());
        layers.push(layer);
    }
    if let Some(variant) = variant {
        let layer = format!("experiment:{}/{}", variant.experiment, variant.variant);
        merge_patch(&mut document, variant.patch, "", &layer, paths.as_mut());
        layers.push(layer);
    }
    Resolution {
        checksum: crate::document_checksum(&document),
        document,
        layers,
        explain: paths,
    }
}

/// RFC 7396: applies `patch` to `target`, noting in `paths` which layer
/// set or removed each leaf path below `at`.
pub fn merge_patch(
    target: &mut Value,
    patch: &Value,
    at: &str,
    layer: &str,
    mut paths: Option<&mut BTreeMap<String, String>>,
) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        if let Some(paths) = paths {
            paths.insert(at.to_owned(), layer.to_owned());
        }
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else {
        unreachable!("made an object above")
    };
    for (key, change) in changes {
        let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
        if change.is_null() {
            if object.remove(key).is_some()
                && let Some(paths) = paths.as_deref_mut()
            {
                paths.insert(path, layer.to_owned());
            }
            continue;
        }
        let entry = object.entry(key.clone()).or_insert(Value::Null);
        merge_patch(entry, change, &path, layer, paths.as_deref_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7396 Appendix A.
    #[test]
    fn merge_patch_passes_the_rfc_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let mut document = target.clone();
            merge_patch(&mut document, &patch, "", "t", None);
            assert_eq!(document, expected, "{target} + {patch}");
        }
    }

    #[test]
    fn layers_apply_in_their_order_and_explain_who_set_what() {
        let base = json!({"damage": {"sword": 10, "bow": 8}, "xp": 1.0, "mode": "normal"});
        let double_xp = json!({"xp": 2.0});
        let winter = json!({"damage": {"sword": 12, "bow": null}, "mode": "winter"});
        let night = json!({"mode": "night", "xp": 3.0});
        let variant = json!({"damage": {"sword": 11}});
        let events = vec![
            EventLayer {
                name: "night",
                priority: 5,
                start_ms: 100,
                patch: &night,
            },
            EventLayer {
                name: "winter",
                priority: 1,
                start_ms: 200,
                patch: &winter,
            },
            EventLayer {
                name: "double-xp",
                priority: 1,
                start_ms: 100,
                patch: &double_xp,
            },
        ];
        let resolved = resolve(
            &base,
            events,
            Some(VariantLayer {
                experiment: "sword-tuning",
                variant: "B",
                patch: &variant,
            }),
            true,
        );
        assert_eq!(
            resolved.document,
            json!({"damage": {"sword": 11}, "xp": 3.0, "mode": "night"})
        );
        assert_eq!(
            resolved.layers,
            [
                "base",
                "event:double-xp",
                "event:winter",
                "event:night",
                "experiment:sword-tuning/B"
            ]
        );
        let explain = resolved.explain.unwrap();
        // (path, the last layer that set or removed it)
        let table = [
            ("/xp", "event:night"),
            ("/mode", "event:night"),
            ("/damage/bow", "event:winter"),
            ("/damage/sword", "experiment:sword-tuning/B"),
        ];
        for (path, layer) in table {
            assert_eq!(explain.get(path).map(String::as_str), Some(layer), "{path}");
        }
        assert_eq!(explain.len(), table.len());
        assert_eq!(
            resolved.checksum,
            crate::document_checksum(&resolved.document)
        );
        // No layers: the base, its checksum, nothing explained unless asked.
        let plain = resolve(&base, Vec::new(), None, false);
        assert_eq!(
            (plain.document.clone(), plain.explain),
            (base.clone(), None)
        );
        assert_eq!(plain.checksum, crate::document_checksum(&base));
    }

    #[test]
    fn audiences_take_segments_then_a_stable_percentage() {
        let book = SegmentBook::with_built_ins();
        let whale = json!({"spendTier": "whale"});
        let whale = whale.as_object().unwrap();
        let nobody = Map::new();
        let everyone = Audience::default();
        let vips = Audience {
            segments: vec!["vip".into()],
            percentage: None,
        };
        let none_of_them = Audience {
            segments: vec!["vip".into()],
            percentage: Some(0.0),
        };
        let all_of_them = Audience {
            segments: Vec::new(),
            percentage: Some(100.0),
        };
        let p = |attributes| PlayerRef {
            id: "p-1",
            attributes,
        };
        assert!(everyone.includes("e", p(&nobody), 0, &book));
        assert!(vips.includes("e", p(whale), 0, &book));
        assert!(!vips.includes("e", p(&nobody), 0, &book));
        assert!(!none_of_them.includes("e", p(whale), 0, &book));
        assert!(all_of_them.includes("e", p(&nobody), 0, &book));
        let half = Audience {
            segments: Vec::new(),
            percentage: Some(50.0),
        };
        let included = (0..2000)
            .filter(|i| {
                let id = format!("p-{i}");
                half.includes(
                    "summer",
                    PlayerRef {
                        id: &id,
                        attributes: &nobody,
                    },
                    0,
                    &book,
                )
            })
            .count();
        assert!(
            (900..1100).contains(&included),
            "{included} of 2000 at 50 %"
        );
    }
}
