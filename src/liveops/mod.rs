//! Live ops: segments, live events (one actor each) and what each player
//! sees. Definitions live in memory (`Definitions`, swapped whole on each
//! change, read without holding a lock), written through `store/` first.
//!
//! **Architecture invariant:** an event's state is committed before its
//! effect: its actor writes the progress and the occurrences it starts or
//! ends, then publishes the new definitions. Player resolution reads only
//! memory.
//!
//! # Layout
//! - `mod.rs`: [`LiveOps`], its errors, loading at start-up.
//! - `segments.rs`: segments (rules, id lists): create, change, delete.
//! - `events.rs`: live events: create, revise, delete, operators' controls,
//!   the timeline and its overlaps.
//! - `actor.rs`: the driver of one event's actor (timers, transitions).
//! - `effects.rs`: what an event does to servers: server-wide overrides as
//!   deployments of derived versions, `event` frames.
//! - `players.rs`: what a player sees: resolved configs, active events.
//! - `engagement.rs`: participants, conversions, purchases and sessions
//!   per occurrence and region, from the servers' metrics frames.
//! - `views.rs`: response bodies.

mod actor;
mod cluster;
mod effects;
mod engagement;
mod events;
pub mod experiments;
mod kept;
mod manifest;
mod players;
mod segments;
pub mod views;

pub use kept::KEPT as KEPT_ATTRIBUTES;
pub use manifest::{ManifestQuery, ManifestView};
pub use players::{MAX_PLAYERS, PlayerRequest, ResolveRequest, attribute_value};
pub use segments::{MembersRequest, SegmentRequest};

use crate::{
    catalog::{Catalog, CatalogError},
    domain::{
        event_progress::{EventState, Progress, Slot, Timetable, Window},
        live_event::LiveEventSpec,
        schedule::parse_zone,
        segments::SegmentBook,
    },
    hub::Hub,
    settings::LiveOpsSettings,
    store::{Store, StoreError, live_ops as store},
};
use chrono_tz::Tz;
use hotswap_actors::{Clock, LiveEventHandle};
use hotswap_client::sync::{lock, read, write};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
};

/// Why a live-ops operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LiveOpsError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("live event {0:?} does not exist")]
    EventNotFound(String),
    #[error("segment {0:?} does not exist")]
    SegmentNotFound(String),
    #[error("a live event named {0:?} exists or existed; names are never reused")]
    EventExists(String),
    #[error("a segment named {0:?} exists")]
    SegmentExists(String),
    #[error(
        "{config}{path} is also changed by live event {other:?} at the same time \
         (from {at}) in a shared region; send allowOverlap: true to create it anyway"
    )]
    Overlap {
        other: String,
        config: String,
        path: String,
        at: String,
    },
    #[error("the event is {state}: {reason}")]
    InvalidTransition { state: &'static str, reason: String },
    #[error("segment {segment:?} is used by {events:?}")]
    SegmentInUse {
        segment: String,
        events: Vec<String>,
    },
    #[error("override {index}'s patch breaks config {config:?} ({} errors)", .report.errors.len())]
    PatchInvalid {
        index: usize,
        config: String,
        report: Box<crate::domain::validation::ValidationReport>,
    },
    #[error("the live event's actor has stopped; retry")]
    Stopped,
    /// In a cluster: the node driving the event did not answer, or this
    /// node no longer drives it.
    #[error("{0}")]
    Elsewhere(String),
    /// Carrying an override to servers failed (a deployment refused).
    #[error("the event's effect on servers failed: {0}")]
    Effect(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("experiment {0:?} does not exist")]
    ExperimentNotFound(String),
    #[error("an experiment named {0:?} exists or existed; names are never reused")]
    ExperimentExists(String),
    #[error(
        "experiment {other:?} is running (or paused) on config {config:?}; finish it first: a player sees one experiment's variant per config"
    )]
    ExperimentClash { config: String, other: String },
}

impl From<StoreError> for LiveOpsError {
    fn from(error: StoreError) -> Self {
        LiveOpsError::Catalog(error.into())
    }
}

pub type LiveOpsResult<T> = Result<T, LiveOpsError>;

fn invalid(path: &str, message: impl Into<String>) -> LiveOpsError {
    LiveOpsError::Catalog(CatalogError::InvalidField {
        path: path.to_owned(),
        message: message.into(),
    })
}

/// A segment as the hub keeps it.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    pub row: store::SegmentRow,
    pub members: usize,
}

/// A live event as the hub keeps it: its definition, its progress as its
/// actor committed it, and the occurrences it applied.
#[derive(Debug, Clone)]
pub struct EventEntry {
    pub id: String,
    pub revision: i64,
    /// The definition as accepted (the request body).
    pub body: Value,
    pub spec: LiveEventSpec,
    /// The event's regions with their zones (`regionLocal`).
    pub zones: Vec<(String, Tz)>,
    pub progress: Progress,
    /// The occurrences in force as its actor applied them.
    pub applied: Vec<Slot>,
    /// How late the applied occurrences started (ms; 0: on time).
    pub late_ms: i64,
    /// Why its overrides could not reach servers, while that lasts.
    pub effect_error: Option<String>,
    /// Deployments of its overrides are recorded and not yet undone.
    pub pending_effects: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EventEntry {
    pub fn timetable(&self) -> Timetable<'_> {
        Timetable {
            schedule: &self.spec.schedule,
            zones: &self.zones,
            preview_lead_ms: self.spec.preview_lead_ms,
            ending_soon_lead_ms: self.spec.ending_soon_lead_ms,
        }
    }

    pub fn name(&self) -> &str {
        self.spec.name.as_str()
    }
}

/// Everything player resolution reads, swapped whole on each change.
#[derive(Debug, Clone)]
pub struct Definitions {
    pub book: Arc<SegmentBook>,
    pub segments: BTreeMap<String, SegmentEntry>,
    pub events: BTreeMap<String, Arc<EventEntry>>,
    pub experiments: BTreeMap<String, Arc<experiments::ExperimentEntry>>,
    /// A segment that events or running experiments name reads a kept
    /// attribute (`kept::reads_kept`): lookups read the players' record.
    pub reads_kept: bool,
}

type EventActor = LiveEventHandle<actor::Command>;

/// Live ops on this hub.
pub struct LiveOps {
    store: Store,
    catalog: Catalog,
    hub: Arc<Hub>,
    settings: LiveOpsSettings,
    /// Region (upper case) → time zone.
    zones: BTreeMap<String, Tz>,
    definitions: RwLock<Arc<Definitions>>,
    actors: Mutex<HashMap<String, EventActor>>,
    /// Resolutions players see, serialized, by what makes them the same.
    resolutions: RwLock<HashMap<players::ResolutionKey, Arc<str>>>,
    /// Base documents players see (secrets masked), by (config, revision).
    bases: Mutex<HashMap<(String, i64), Arc<Value>>>,
    /// The version derived for a deployment id not started yet, with the
    /// base it was derived from: a retry of that deployment reuses it
    /// while the base is the same (one version per deployment, not one
    /// per retry).
    derived: Mutex<HashMap<String, (i64, String)>>,
    /// One definition change at a time: the checks (names, overlaps,
    /// counts) and the write they allow see the same definitions.
    writes: tokio::sync::Mutex<()>,
    /// Players' kept attributes (`kept.rs`).
    kept: RwLock<kept::KeptMap>,
    /// Held through a whole promotion (a version, maybe a deployment):
    /// two at once would both promote.
    promotions: tokio::sync::Mutex<()>,
    /// Engagement tallies per event, occurrence and region.
    engagement: Mutex<engagement::Tallies>,
    /// The revision of the last `liveops` frame (grows across restarts:
    /// at least the time it was built, in ms).
    frame_revision: Mutex<i64>,
    /// Set when the hub stops: no actor starts from then on.
    stopping: std::sync::atomic::AtomicBool,
    /// The wall clock schedules are read on (the system's; tests move it).
    clock: Clock,
    /// Players' first assignments to experiments, written in batches.
    assignments: experiments::Assignments,
    /// The smallest sequential p-value seen, per experiment id.
    looks: Mutex<HashMap<String, crate::domain::experiments::results::Looks>>,
    /// Observations over server metrics not yet stored.
    server_sums: experiments::ServerSums,
    /// The watcher task of each started experiment.
    watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Whether a telemetry event type is registered (set by telemetry).
    event_types: RwLock<Option<EventTypeCheck>>,
}

/// Whether a telemetry event type is registered.
pub type EventTypeCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for LiveOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOps").finish_non_exhaustive()
    }
}

/// Base documents kept; past it the cache starts over.
const BASES_KEPT: usize = 256;

fn progress_of(row: &store::LiveEventRow) -> Progress {
    Progress {
        state: EventState::parse(&row.state).unwrap_or(EventState::Scheduled),
        done_before_ms: row.done_before_ms,
        manual: row
            .manual_start_ms
            .zip(row.manual_end_ms)
            .map(|(start_ms, end_ms)| Window { start_ms, end_ms }),
        paused_at_ms: row.paused_at_ms,
    }
}

impl LiveOps {
    /// Reads segments and events from the store. Call [`LiveOps::start`]
    /// from the runtime the actors should live on.
    pub async fn load(
        store: Store,
        catalog: Catalog,
        hub: Arc<Hub>,
        settings: LiveOpsSettings,
    ) -> anyhow::Result<Arc<Self>> {
        let mut zones = BTreeMap::new();
        for (region, zone) in &settings.region_zones {
            let tz = parse_zone(zone).ok_or_else(|| {
                anyhow::anyhow!("liveops.region_zones.{region}: unknown time zone {zone:?}")
            })?;
            zones.insert(region.to_ascii_uppercase(), tz);
        }
        let mut conn = store.conn().await?;
        let (book, segments) = read_segments(&mut conn).await?;
        let mut events = BTreeMap::new();
        for row in store::live_events(&mut conn).await? {
            if let Some(entry) = entry_of(&zones, &row) {
                events.insert(row.name.clone(), Arc::new(entry));
            }
        }
        let assignments = experiments::Assignments::start(
            store.clone(),
            std::time::Duration::from_millis(settings.assignment_flush_ms.max(10)),
        );
        let mut experiment_entries = BTreeMap::new();
        let mut looks = HashMap::new();
        for row in crate::store::experiments::all(&mut conn).await? {
            let Some(mut entry) = experiments::entry_of(&row) else {
                continue;
            };
            if matches!(
                entry.status,
                crate::domain::experiments::spec::Status::Running
                    | crate::domain::experiments::spec::Status::Paused
            ) {
                let players =
                    crate::store::experiments::assigned_players(&mut conn, &entry.id).await?;
                assignments.load(&entry.id, &players);
                let units = crate::store::experiments::unit_variants(&mut conn, &entry.id).await?;
                let pins = experiments::pins_of(&entry.spec, units);
                entry.definition = Arc::new(experiments::definition_of(&entry.spec, pins));
            }
            looks.insert(entry.id.clone(), experiments::looks_of(&row.looks));
            experiment_entries.insert(row.name.clone(), Arc::new(entry));
        }
        let mut kept_players = kept::KeptMap::new();
        kept::fold(
            &mut kept_players,
            &crate::store::telemetry::recent_players(&mut conn, kept::KEPT_PLAYERS).await?,
        );
        drop(conn);
        let liveops = Arc::new(LiveOps {
            store,
            catalog,
            hub,
            settings,
            zones,
            definitions: RwLock::new(Arc::new({
                let mut definitions = Definitions {
                    book: Arc::new(book),
                    segments,
                    events,
                    experiments: experiment_entries,
                    reads_kept: false,
                };
                definitions.reads_kept = kept::reads_kept(&definitions);
                definitions
            })),
            kept: RwLock::new(kept_players),
            actors: Mutex::new(HashMap::new()),
            bases: Mutex::new(HashMap::new()),
            derived: Mutex::new(HashMap::new()),
            resolutions: RwLock::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
            promotions: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            clock: Clock::system(),
            frame_revision: Mutex::new(0),
            engagement: Mutex::new(Default::default()),
            assignments,
            looks: Mutex::new(looks),
            server_sums: Default::default(),
            watchers: Mutex::new(HashMap::new()),
            event_types: RwLock::new(None),
        });
        let sink = Arc::downgrade(&liveops);
        liveops
            .hub
            .set_report_sink(Box::new(move |region, report, _at| {
                if let Some(liveops) = sink.upgrade() {
                    liveops.fold_engagement(region, report);
                }
            }));
        let sink = Arc::downgrade(&liveops);
        liveops
            .hub
            .set_variant_sink(Box::new(move |subscriptions, samples| {
                if let Some(liveops) = sink.upgrade() {
                    liveops.fold_variant_samples(subscriptions, samples);
                }
            }));
        let tick = Arc::downgrade(&liveops);
        liveops.hub.set_cluster_tick(Box::new(move || {
            let liveops = tick.upgrade();
            Box::pin(async move {
                if let Some(liveops) = liveops {
                    liveops.cluster_tick().await;
                }
            })
        }));
        let commands = Arc::downgrade(&liveops);
        liveops
            .hub
            .set_event_commands(Box::new(move |event, control, actor| {
                let liveops = commands.upgrade();
                Box::pin(async move { liveops?.on_forwarded(event, control, actor).await })
            }));
        liveops.change(|_| {});
        Ok(liveops)
    }

    /// Starts an actor for every event; each first catches up with its
    /// schedule (an activation missed while the hub was down happens now,
    /// marked late) and with its deployments (a finished event's not yet
    /// rolled back are), then a finished one stops.
    pub fn start(self: &Arc<Self>) {
        let names: Vec<String> = self
            .definitions()
            .events
            .values()
            .map(|e| e.name().to_owned())
            .collect();
        if self.hub.in_cluster() {
            // Only the events whose lease this node takes (each catches up
            // and, finished, gives it up); the others' owners drive them.
            let liveops = self.clone();
            actix_web::rt::spawn(async move {
                for name in names {
                    if let Err(error) = liveops.drive(&name).await {
                        tracing::warn!(event = %name, %error, "cannot take a live event's lease");
                    }
                }
            });
        } else {
            for name in names {
                self.actor_for(&name);
            }
        }
        let started: Vec<String> = self.definitions().experiments.keys().cloned().collect();
        if self.hub.in_cluster() {
            // Those whose lease this node takes; the others' are watched
            // by their nodes.
            let liveops = self.clone();
            actix_web::rt::spawn(async move {
                for name in started {
                    liveops.watch(&name).await;
                }
            });
        } else {
            for name in started {
                self.watch_experiment(&name);
            }
        }
        self.start_server_sums();
    }

    /// The hub's Prometheus metrics.
    pub fn meters(&self) -> &Arc<crate::observability::meters::Meters> {
        &self.hub.meters
    }

    /// Live ops' state for a Prometheus scrape (the hub's too).
    pub fn scrape(&self, into: &mut crate::observability::meters::Scrape) {
        self.hub.scrape(into);
        let definitions = self.definitions();
        into.live_events_active = definitions
            .events
            .values()
            .filter(|e| e.progress.state == EventState::Active)
            .count() as u64;
        into.experiments_running = definitions
            .experiments
            .values()
            .filter(|e| e.status == crate::domain::experiments::spec::Status::Running)
            .count() as u64;
    }

    /// Lets experiment definitions check their metrics' event types.
    pub fn set_event_type_check(&self, check: EventTypeCheck) {
        *write(&self.event_types) = Some(check);
    }

    /// The clock schedules are read on: the system's unless moved.
    /// Moving it (tests, rehearsals of a schedule) wakes every event's
    /// actor to look at its schedule again. An event's own timeline
    /// (occurrences started and ended, its progress) is on this clock;
    /// records (created, updated) and the audit trail are on the system's.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now on [`LiveOps::clock`] (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The definitions now (a cheap clone of an `Arc`).
    pub fn definitions(&self) -> Arc<Definitions> {
        read(&self.definitions).clone()
    }

    fn change(&self, change: impl FnOnce(&mut Definitions)) {
        let (published, revision) = {
            let mut definitions = write(&self.definitions);
            let mut next = (**definitions).clone();
            change(&mut next);
            next.reads_kept = kept::reads_kept(&next);
            let next = Arc::new(next);
            *definitions = next.clone();
            // Numbered under the lock: frames are ordered as the changes.
            let mut last = lock(&self.frame_revision);
            *last = (*last + 1).max(crate::store::now_ms());
            (next, *last)
        };
        self.publish(&published, revision);
    }

    /// Sends the definitions to the servers that resolve players locally
    /// (`liveops` frames), and keeps them for those that connect later.
    fn publish(&self, definitions: &Definitions, revision: i64) {
        let frame = views::liveops_frame(revision, definitions);
        self.hub.publish_liveops(revision, frame);
    }

    /// Changes one event in place (under the definitions' lock, so the
    /// actor's fields and an operator's revision never overwrite each
    /// other); nothing when the event is gone.
    fn modify_event(&self, name: &str, change: impl FnOnce(&mut EventEntry)) {
        self.change(|d| {
            if let Some(entry) = d.events.get_mut(name) {
                change(Arc::make_mut(entry));
            }
        });
    }

    fn publish_event(&self, entry: EventEntry) {
        self.change(|d| {
            d.events.insert(entry.name().to_owned(), Arc::new(entry));
        });
    }

    /// The event's actor, started if it is not running; `None` once the
    /// hub is stopping.
    fn actor_for(self: &Arc<Self>, name: &str) -> Option<EventActor> {
        let mut actors = lock(&self.actors);
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        if let Some(handle) = actors.get(name).filter(|h| !h.is_stopped()) {
            return Some(handle.clone());
        }
        actors.retain(|_, handle| !handle.is_stopped());
        let handle = actor::spawn(self.clone(), name.to_owned());
        actors.insert(name.to_owned(), handle.clone());
        Some(handle)
    }

    /// Events not finished (scheduled, active, paused).
    fn running_events(&self) -> usize {
        self.definitions()
            .events
            .values()
            .filter(|e| !e.progress.state.is_finished())
            .count()
    }

    /// Stops every actor (shutdown): nothing is lost, each resumes from
    /// the store on the next start.
    pub async fn stop(&self) {
        let handles: Vec<EventActor> = {
            let mut actors = lock(&self.actors);
            self.stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            actors.drain().map(|(_, h)| h).collect()
        };
        for handle in handles {
            let _ = handle.command(actor::Command::Stop).await;
        }
        for (_, watcher) in lock(&self.watchers).drain() {
            watcher.abort();
        }
        self.flush_writes().await;
    }

    /// Stores what is queued: first assignments and server-metric
    /// observations (the hub calls it again once its sessions closed).
    pub async fn flush_writes(&self) {
        self.assignments.flush().await;
        self.flush_server_sums().await;
    }
}

/// The segment book and the segments as stored: lists first, then rules
/// in rounds until no more can be defined (a rule may name a segment
/// defined after it; a stored book was valid when written).
async fn read_segments(
    conn: &mut crate::store::Conn,
) -> anyhow::Result<(SegmentBook, BTreeMap<String, SegmentEntry>)> {
    let mut book = SegmentBook::with_built_ins();
    let mut segments = BTreeMap::new();
    let rows = store::segments(conn).await?;
    // Lists first; rules may name segments defined after them, so they
    // are defined in rounds until no more can be (a stored book was
    // valid when written).
    let mut pending = Vec::new();
    for row in &rows {
        if row.kind == "list" {
            let members = store::members(conn, &row.name).await?;
            let count = members.len();
            if book.define_list(&row.name, members).is_ok() {
                segments.insert(
                    row.name.clone(),
                    SegmentEntry {
                        row: row.clone(),
                        members: count,
                    },
                );
                continue;
            }
        }
        pending.push(row);
    }
    loop {
        let before = pending.len();
        pending.retain(|row| {
            let rule = row
                .rule
                .as_deref()
                .and_then(|rule| serde_json::from_str::<Value>(rule).ok());
            let defined = rule.is_some_and(|rule| book.define_rule(&row.name, &rule).is_ok());
            if defined {
                segments.insert(
                    row.name.clone(),
                    SegmentEntry {
                        row: (*row).clone(),
                        members: 0,
                    },
                );
            }
            !defined
        });
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    for row in pending {
        tracing::error!(segment = %row.name, "a stored segment cannot be defined; it matches no player");
    }
    Ok((book, segments))
}

/// A stored live event as the hub keeps it (nothing applied yet); `None`
/// (logged) when it no longer reads.
fn entry_of(zones: &BTreeMap<String, Tz>, row: &store::LiveEventRow) -> Option<EventEntry> {
    let body: Value = match serde_json::from_str(&row.spec) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(event = %row.name, %error, "a stored live event is not JSON; skipped");
            return None;
        }
    };
    let spec = match LiveEventSpec::parse(&body) {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(event = %row.name, path = %error.path, message = %error.message,
                "a stored live event no longer parses; skipped");
            return None;
        }
    };
    Some(EventEntry {
        id: row.id.clone(),
        revision: row.revision,
        zones: zones_of(zones, &spec),
        body,
        spec,
        progress: progress_of(row),
        applied: Vec::new(),
        late_ms: 0,
        effect_error: None,
        pending_effects: false,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The zones of an event's regions (those the settings know).
fn zones_of(zones: &BTreeMap<String, Tz>, spec: &LiveEventSpec) -> Vec<(String, Tz)> {
    spec.regions
        .iter()
        .filter_map(|r| zones.get(r).map(|tz| (r.clone(), *tz)))
        .collect()
}
