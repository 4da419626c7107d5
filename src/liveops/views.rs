//! What live-ops operations answer: the JSON bodies of the REST API.

use super::{Definitions, EventEntry, SegmentEntry};
use crate::domain::{live_event::ContentVersion, segments::Segment};
use crate::{catalog::views::rfc3339, domain::event_progress::Slot};
use bytes::Bytes;
use hotswap_client::{
    liveops::{ActiveOccurrence, EventDefinition, OverrideDefinition, SegmentDefinition},
    protocol::{self, HubMessage},
};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    pub name: String,
    /// `rule`, `list` or `builtIn` (a rule the hub defines).
    pub kind: String,
    pub description: String,
    #[schema(value_type = Option<Object>)]
    pub rule: Option<Value>,
    /// List segments: how many ids.
    pub members: Option<usize>,
    pub revision: i64,
    pub created_by: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl SegmentView {
    pub fn built_in(name: &str, rule: &str) -> SegmentView {
        SegmentView {
            name: name.to_owned(),
            kind: "builtIn".into(),
            description: match name {
                "vip" => "players whose spendTier is vip or whale",
                "new-players" => "players first seen within 7 days",
                _ => "players last seen more than 14 days ago",
            }
            .into(),
            rule: serde_json::from_str(rule).ok(),
            members: None,
            revision: 1,
            created_by: None,
            created_at: None,
            updated_at: None,
        }
    }
}

pub fn segment_view(entry: &SegmentEntry) -> SegmentView {
    let row = &entry.row;
    SegmentView {
        name: row.name.clone(),
        kind: row.kind.clone(),
        description: row.description.clone(),
        rule: row
            .rule
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        members: (row.kind == "list").then_some(entry.members),
        revision: row.revision,
        created_by: Some(row.created_by.clone()),
        created_at: Some(rfc3339(row.created_at)),
        updated_at: Some(rfc3339(row.updated_at)),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentList {
    pub items: Vec<SegmentView>,
}

/// One occurrence of an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceView {
    pub start: String,
    pub end: String,
    /// The region whose local time it follows (`regionLocal`); absent: all
    /// the event's regions.
    pub region: Option<String>,
    /// Started by an operator's `activate`.
    pub manual: bool,
}

pub fn occurrence_view(slot: &Slot) -> OccurrenceView {
    OccurrenceView {
        start: rfc3339(slot.start_ms),
        end: rfc3339(slot.end_ms),
        region: slot.region.clone(),
        manual: slot.manual,
    }
}

/// A live event: its definition (the fields it was created with) and where
/// it stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveEventView {
    pub id: String,
    pub name: String,
    pub revision: i64,
    /// `Scheduled`, `Active`, `Paused`, `Ended`, `Cancelled`, `RolledBack`.
    pub state: String,
    /// The occurrences in force.
    pub active: Vec<OccurrenceView>,
    /// How late the occurrences in force started, when they did (the hub
    /// was down at their start, or the event was created after it).
    pub late_ms: Option<i64>,
    /// The next occurrence to start, if any.
    pub next: Option<OccurrenceView>,
    /// Why its server-wide overrides cannot reach servers now (the hub
    /// retries every second), e.g. a config with no deployed revision.
    pub effect_error: Option<String>,
    /// The definition, as accepted.
    #[schema(value_type = Object)]
    pub definition: Value,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

pub fn event_view(entry: &EventEntry, now_ms: i64) -> LiveEventView {
    let timetable = entry.timetable();
    let next = timetable
        .slots(
            &entry.progress,
            now_ms,
            now_ms.saturating_add(366 * 86_400_000),
        )
        .into_iter()
        .find(|slot| slot.start_ms > now_ms);
    LiveEventView {
        id: entry.id.clone(),
        name: entry.name().to_owned(),
        revision: entry.revision,
        state: entry.progress.state.name().to_owned(),
        active: entry.applied.iter().map(occurrence_view).collect(),
        late_ms: (entry.late_ms > 0).then_some(entry.late_ms),
        next: next.as_ref().map(occurrence_view),
        effect_error: entry.effect_error.clone(),
        definition: entry.body.clone(),
        created_by: entry.created_by.clone(),
        created_at: rfc3339(entry.created_at),
        updated_at: rfc3339(entry.updated_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveEventList {
    pub items: Vec<LiveEventView>,
}

/// An occurrence in the timeline, with what it clashes with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub event: String,
    pub event_type: String,
    pub state: String,
    #[serde(flatten)]
    pub occurrence: OccurrenceView,
    /// Events overriding a path this one overrides, at the same time in a
    /// shared region.
    pub overlaps: Vec<OverlapView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlapView {
    pub event: String,
    pub config: String,
    /// A JSON Pointer both change.
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineView {
    pub from: String,
    pub to: String,
    pub items: Vec<TimelineEntry>,
    /// More occurrences than the answer holds fall in the window.
    pub truncated: bool,
}

/// One config as a player sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedConfigView {
    /// The base revision the layers apply to.
    pub base_revision: i64,
    #[schema(value_type = Object)]
    pub document: Value,
    /// SHA-256 of the document in RFC 8785 form, as servers verify.
    pub checksum: String,
    /// `base`, then `event:<name>` in the order applied.
    pub layers: Vec<String>,
    /// With `explain=true`: each path a layer set, and which.
    pub explain: Option<BTreeMap<String, String>>,
}

/// What a player sees.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlayerConfigView {
    pub player_id: String,
    /// The instant resolved for (now, or `at`).
    pub at: String,
    pub configs: BTreeMap<String, ResolvedConfigView>,
    /// The live events active for this player at that instant.
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPlayers {
    pub players: Vec<PlayerConfigView>,
}

/// The studios' `events/active` shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveEventsView {
    pub server_time: String,
    pub events: Vec<ActiveEventView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveEventView {
    /// The event's name.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub display_name: String,
    pub start_at: String,
    pub end_at: String,
    #[schema(value_type = Object)]
    pub rules: Value,
}

/// The `liveops` frame of the definitions: every segment (rules as given,
/// lists with their ids) and every event with the occurrences in force.
pub fn liveops_frame(revision: i64, definitions: &Definitions) -> Bytes {
    let segments = definitions
        .segments
        .values()
        .map(|entry| {
            let members = match definitions.book.get(&entry.row.name) {
                Some(Segment::List(ids)) => {
                    let mut ids: Vec<String> = ids.iter().cloned().collect();
                    ids.sort();
                    ids
                }
                _ => Vec::new(),
            };
            SegmentDefinition {
                name: entry.row.name.clone(),
                rule: entry
                    .row
                    .rule
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok()),
                members,
            }
        })
        .collect();
    let events = definitions
        .events
        .values()
        .map(|entry| EventDefinition {
            name: entry.name().to_owned(),
            priority: entry.spec.priority,
            regions: entry.spec.regions.clone(),
            segments: entry.spec.audience.segments.clone(),
            percentage: entry.spec.audience.percentage,
            content_version: match &entry.spec.content_version {
                ContentVersion::Any => None,
                ContentVersion::Required(need) => Some(need.to_string()),
            },
            overrides: entry
                .spec
                .overrides
                .iter()
                .map(|o| OverrideDefinition {
                    config: o.config.to_string(),
                    patch: o.patch.clone(),
                })
                .collect(),
            rules: entry.spec.rules.clone(),
            active: entry
                .applied
                .iter()
                .map(|slot| ActiveOccurrence {
                    start_ms: slot.start_ms,
                    end_ms: slot.end_ms,
                    region: slot.region.clone(),
                })
                .collect(),
        })
        .collect();
    let experiments = definitions
        .experiments
        .values()
        .filter(|e| e.status == crate::domain::experiments::spec::Status::Running)
        .map(|e| (*e.definition).clone())
        .collect();
    Bytes::from(protocol::encode(&HubMessage::LiveOps {
        revision,
        segments,
        events,
        experiments,
    }))
}

/// A live event's engagement (`GET /live-events/{name}/metrics`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngagementView {
    pub event: String,
    /// One per occurrence and region, oldest first.
    pub items: Vec<EngagementItem>,
    /// What players' telemetry says of the event since it was created.
    pub telemetry: TelemetryEngagement,
}

/// A live event in players' telemetry (events naming it by `event_id`),
/// over `from` .. `to` (since the event was created or its first
/// occurrence in force started, whichever is earlier; at most 92 days).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEngagement {
    pub from: String,
    pub to: String,
    /// Distinct players with an `event_participation`.
    pub participants: i64,
    pub joins: i64,
    pub progress: i64,
    pub completions: i64,
    /// `run_start` events with this `event_id`.
    pub runs: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngagementItem {
    /// The occurrence's scheduled start.
    pub occurrence: String,
    pub region: String,
    /// Sum of the custom counter `event.<name>.participants`.
    pub participants: f64,
    /// Participants ÷ sessions started on the covered servers (at most 1).
    pub participation_rate: Option<f64>,
    /// Sum of the custom counter `event.<name>.conversions`.
    pub conversions: f64,
    /// Purchases on the covered servers during the occurrence.
    pub purchases: u64,
    /// Sessions started on the covered servers during the occurrence.
    pub sessions: u64,
    /// Metrics frames folded in.
    pub reports: u64,
}
