//! Telemetry: the event-type taxonomy (a JSON Schema per type, seeded with
//! the studios' types) and batch ingestion. A batch is parsed at the edge
//! (`domain::telemetry`), each event checked on its own against its type's
//! schema (one bad event is refused with its index and reason; the rest go
//! on), then queued to the writers behind a bounded budget of events: when
//! it is spent the batch is answered 503 with `Retry-After`. A batch is
//! answered once its events are committed: accepted means stored.
//!
//! # Layout
//! - `mod.rs`: [`Telemetry`], the taxonomy, ingestion.
//! - `writer.rs`: the writer tasks (batches of queued events in one
//!   statement; PostgreSQL's daily partitions made before they are
//!   written), and retention.

pub mod kpis;
mod writer;

use crate::{
    catalog::Actor,
    domain::{
        telemetry::{Envelope, parse_batch, parse_event},
        validation::{self, CompiledRules, SchemaRef},
    },
    settings::TelemetrySettings,
    store::{Store, StoreError, audit, telemetry as store},
};
use hotswap_client::sync::{read, write};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};
use tokio::sync::Semaphore;

/// The studios' event types, registered at first start.
const BUILTIN_TYPES: &str = include_str!("../../config/telemetry/event-types.json");

/// Why telemetry refused a request.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{message}")]
    Invalid { path: String, message: String },
    #[error("the telemetry queue is full; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    #[error("the events were not stored: {0}; retry the batch (event ids make it safe)")]
    NotStored(String),
    #[error("telemetry event type {0:?} does not exist")]
    TypeNotFound(String),
    #[error("the event type changed meanwhile; read it and retry")]
    Conflict,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(path: &str, message: impl Into<String>) -> TelemetryError {
    TelemetryError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A registered event type.
#[derive(Debug)]
pub struct EventType {
    pub row: store::EventTypeRow,
    pub schema: Value,
    rules: CompiledRules,
}

/// `PUT /telemetry/event-types/{name}` and `POST /telemetry/event-types`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTypeRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A JSON Schema (2020-12) for the payload.
    #[schema(value_type = Object)]
    pub schema: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeView {
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub schema: Value,
    pub builtin: bool,
    pub revision: i64,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeList {
    pub items: Vec<EventTypeView>,
}

/// One refused event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// The answer to a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchAnswer {
    /// Events stored (an event already stored under its id counts: a
    /// retry is accepted again, and stored once).
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

/// Who sends a batch: a game server's key (the body names the player) or
/// a player's token (the token names it).
#[derive(Debug, Clone)]
pub enum Sender {
    Server,
    /// The token's player, and the attributes the token vouches for.
    Player(String, Option<Arc<serde_json::Map<String, Value>>>),
}

/// A batch just stored, as live ops hear of it.
#[derive(Debug)]
pub struct Stored<'a> {
    pub player: &'a str,
    pub envelope: &'a Envelope,
    /// The batch's earliest accepted event's time.
    pub earliest_ms: i64,
    /// The kept attributes of the players the write touched, as they now
    /// stand (this batch's player and others written with it).
    pub kept: &'a [store::PlayerRow],
    /// What the sender's player token vouches for.
    pub vouched: Option<&'a serde_json::Map<String, Value>>,
}

/// Hears of every batch stored (experiments' exposures, kept attributes).
pub type StoredSink = Box<dyn Fn(&Stored<'_>) + Send + Sync>;

/// Telemetry on this hub.
pub struct Telemetry {
    store: Store,
    settings: TelemetrySettings,
    types: RwLock<Arc<BTreeMap<String, Arc<EventType>>>>,
    /// The queue's budget, in events.
    budget: Arc<Semaphore>,
    queue: writer::Queue,
    stored: RwLock<Option<StoredSink>>,
    /// One type change at a time.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn view(event_type: &EventType) -> EventTypeView {
    EventTypeView {
        name: event_type.row.name.clone(),
        description: event_type.row.description.clone(),
        schema: event_type.schema.clone(),
        builtin: event_type.row.builtin != 0,
        revision: event_type.row.revision,
        updated_at: crate::catalog::views::rfc3339(event_type.row.updated_at),
    }
}

fn compiled(row: store::EventTypeRow) -> Result<EventType, String> {
    let schema: Value = serde_json::from_str(&row.schema).map_err(|e| e.to_string())?;
    let rules = validation::compile(&schema).map_err(|e| e.to_string())?;
    Ok(EventType { row, schema, rules })
}

fn check_type_name(name: &str) -> Result<(), TelemetryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid("/name", "1 to 64 letters, digits, '_', '-' or '.'"))
    }
}

impl Telemetry {
    /// Registers the built-in types a store lacks, reads the taxonomy and
    /// starts the writers and retention (on the current runtime).
    pub async fn start(store: Store, settings: TelemetrySettings) -> anyhow::Result<Arc<Self>> {
        let builtin: Vec<Value> = serde_json::from_str(BUILTIN_TYPES)?;
        let mut conn = store.conn().await?;
        let known: Vec<String> = store::event_types(&mut conn)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        drop(conn);
        for entry in builtin {
            let name = entry["name"].as_str().unwrap_or_default().to_owned();
            if known.contains(&name) {
                continue;
            }
            let now = crate::store::now_ms();
            let row = store::EventTypeRow {
                name,
                description: entry["description"].as_str().unwrap_or_default().to_owned(),
                schema: entry["schema"].to_string(),
                builtin: 1,
                revision: 1,
                created_by: "system".into(),
                created_at: now,
                updated_at: now,
            };
            let mut tx = store.begin().await?;
            store::put_event_type(&mut tx, &row).await?;
            tx.commit().await?;
        }
        let mut conn = store.conn().await?;
        let mut types = BTreeMap::new();
        for row in store::event_types(&mut conn).await? {
            let name = row.name.clone();
            match compiled(row) {
                Ok(compiled) => {
                    types.insert(name, Arc::new(compiled));
                }
                Err(error) => {
                    tracing::error!(event_type = %name, %error, "a stored event type's schema does not compile; its events are refused");
                }
            }
        }
        drop(conn);
        let budget = Arc::new(Semaphore::new(settings.queue_events.max(1)));
        let queue = writer::start(store.clone(), &settings);
        Ok(Arc::new(Telemetry {
            store,
            settings,
            types: RwLock::new(Arc::new(types)),
            budget,
            queue,
            stored: RwLock::new(None),
            writes: tokio::sync::Mutex::new(()),
        }))
    }

    /// Tells live ops of each batch stored (experiments' exposures,
    /// players' kept attributes).
    pub fn set_stored_sink(&self, sink: StoredSink) {
        *write(&self.stored) = Some(sink);
    }

    /// Whether a type is registered.
    pub fn has_type(&self, name: &str) -> bool {
        read(&self.types).contains_key(name)
    }

    pub fn event_types(&self) -> EventTypeList {
        EventTypeList {
            items: read(&self.types).values().map(|t| view(t)).collect(),
        }
    }

    pub fn event_type(&self, name: &str) -> Result<EventTypeView, TelemetryError> {
        read(&self.types)
            .get(name)
            .map(|t| view(t))
            .ok_or_else(|| TelemetryError::TypeNotFound(name.to_owned()))
    }

    /// Registers a type, or replaces one's schema and description
    /// (built-in ones included: the studio owns its taxonomy). Events
    /// already stored are kept as they are.
    pub async fn put_event_type(
        &self,
        actor: &Actor,
        request: EventTypeRequest,
    ) -> Result<(EventTypeView, bool), TelemetryError> {
        check_type_name(&request.name)?;
        if request.description.chars().count() > 1024 {
            return Err(invalid("/description", "at most 1024 characters"));
        }
        let text = request.schema.to_string();
        if text.len() > 64 * 1024 {
            return Err(invalid("/schema", "at most 64 KiB as JSON"));
        }
        // Every event's payload is an object: a schema for anything else
        // would refuse them all.
        if request.schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "/schema/type",
                "\"object\": an event's payload is a JSON object",
            ));
        }
        let rules = validation::compile(&request.schema).map_err(|e| TelemetryError::Invalid {
            path: format!("/schema{}", e.path),
            message: e.message,
        })?;
        let _writing = self.writes.lock().await;
        let current = read(&self.types).get(&request.name).cloned();
        let now = crate::store::now_ms();
        let row = store::EventTypeRow {
            name: request.name.clone(),
            description: request.description,
            schema: text,
            builtin: current.as_ref().map_or(0, |c| c.row.builtin),
            revision: current.as_ref().map_or(1, |c| c.row.revision + 1),
            created_by: current
                .as_ref()
                .map_or_else(|| actor.subject.clone(), |c| c.row.created_by.clone()),
            created_at: current.as_ref().map_or(now, |c| c.row.created_at),
            updated_at: now,
        };
        let mut tx = self.store.begin().await?;
        if !store::put_event_type(&mut tx, &row).await? {
            return Err(TelemetryError::Conflict);
        }
        audit::record(
            &mut tx,
            actor.audit_entry(
                if current.is_some() {
                    "telemetry.event-type.update"
                } else {
                    "telemetry.event-type.create"
                },
                format!("telemetry/event-types/{}", row.name),
                json!({"revision": row.revision}),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let created = current.is_none();
        let entry = Arc::new(EventType {
            schema: request.schema,
            rules,
            row,
        });
        let answer = view(&entry);
        let mut types = write(&self.types);
        let mut next = (**types).clone();
        next.insert(request.name, entry);
        *types = Arc::new(next);
        Ok((answer, created))
    }

    /// Takes a batch: each event checked on its own, the good ones stored
    /// before the answer.
    pub async fn ingest(&self, sender: Sender, body: Value) -> Result<BatchAnswer, TelemetryError> {
        let (mut envelope, events) = parse_batch(body, self.settings.max_batch_events)
            .map_err(|r| invalid(&r.path, r.message))?;
        let player = match (&sender, &envelope.player_id) {
            (Sender::Player(id, _), None) => id.clone(),
            (Sender::Player(id, _), Some(named)) if named == id => id.clone(),
            (Sender::Player(..), Some(_)) => {
                return Err(TelemetryError::Forbidden(
                    "a player token sends its own player's telemetry: leave playerId out".into(),
                ));
            }
            (Sender::Server, Some(named)) => named.clone(),
            (Sender::Server, None) => {
                return Err(invalid(
                    "/playerId",
                    "required when a game server sends the batch",
                ));
            }
        };
        envelope.player_id = Some(player.clone());
        let now = crate::store::now_ms();
        let oldest =
            (store::day_of(now) - i64::from(self.settings.retention_days) + 1) * store::DAY_MS;
        let types = read(&self.types).clone();
        let mut rows = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (index, value) in events.into_iter().enumerate() {
            let event = match parse_event(value, now, oldest, self.settings.max_future_ms) {
                Ok(event) => event,
                Err(reason) => {
                    rejected.push(Rejected { index, reason });
                    continue;
                }
            };
            // A purchase is the economy's word, not a client's: it would
            // buy the player a place in spenders' segments and count in
            // revenue.
            if matches!(sender, Sender::Player(..)) && event.event_type == "purchase" {
                rejected.push(Rejected {
                    index,
                    reason: "purchase events come from the game's servers (an API key), not a player's token"
                        .into(),
                });
                continue;
            }
            let Some(event_type) = types.get(&event.event_type) else {
                rejected.push(Rejected {
                    index,
                    reason: format!(
                        "unknown event type {:?}: register it at /api/v1/telemetry/event-types",
                        event.event_type
                    ),
                });
                continue;
            };
            let schema = SchemaRef {
                id: &event.event_type,
                version: "",
                rules: &event_type.rules,
            };
            match validation::validate(Some(schema), &event.payload, None, &[]) {
                Ok(report) if report.valid => {}
                Ok(report) => {
                    let issue = report.errors.first();
                    rejected.push(Rejected {
                        index,
                        reason: format!(
                            "payload{}: {}",
                            issue.map(|i| i.path.as_str()).unwrap_or(""),
                            issue.map(|i| i.message.as_str()).unwrap_or("invalid")
                        ),
                    });
                    continue;
                }
                Err(_) => {
                    rejected.push(Rejected {
                        index,
                        reason: "payload: too costly to validate".into(),
                    });
                    continue;
                }
            }
            rows.push(store::EventRow {
                d: store::day_of(event.event_time_ms),
                p: player.clone(),
                i: event
                    .event_id
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                ty: event.event_type,
                tm: event.event_time_ms,
                r: now,
                s: envelope.session_id.clone(),
                cv: envelope.client_version.clone(),
                ctv: envelope.content_version.clone(),
                pf: envelope.platform.clone(),
                pl: event.payload_json,
            });
        }
        let accepted = rows.len();
        let earliest = rows.iter().map(|r| r.tm).min();
        if let Some(earliest) = earliest {
            let permits = u32::try_from(accepted).unwrap_or(u32::MAX);
            let permit = self
                .budget
                .clone()
                .try_acquire_many_owned(permits)
                .map_err(|_| TelemetryError::Busy {
                    retry_after_secs: 1,
                })?;
            let kept = self
                .queue
                .write(rows, permit)
                .await
                .map_err(TelemetryError::NotStored)?;
            if let Some(sink) = read(&self.stored).as_ref() {
                sink(&Stored {
                    player: &player,
                    envelope: &envelope,
                    earliest_ms: earliest,
                    kept: &kept,
                    vouched: match &sender {
                        Sender::Player(_, vouched) => vouched.as_deref(),
                        Sender::Server => None,
                    },
                });
            }
        }
        Ok(BatchAnswer { accepted, rejected })
    }

    /// Events accepted and not yet stored.
    pub fn queued(&self) -> usize {
        self.settings.queue_events.max(1) - self.budget.available_permits()
    }

    /// What telemetry keeps of a player (segments' `firstSeen`...).
    pub async fn player(
        &self,
        player_id: &str,
    ) -> Result<Option<store::PlayerRow>, TelemetryError> {
        let mut conn = self.store.conn().await?;
        Ok(store::player(&mut conn, player_id).await?)
    }

    /// Removes events past retention (whole days).
    pub async fn expire(&self) -> Result<u64, TelemetryError> {
        let first_kept =
            store::day_of(crate::store::now_ms()) - i64::from(self.settings.retention_days) + 1;
        let mut conn = self.store.conn().await?;
        Ok(store::expire(&mut conn, self.store.backend(), first_kept).await?)
    }

    /// Creates today's and the next two days' partitions ahead of the
    /// writers (PostgreSQL), so that the write path seldom waits on DDL.
    pub async fn prepare_days(&self) -> Result<(), TelemetryError> {
        let today = store::day_of(crate::store::now_ms());
        let mut conn = self.store.conn().await?;
        store::ensure_days(
            &mut conn,
            self.store.backend(),
            &[today, today + 1, today + 2],
        )
        .await?;
        Ok(())
    }

    /// Runs retention every hour (and once at start), and creates the
    /// coming days' partitions.
    pub fn start_retention(self: &Arc<Self>) {
        let telemetry = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let Some(telemetry) = telemetry.upgrade() else {
                    return;
                };
                if let Err(error) = telemetry.prepare_days().await {
                    tracing::warn!(%error, "telemetry partitions not prepared; the writers create them");
                }
                match telemetry.expire().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "telemetry past retention removed"),
                    Err(error) => {
                        tracing::warn!(%error, "telemetry retention failed; retried in an hour")
                    }
                }
            }
        });
    }
}
