//! A live event's definition, parsed at the edge into bounded types, and
//! the overlap rule: two events clash when their occurrences overlap in
//! time and region and they override the same path of the same config.
//!
//! What needs the store or the settings (the `rules` against the
//! `LiveEvent` schema, each patch on top of its config's current
//! revision, the regions' time zones, segment names) is checked by the
//! caller with the parsed value.

use super::{
    document::depth,
    names::Slug,
    resolution::Audience,
    schedule::{Occurrence, Schedule},
};
use serde_json::Value;
use std::collections::BTreeSet;

/// Most configs one event overrides.
pub const MAX_OVERRIDES: usize = 32;
/// Most regions an event names.
pub const MAX_REGIONS: usize = 64;
/// Largest patch, as compact JSON.
pub const MAX_PATCH_BYTES: usize = 64 * 1024;
/// Deepest patch.
pub const MAX_PATCH_DEPTH: usize = 32;
/// Most segments an audience names.
pub const MAX_AUDIENCE_SEGMENTS: usize = 32;

/// What kind of event it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    SeasonalPromotion,
    LimitedTimeOffer,
    Tournament,
    Season,
    ContentRelease,
    Retention,
}

impl EventType {
    pub const ALL: [(&'static str, EventType); 6] = [
        ("SeasonalPromotion", EventType::SeasonalPromotion),
        ("LimitedTimeOffer", EventType::LimitedTimeOffer),
        ("Tournament", EventType::Tournament),
        ("Season", EventType::Season),
        ("ContentRelease", EventType::ContentRelease),
        ("Retention", EventType::Retention),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(name, _)| *name)
            .expect("every type is listed")
    }
}

/// One config an event changes, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub config: Slug,
    /// A JSON Merge Patch (RFC 7396): an object.
    pub patch: Value,
}

/// The content a client needs for the event: any, or a semver requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentVersion {
    Any,
    Required(semver::VersionReq),
}

/// A parsed live event.
#[derive(Debug, Clone)]
pub struct LiveEventSpec {
    pub name: Slug,
    pub display_name: String,
    pub event_type: EventType,
    /// Free JSON the `LiveEvent` schema checks.
    pub rules: Value,
    pub overrides: Vec<Override>,
    pub schedule: Schedule,
    /// Upper-case region names; none: every region (not with `regionLocal`).
    pub regions: Vec<String>,
    pub audience: Audience,
    /// Lower applies first; a higher priority's patch wins.
    pub priority: i64,
    pub content_version: ContentVersion,
    /// Created even when it clashes with another event.
    pub allow_overlap: bool,
    /// How long before each start servers hear `preview` (0: no preview).
    pub preview_lead_ms: i64,
    /// How long before each end servers hear `endingSoon` (0: none).
    pub ending_soon_lead_ms: i64,
}

/// What is wrong, and where (a JSON Pointer into the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.into(),
    }
}

const FIELDS: [&str; 15] = [
    "name",
    "displayName",
    "eventType",
    "rules",
    "overrides",
    "schedule",
    "regions",
    "audience",
    "priority",
    "contentVersion",
    "allowOverlap",
    "guardrails",
    "rollout",
    "previewLead",
    "endingSoonLead",
];

fn string<'a>(body: &'a Value, key: &str, max: usize) -> Result<Option<&'a str>, FieldError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() && text.chars().count() <= max => {
            Ok(Some(text))
        }
        Some(_) => Err(error(
            &format!("/{key}"),
            format!("a text of 1 to {max} characters"),
        )),
    }
}

impl LiveEventSpec {
    /// Reads a `POST /live-events` body. `guardrails` and `rollout` are
    /// the caller's (they follow the deployments' rules).
    pub fn parse(body: &Value) -> Result<LiveEventSpec, FieldError> {
        let Some(object) = body.as_object() else {
            return Err(error("", "a live event is an object"));
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(error(&format!("/{unknown}"), "unknown field"));
        }
        let name =
            string(body, "name", Slug::MAX_LEN)?.ok_or_else(|| error("/name", "required"))?;
        let name = Slug::parse(name).map_err(|e| error("/name", e.to_string()))?;
        let display_name = string(body, "displayName", 128)?
            .unwrap_or(name.as_str())
            .to_owned();
        if display_name.chars().any(char::is_control) {
            return Err(error("/displayName", "no control characters"));
        }
        let event_type =
            string(body, "eventType", 64)?.ok_or_else(|| error("/eventType", "required"))?;
        let event_type = EventType::ALL
            .iter()
            .find(|(text, _)| *text == event_type)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<&str> = EventType::ALL.iter().map(|(n, _)| *n).collect();
                error("/eventType", format!("one of {}", names.join(", ")))
            })?;
        let rules = match body.get("rules") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(rules @ Value::Object(_)) => rules.clone(),
            Some(_) => return Err(error("/rules", "an object")),
        };
        let overrides = parse_overrides(body.get("overrides"))?;
        let schedule = body
            .get("schedule")
            .ok_or_else(|| error("/schedule", "required"))?;
        let schedule = Schedule::parse(schedule).map_err(|e| FieldError {
            path: format!("/schedule{}", e.path),
            message: e.message,
        })?;
        let regions = parse_regions(body.get("regions"))?;
        if matches!(schedule.zone, super::schedule::Zone::RegionLocal) && regions.is_empty() {
            return Err(error(
                "/regions",
                "a regionLocal schedule needs the regions whose local time it follows",
            ));
        }
        let audience = parse_audience(body.get("audience"))?;
        let priority = match body.get("priority") {
            None | Some(Value::Null) => 0,
            Some(value) => value
                .as_i64()
                .filter(|p| (-1000..=1000).contains(p))
                .ok_or_else(|| error("/priority", "an integer from -1000 to 1000"))?,
        };
        let content_version = match string(body, "contentVersion", 128)? {
            None | Some("*") => ContentVersion::Any,
            Some(requirement) => {
                ContentVersion::Required(semver::VersionReq::parse(requirement).map_err(|e| {
                    error(
                        "/contentVersion",
                        format!("`*` or a semver requirement: {e}"),
                    )
                })?)
            }
        };
        let allow_overlap = match body.get("allowOverlap") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(allow)) => *allow,
            Some(_) => return Err(error("/allowOverlap", "true or false")),
        };
        let lead = |key: &str| -> Result<i64, FieldError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(0),
                Some(value) => super::rollout::parse_duration(value)
                    .map(|ms| ms as i64)
                    .map_err(|why| error(&format!("/{key}"), why)),
            }
        };
        let preview_lead_ms = lead("previewLead")?;
        let ending_soon_lead_ms = lead("endingSoonLead")?;
        Ok(LiveEventSpec {
            name,
            display_name,
            event_type,
            rules,
            overrides,
            schedule,
            regions,
            audience,
            priority,
            content_version,
            allow_overlap,
            preview_lead_ms,
            ending_soon_lead_ms,
        })
    }
}

pub(crate) fn parse_overrides(value: Option<&Value>) -> Result<Vec<Override>, FieldError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_OVERRIDES => list,
        Some(_) => {
            return Err(error(
                "/overrides",
                format!("a list of at most {MAX_OVERRIDES} {{config, patch}}"),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut overrides = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let at = format!("/overrides/{index}");
        let Some(object) = item.as_object() else {
            return Err(error(&at, "an object {config, patch}"));
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "config" | "patch"))
        {
            return Err(error(&format!("{at}/{unknown}"), "unknown field"));
        }
        let config = object
            .get("config")
            .and_then(Value::as_str)
            .ok_or_else(|| error(&format!("{at}/config"), "required: a config name"))?;
        let config =
            Slug::parse(config).map_err(|e| error(&format!("{at}/config"), e.to_string()))?;
        if !seen.insert(config.clone()) {
            return Err(error(
                &format!("{at}/config"),
                format!("{config} is overridden twice; merge the patches"),
            ));
        }
        let patch = match object.get("patch") {
            Some(patch @ Value::Object(map)) if !map.is_empty() => patch,
            _ => {
                return Err(error(
                    &format!("{at}/patch"),
                    "a non-empty JSON Merge Patch object",
                ));
            }
        };
        if depth(patch) > MAX_PATCH_DEPTH {
            return Err(error(
                &format!("{at}/patch"),
                format!("nested at most {MAX_PATCH_DEPTH} deep"),
            ));
        }
        let bytes = serde_json::to_vec(patch)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if bytes > MAX_PATCH_BYTES {
            return Err(error(
                &format!("{at}/patch"),
                format!("at most {MAX_PATCH_BYTES} bytes as JSON ({bytes} given)"),
            ));
        }
        overrides.push(Override {
            config,
            patch: patch.clone(),
        });
    }
    Ok(overrides)
}

fn parse_regions(value: Option<&Value>) -> Result<Vec<String>, FieldError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_REGIONS => list,
        Some(_) => {
            return Err(error(
                "/regions",
                format!("a list of at most {MAX_REGIONS} regions"),
            ));
        }
    };
    let mut regions: Vec<String> = Vec::with_capacity(list.len());
    for (index, region) in list.iter().enumerate() {
        let valid = region.as_str().filter(|r| {
            !r.is_empty()
                && r.len() <= 64
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
        let Some(region) = valid else {
            return Err(error(
                &format!("/regions/{index}"),
                "1-64 letters, digits, '-' or '_'",
            ));
        };
        let region = region.to_ascii_uppercase();
        if !regions.contains(&region) {
            regions.push(region);
        }
    }
    Ok(regions)
}

pub(crate) fn parse_audience(value: Option<&Value>) -> Result<Audience, FieldError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Audience::default()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(error("/audience", "an object {segments, percentage}")),
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "segments" | "percentage"))
    {
        return Err(error(&format!("/audience/{unknown}"), "unknown field"));
    }
    let segments = match object.get("segments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_AUDIENCE_SEGMENTS => list
            .iter()
            .enumerate()
            .map(|(index, name)| {
                name.as_str()
                    .and_then(|n| Slug::parse(n).ok())
                    .map(|s| s.as_str().to_owned())
                    .ok_or_else(|| error(&format!("/audience/segments/{index}"), "a segment name"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(error(
                "/audience/segments",
                format!("a list of at most {MAX_AUDIENCE_SEGMENTS} segment names"),
            ));
        }
    };
    let percentage = match object.get("percentage") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| error("/audience/percentage", "a number from 0 to 100"))?,
        ),
    };
    Ok(Audience {
        segments,
        percentage,
    })
}

/// Every path a merge patch sets or removes (its leaves), as JSON Pointers.
pub fn patch_paths(patch: &Value) -> Vec<String> {
    fn walk(value: &Value, at: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let at = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                    walk(child, &at, found);
                }
            }
            _ => found.push(at.to_owned()),
        }
    }
    let mut found = Vec::new();
    walk(patch, "", &mut found);
    found
}

/// A path both events' overrides change (`(config, pointer)`: the same
/// path, or the shorter of two nested ones), the first found. Sorted sets:
/// `n log n` in the patches' leaves, not `n²`.
pub fn shared_path(a: &[Override], b: &[Override]) -> Option<(String, String)> {
    for left in a {
        let Some(right) = b.iter().find(|o| o.config == left.config) else {
            continue;
        };
        let theirs: BTreeSet<String> = patch_paths(&right.patch).into_iter().collect();
        for path in patch_paths(&left.patch) {
            // The same path, or one of its ancestors, is theirs.
            let mut at = path.as_str();
            loop {
                if theirs.contains(at) {
                    return Some((left.config.to_string(), at.to_owned()));
                }
                match at.rfind('/') {
                    Some(cut) if cut > 0 => at = &at[..cut],
                    _ => break,
                }
            }
            // One of its descendants is theirs.
            let below = format!("{path}/");
            if theirs
                .range(below.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&below))
            {
                return Some((left.config.to_string(), path));
            }
        }
    }
    None
}

/// Whether two occurrences run at once in a region both reach (`None`
/// region: every region of its event; `regions` empty: everywhere).
pub fn occurrences_clash(
    a: &Occurrence,
    a_regions: &[String],
    b: &Occurrence,
    b_regions: &[String],
) -> bool {
    let in_time = a.start < b.end && b.start < a.end;
    let reach = |o: &Occurrence, regions: &[String]| -> Option<Vec<String>> {
        match (&o.region, regions.is_empty()) {
            (Some(region), _) => Some(vec![region.clone()]),
            (None, true) => None,
            (None, false) => Some(regions.to_vec()),
        }
    };
    let in_place = match (reach(a, a_regions), reach(b, b_regions)) {
        (Some(x), Some(y)) => x.iter().any(|r| y.contains(r)),
        _ => true,
    };
    in_time && in_place
}

#[cfg(test)]
mod tests;
