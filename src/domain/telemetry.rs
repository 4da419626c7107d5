//! A telemetry batch parsed at the edge: the envelope (player, session,
//! versions, platform) and each event on its own, so one bad event is
//! refused with its index and reason and the rest go on. What needs the
//! taxonomy (the event type known, its payload against its JSON Schema) is
//! the caller's.

use super::document::depth;
use serde_json::Value;

/// Longest id (player, session, event).
pub const MAX_ID_CHARS: usize = 128;
/// Longest version or platform text.
pub const MAX_TEXT_CHARS: usize = 64;
/// Largest payload, as compact JSON.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;
/// Largest magnitude of a payload number: sums of squares over a million
/// players stay finite.
pub const MAX_PAYLOAD_NUMBER: f64 = 1e15;
/// Smallest magnitude of a non-zero payload number: squares stay normal
/// (PostgreSQL refuses an underflow).
pub const MIN_PAYLOAD_NUMBER: f64 = 1e-12;

/// The first payload number out of bounds, as its JSON Pointer.
fn number_out_of_bounds(value: &Value, at: &mut String) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_none_or(|x| {
            let x = x.abs();
            x > MAX_PAYLOAD_NUMBER || (x != 0.0 && x < MIN_PAYLOAD_NUMBER)
        }),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = at.len();
            at.push_str(&format!("/{i}"));
            let out = number_out_of_bounds(item, at);
            if !out {
                at.truncate(len);
            }
            out
        }),
        Value::Object(members) => members.iter().any(|(key, item)| {
            let len = at.len();
            at.push('/');
            at.push_str(&key.replace('~', "~0").replace('/', "~1"));
            let out = number_out_of_bounds(item, at);
            if !out {
                at.truncate(len);
            }
            out
        }),
        _ => false,
    }
}

/// Deepest payload.
pub const MAX_PAYLOAD_DEPTH: usize = 8;

/// The batch's envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub player_id: Option<String>,
    pub session_id: Option<String>,
    pub client_version: Option<String>,
    pub content_version: Option<String>,
    pub platform: Option<String>,
}

/// One event as sent, checked but for its type and payload schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: String,
    pub event_time_ms: i64,
    pub event_id: Option<String>,
    pub payload: Value,
    /// The payload as compact JSON, as stored.
    pub payload_json: String,
}

/// Why a batch or an event is refused (a JSON Pointer into the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: String,
    pub message: String,
}

fn refusal(path: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// An id: 1 to `max` printable characters.
pub fn valid_id(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

fn text(
    body: &serde_json::Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if valid_id(t, max) => Ok(Some(t.clone())),
        Some(_) => Err(refusal(
            &format!("/{key}"),
            format!("1 to {max} printable characters"),
        )),
    }
}

/// Reads the envelope and the list of events (each still JSON), at most
/// `max_events` of them.
pub fn parse_batch(body: Value, max_events: usize) -> Result<(Envelope, Vec<Value>), Refusal> {
    let Value::Object(mut object) = body else {
        return Err(refusal(
            "",
            "a batch is an object {playerId, sessionId, ..., events}",
        ));
    };
    const FIELDS: [&str; 6] = [
        "playerId",
        "sessionId",
        "clientVersion",
        "contentVersion",
        "platform",
        "events",
    ];
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(refusal(&format!("/{unknown}"), "unknown field"));
    }
    let envelope = Envelope {
        player_id: text(&object, "playerId", MAX_ID_CHARS)?,
        session_id: text(&object, "sessionId", MAX_ID_CHARS)?,
        client_version: text(&object, "clientVersion", MAX_TEXT_CHARS)?,
        content_version: text(&object, "contentVersion", MAX_TEXT_CHARS)?,
        platform: text(&object, "platform", MAX_TEXT_CHARS)?,
    };
    match object.remove("events") {
        Some(Value::Array(events)) if !events.is_empty() && events.len() <= max_events => {
            Ok((envelope, events))
        }
        _ => Err(refusal(
            "/events",
            format!("1 to {max_events} events [{{eventType, eventTime, payload, eventId}}]"),
        )),
    }
}

/// Reads one event; `now_ms` and the window bound its time: not before
/// `oldest_ms` (retention), not after `now_ms + max_future_ms`.
pub fn parse_event(
    value: Value,
    now_ms: i64,
    oldest_ms: i64,
    max_future_ms: i64,
) -> Result<Event, String> {
    let Value::Object(mut object) = value else {
        return Err("an event is an object {eventType, eventTime, payload, eventId}".into());
    };
    if let Some(unknown) = object.keys().find(|k| {
        !matches!(
            k.as_str(),
            "eventType" | "eventTime" | "payload" | "eventId"
        )
    }) {
        return Err(format!("unknown field {unknown:?}"));
    }
    let event_type = object
        .get("eventType")
        .and_then(Value::as_str)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 64
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        .ok_or("eventType: a registered event type's name")?
        .to_owned();
    let event_time_ms = object
        .get("eventTime")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .ok_or("eventTime: an RFC 3339 time like 2026-12-03T10:00:00Z")?;
    if event_time_ms > now_ms.saturating_add(max_future_ms) {
        return Err(format!(
            "eventTime is {} s ahead of the hub's clock (at most {} s): fix the client's clock",
            (event_time_ms - now_ms) / 1000,
            max_future_ms / 1000
        ));
    }
    if event_time_ms < oldest_ms {
        return Err("eventTime is older than the retention window: not kept".into());
    }
    let event_id = match object.get("eventId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if valid_id(id, MAX_ID_CHARS) => Some(id.clone()),
        Some(_) => return Err(format!("eventId: 1 to {MAX_ID_CHARS} printable characters")),
    };
    let payload = match object.remove("payload") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(payload @ Value::Object(_)) => payload,
        Some(_) => return Err("payload: an object".into()),
    };
    if depth(&payload) > MAX_PAYLOAD_DEPTH {
        return Err(format!("payload: nested at most {MAX_PAYLOAD_DEPTH} deep"));
    }
    let mut at = String::new();
    if number_out_of_bounds(&payload, &mut at) {
        return Err(format!(
            "payload{at}: numbers are 0 or between {MIN_PAYLOAD_NUMBER:e} and {MAX_PAYLOAD_NUMBER:e} in magnitude"
        ));
    }
    let payload_json = payload.to_string();
    let bytes = payload_json.len();
    if bytes > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload: at most {MAX_PAYLOAD_BYTES} bytes as JSON ({bytes} given)"
        ));
    }
    Ok(Event {
        event_type,
        event_time_ms,
        event_id,
        payload,
        payload_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_796_000_000_000;

    fn event(change: impl FnOnce(&mut Value)) -> Result<Event, String> {
        let mut value = json!({
            "eventType": "run_end",
            "eventTime": "2026-11-29T10:00:00Z",
            "eventId": "e-1",
            "payload": {"run_id": "r1", "outcome": "win"}
        });
        change(&mut value);
        parse_event(value, NOW, NOW - 30 * 86_400_000, 300_000)
    }

    #[test]
    fn an_event_reads_and_each_fault_names_itself() {
        let read = event(|_| {}).unwrap();
        assert_eq!(read.event_type, "run_end");
        assert_eq!(read.event_id.as_deref(), Some("e-1"));
        assert!(
            event(|e| e["eventTime"] = json!("2027-06-01T00:00:00Z"))
                .unwrap_err()
                .contains("ahead")
        );
        assert!(
            event(|e| e["eventTime"] = json!("2020-01-01T00:00:00Z"))
                .unwrap_err()
                .contains("retention")
        );
        assert!(
            event(|e| e["eventTime"] = json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(
            event(|e| e["eventType"] = json!("drop table"))
                .unwrap_err()
                .contains("eventType")
        );
        assert!(
            event(|e| e["payload"] = json!([1]))
                .unwrap_err()
                .contains("payload")
        );
        assert!(
            event(|e| e["payload"] = json!({"x": "y".repeat(9000)}))
                .unwrap_err()
                .contains("bytes")
        );
        assert!(
            event(|e| e["eventId"] = json!(""))
                .unwrap_err()
                .contains("eventId")
        );
        let huge = event(|e| e["payload"] = json!({"run_id": "r1", "deep": {"amount": 1e300}}));
        assert!(huge.unwrap_err().contains("payload/deep/amount"));
        let tiny = event(|e| e["payload"] = json!({"x": [0, -1e-200]}));
        assert!(tiny.unwrap_err().contains("payload/x/1"));
        assert!(event(|e| e["payload"] = json!({"x": [0, -2.5e14, 1e-6]})).is_ok());
        assert!(
            event(|e| e["extra"] = json!(1))
                .unwrap_err()
                .contains("unknown")
        );
    }

    #[test]
    fn the_envelope_is_bounded() {
        let body = json!({"playerId": "p1", "events": [{}]});
        let (envelope, events) = parse_batch(body, 10).unwrap();
        assert_eq!(envelope.player_id.as_deref(), Some("p1"));
        assert_eq!(events.len(), 1);
        assert_eq!(
            parse_batch(json!({"events": []}), 10).unwrap_err().path,
            "/events"
        );
        let many = json!({"events": vec![json!({}); 11]});
        assert_eq!(parse_batch(many, 10).unwrap_err().path, "/events");
        assert_eq!(
            parse_batch(json!({"playerId": "", "events": [{}]}), 10)
                .unwrap_err()
                .path,
            "/playerId"
        );
        assert_eq!(
            parse_batch(json!({"who": 1, "events": [{}]}), 10)
                .unwrap_err()
                .path,
            "/who"
        );
    }
}
