//! What a player sees, from memory: each config's base (what a server in
//! the player's region runs outside a deployment in flight), then the live
//! events active for the player, through `domain::resolution::resolve`.
//! With `at`, the events are those the schedule puts in force then (a
//! designer checks Christmas before Christmas).

use super::{
    BASES_KEPT, Definitions, EventEntry, LiveOps, LiveOpsResult, invalid,
    segments::MAX_PLAYER_ID_CHARS,
    views::{ActiveEventView, ActiveEventsView, ResolvedConfigView},
};
use crate::{
    catalog::{CatalogError, views::rfc3339},
    domain::{
        event_progress::Slot,
        live_event::ContentVersion,
        resolution::{EventLayer, Target, VariantLayer, resolve},
    },
};
use hotswap_client::sync::{lock, read, write};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::{collections::HashMap, sync::Arc};

/// Resolutions kept (serialized); past it the cache starts over.
const RESOLUTIONS_KEPT: usize = 10_000;

/// What makes two players' view of a config the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ResolutionKey {
    config: String,
    base: i64,
    /// (event, its revision, the occurrence's start), in the order found.
    layers: Vec<(String, i64, i64)>,
    /// (experiment, its revision, the variant's index).
    variant: Option<(String, i64, usize)>,
    explain: bool,
}

/// One player's answer: each config's resolution as JSON (shared), and
/// the events active for the player. Written out as a `PlayerConfigView`.
#[derive(Debug, Clone)]
pub struct PlayerAnswer {
    pub player_id: String,
    pub at_ms: i64,
    pub configs: Vec<(String, Arc<str>)>,
    pub events: Vec<String>,
}

impl PlayerAnswer {
    /// The answer as a `PlayerConfigView` JSON object.
    pub fn write_json(&self, out: &mut String) {
        let text = |value: &str| serde_json::to_string(value).expect("text serializes");
        out.push_str("{\"playerId\":");
        out.push_str(&text(&self.player_id));
        out.push_str(",\"at\":");
        out.push_str(&text(&rfc3339(self.at_ms)));
        out.push_str(",\"configs\":{");
        let mut configs: Vec<&(String, Arc<str>)> = self.configs.iter().collect();
        configs.sort_by(|a, b| a.0.cmp(&b.0));
        configs.dedup_by(|a, b| a.0 == b.0);
        for (index, (name, json)) in configs.into_iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&text(name));
            out.push(':');
            out.push_str(json);
        }
        out.push_str("},\"events\":");
        out.push_str(&serde_json::to_string(&self.events).expect("names serialize"));
        out.push('}');
    }
}

/// Most players in one `POST /players/resolve`.
pub const MAX_PLAYERS: usize = 100;
/// Most configs resolved in one call.
pub const MAX_CONFIGS: usize = 32;
/// Most attributes a player may carry in a request.
pub const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTRIBUTE_KEY: usize = 64;
const MAX_ATTRIBUTE_TEXT: usize = 256;

/// One player: an id and the attributes the caller sends.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlayerRequest {
    pub player_id: String,
    /// `region`, `platform`, `country`, `clientVersion`, `contentVersion`,
    /// `level`, `spendTier`, `firstSeen`... (strings, numbers, booleans).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// `POST /players/resolve`: a roster.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveRequest {
    pub players: Vec<PlayerRequest>,
    pub configs: Vec<String>,
    /// RFC 3339: resolve for this instant (scheduled events included).
    pub at: Option<String>,
    #[serde(default)]
    pub explain: bool,
}

impl PlayerRequest {
    /// Checks the id and attributes (`at` is the body path of the player).
    pub fn check(&self, at: &str) -> LiveOpsResult<()> {
        let id = &self.player_id;
        if id.is_empty()
            || id.chars().count() > MAX_PLAYER_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(invalid(
                &format!("{at}/playerId"),
                format!("a player id is 1-{MAX_PLAYER_ID_CHARS} printable characters"),
            ));
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(invalid(
                &format!("{at}/attributes"),
                format!("at most {MAX_ATTRIBUTES} attributes"),
            ));
        }
        for (key, value) in &self.attributes {
            let key_ok = !key.is_empty()
                && key.len() <= MAX_ATTRIBUTE_KEY
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            let value_ok = match value {
                Value::String(text) => text.chars().count() <= MAX_ATTRIBUTE_TEXT,
                Value::Number(_) | Value::Bool(_) | Value::Null => true,
                _ => false,
            };
            if !key_ok || !value_ok {
                return Err(invalid(
                    &format!("{at}/attributes/{key}"),
                    format!(
                        "attribute names are 1-{MAX_ATTRIBUTE_KEY} letters, digits, '_', '-' or '.'; \
                         values are a string of at most {MAX_ATTRIBUTE_TEXT} characters, a number or a boolean"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn region(&self) -> String {
        self.attributes
            .get("region")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_uppercase()
    }
}

/// Reads a query's attribute value: a number or boolean when it reads as
/// one, else the text.
pub fn attribute_value(text: &str) -> Value {
    if let Ok(number) = text.parse::<i64>() {
        return Value::from(number);
    }
    if let Some(number) = text.parse::<f64>().ok().filter(|n| n.is_finite()) {
        return Value::from(number);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// The events active for a player at `at` (`in_force`: a preview's
/// occurrences, worked out once per request from the schedules; else as
/// the actors applied them), with the occurrence in force. The SDK picks
/// a player's events with the same [`Target`] checks.
pub(super) fn active_for<'d>(
    definitions: &'d Definitions,
    player: &PlayerRequest,
    at_ms: i64,
    in_force: Option<&HashMap<String, Vec<Slot>>>,
) -> Vec<(&'d Arc<EventEntry>, Slot)> {
    let target = Target::of(&player.player_id, &player.attributes);
    let reaches = |event: &EventEntry, slot: &Slot| {
        target.in_region(slot.region.as_deref(), &event.spec.regions)
    };
    definitions
        .events
        .values()
        .filter_map(|event| {
            let slot = match in_force {
                Some(in_force) => in_force
                    .get(event.name())?
                    .iter()
                    .find(|s| reaches(event, s))?,
                // As the actors applied them, each within its window (as the SDK).
                None => event
                    .applied
                    .iter()
                    .find(|s| s.start_ms <= at_ms && at_ms < s.end_ms && reaches(event, s))?,
            };
            let content = match &event.spec.content_version {
                ContentVersion::Any => None,
                ContentVersion::Required(need) => Some(need),
            };
            target
                .reached_by(
                    event.name(),
                    &event.spec.audience,
                    content,
                    at_ms,
                    &definitions.book,
                )
                .then(|| (event, slot.clone()))
        })
        .collect()
}

impl LiveOps {
    /// A base document as players see it (secrets masked), from memory.
    pub(super) async fn base_document(
        &self,
        config: &str,
        revision: i64,
    ) -> LiveOpsResult<Arc<Value>> {
        let key = (config.to_owned(), revision);
        if let Some(found) = lock(&self.bases).get(&key) {
            return Ok(found.clone());
        }
        let document = self
            .catalog
            .player_document(config, revision)
            .await?
            .ok_or_else(|| CatalogError::ConfigNotFound(config.to_owned()))?;
        let document = Arc::new(document);
        let mut bases = lock(&self.bases);
        if bases.len() >= BASES_KEPT {
            bases.clear();
        }
        bases.insert(key, document.clone());
        Ok(document)
    }

    /// Each player's view of each config at `at` (now when absent). A
    /// config's resolution is kept, serialized, by (config, base revision,
    /// the event layers applied, explain): every player with the same
    /// layers shares it, so a lookup is the audience checks and a copy.
    pub async fn resolve_players(
        &self,
        players: &[PlayerRequest],
        configs: &[String],
        at_ms: Option<i64>,
        explain: bool,
    ) -> LiveOpsResult<Vec<PlayerAnswer>> {
        if configs.is_empty() || configs.len() > MAX_CONFIGS {
            return Err(invalid(
                "/configs",
                format!("name 1 to {MAX_CONFIGS} configs"),
            ));
        }
        let definitions = self.definitions();
        let instant = at_ms.unwrap_or_else(|| self.now_ms());
        // A preview's occurrences: once per event for the whole request.
        let in_force: Option<HashMap<String, Vec<Slot>>> = at_ms.map(|at| {
            definitions
                .events
                .values()
                .map(|e| (e.name().to_owned(), e.timetable().in_force(&e.progress, at)))
                .collect()
        });
        let mut answers = Vec::with_capacity(players.len());
        for player in players {
            let player = self.with_kept(&definitions, player);
            let player = player.as_ref();
            let region = player.region();
            let events = active_for(&definitions, player, instant, in_force.as_ref());
            let mut resolved = Vec::with_capacity(configs.len());
            for config in configs {
                let revision = self
                    .hub
                    .player_base(config, &region)
                    .ok_or_else(|| CatalogError::ConfigNotFound(config.clone()))?;
                let applying: Vec<(&Arc<EventEntry>, &Slot, &Value)> = events
                    .iter()
                    .filter_map(|(event, slot)| {
                        let change = event
                            .spec
                            .overrides
                            .iter()
                            .find(|o| o.config.as_str() == config)?;
                        Some((*event, slot, &change.patch))
                    })
                    .collect();
                // The variant is the last layer; a preview (`at`) is no
                // exposure, so it records no assignment.
                let variant = self.variant_for(
                    &definitions,
                    player,
                    config,
                    instant,
                    at_ms.is_none().then(crate::store::now_ms),
                );
                let key = ResolutionKey {
                    config: config.clone(),
                    base: revision,
                    layers: applying
                        .iter()
                        .map(|(event, slot, _)| {
                            (event.name().to_owned(), event.revision, slot.start_ms)
                        })
                        .collect(),
                    variant: variant
                        .as_ref()
                        .map(|(e, index)| (e.name().to_owned(), e.revision, *index)),
                    explain,
                };
                let cached = read(&self.resolutions).get(&key).cloned();
                let json = match cached {
                    Some(json) => json,
                    None => {
                        let base = self.base_document(config, revision).await?;
                        let layers: Vec<EventLayer> = applying
                            .iter()
                            .map(|(event, slot, patch)| EventLayer {
                                name: event.name(),
                                priority: event.spec.priority,
                                start_ms: slot.start_ms,
                                patch,
                            })
                            .collect();
                        let variant = variant.as_ref().map(|(e, index)| VariantLayer {
                            experiment: e.name(),
                            variant: &e.spec.variants[*index].id,
                            patch: &e.spec.variants[*index].patch,
                        });
                        let resolution = resolve(&base, layers, variant, explain);
                        let view = ResolvedConfigView {
                            base_revision: revision,
                            document: resolution.document,
                            checksum: resolution.checksum,
                            layers: resolution.layers,
                            explain: resolution.explain,
                        };
                        let json: Arc<str> = serde_json::to_string(&view)
                            .expect("a resolution serializes")
                            .into();
                        let mut kept = write(&self.resolutions);
                        if kept.len() >= RESOLUTIONS_KEPT {
                            kept.clear();
                        }
                        kept.insert(key, json.clone());
                        json
                    }
                };
                resolved.push((config.clone(), json));
            }
            answers.push(PlayerAnswer {
                player_id: player.player_id.clone(),
                at_ms: instant,
                configs: resolved,
                events: events.iter().map(|(e, _)| e.name().to_owned()).collect(),
            });
        }
        Ok(answers)
    }

    /// The studios' `events/active`: for a player (audience applied), or
    /// for a region (events open to every player there).
    pub fn active_events(
        &self,
        player: Option<&PlayerRequest>,
        region: Option<&str>,
    ) -> ActiveEventsView {
        let definitions = self.definitions();
        let player = player.map(|player| self.with_kept(&definitions, player));
        let player = player.as_deref();
        let now = self.now_ms();
        let anyone = PlayerRequest {
            player_id: String::new(),
            attributes: region
                .map(|r| {
                    let mut map = Map::new();
                    map.insert("region".into(), Value::String(r.to_owned()));
                    map
                })
                .unwrap_or_default(),
        };
        let target = Target::of("", &anyone.attributes);
        let found: Vec<(&Arc<EventEntry>, Slot)> = match player {
            Some(player) => active_for(&definitions, player, now, None),
            None => definitions
                .events
                .values()
                .filter(|e| {
                    e.spec.audience.segments.is_empty() && e.spec.audience.percentage.is_none()
                })
                .filter_map(|e| {
                    let slot = e.applied.iter().find(|s| {
                        s.start_ms <= now
                            && now < s.end_ms
                            && (region.is_none()
                                || target.in_region(s.region.as_deref(), &e.spec.regions))
                    })?;
                    Some((e, slot.clone()))
                })
                .collect(),
        };
        ActiveEventsView {
            server_time: rfc3339(now),
            events: found
                .into_iter()
                .map(|(event, slot)| ActiveEventView {
                    id: event.name().to_owned(),
                    event_type: event.spec.event_type.as_str().to_owned(),
                    display_name: event.spec.display_name.clone(),
                    start_at: rfc3339(slot.start_ms),
                    end_at: rfc3339(slot.end_ms),
                    rules: event.spec.rules.clone(),
                })
                .collect(),
        }
    }
}
