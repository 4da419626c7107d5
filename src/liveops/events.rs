//! Live events: created and revised with every check (rules against the
//! `live-event-rules` schema, each override's patch on top of its config,
//! segments known, regions' zones, the number of events, overlaps), written
//! with their audit row, then handed to their actor. Operators' controls
//! go through the actor, which commits each before its effect.

use super::{
    EventEntry, LiveOps, LiveOpsError, LiveOpsResult, actor, invalid,
    views::{LiveEventView, OverlapView, TimelineEntry, TimelineView, event_view, occurrence_view},
    zones_of,
};
use crate::{
    catalog::{Actor, CatalogError, PatchCheck, views::rfc3339},
    domain::{
        event_progress::{Control, EventState, Progress, Slot, Timetable},
        live_event::{LiveEventSpec, occurrences_clash, patch_paths, shared_path},
        policy::Role,
        schedule::{Occurrence, Zone},
        secrets,
    },
    store::{StoreError, audit, live_ops as store},
};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most occurrences the timeline answers.
const TIMELINE_MAX: usize = 10_000;
/// The longest window the timeline looks at.
const TIMELINE_MAX_DAYS: i64 = 400;

fn utc(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn occurrence_of(slot: &Slot) -> Occurrence {
    Occurrence {
        start: utc(slot.start_ms),
        end: utc(slot.end_ms),
        region: slot.region.clone(),
        local_start: utc(slot.start_ms).naive_utc(),
        dst: None,
    }
}

/// The first pair of occurrences of `a` and `b` that run at once in a
/// shared region, if any. Both lists are sorted by start: each of `a`'s is
/// compared with `b`'s that start within `b`'s longest duration before it.
fn first_clash(a: &[Slot], a_regions: &[String], b: &[Slot], b_regions: &[String]) -> Option<i64> {
    let longest = b.iter().map(|s| s.end_ms - s.start_ms).max()?;
    for x in a {
        let from = b.partition_point(|y| y.start_ms < x.start_ms.saturating_sub(longest));
        for y in b[from..].iter().take_while(|y| y.start_ms < x.end_ms) {
            if occurrences_clash(&occurrence_of(x), a_regions, &occurrence_of(y), b_regions) {
                return Some(x.start_ms.max(y.start_ms));
            }
        }
    }
    None
}

impl LiveOps {
    /// Every check of a definition that needs more than the body.
    async fn check_definition(
        &self,
        actor: &Actor,
        spec: &LiveEventSpec,
        body: &Value,
    ) -> LiveOpsResult<()> {
        let server_wide = spec_is_server_wide(spec);
        // Rollout and guardrails read as the deployments they become.
        let wants_deployments = ["guardrails", "rollout"]
            .iter()
            .any(|key| body.get(*key).is_some_and(|v| !v.is_null()));
        if wants_deployments {
            if !spec.audience.segments.is_empty()
                || spec.audience.percentage.is_some()
                || spec.overrides.is_empty()
            {
                return Err(invalid(
                    "/rollout",
                    "rollout and guardrails apply to server-wide overrides (overrides, no player audience)",
                ));
            }
            let request =
                super::effects::deployment_request(body, "placeholder", "1.0.0", &spec.regions)?;
            self.hub
                .check_plan(&request)
                .map_err(|error| invalid("/rollout", error.to_string()))?;
        }
        if matches!(spec.schedule.zone, Zone::RegionLocal) {
            for (index, region) in spec.regions.iter().enumerate() {
                if !self.zones.contains_key(region) {
                    return Err(invalid(
                        &format!("/regions/{index}"),
                        format!(
                            "region {region} has no time zone in the settings \
                             (liveops.region_zones); known: {}",
                            self.zones.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        let definitions = self.definitions();
        for (index, segment) in spec.audience.segments.iter().enumerate() {
            if definitions.book.get(segment).is_none() {
                return Err(invalid(
                    &format!("/audience/segments/{index}"),
                    format!("segment {segment:?} does not exist"),
                ));
            }
        }
        let report = self
            .catalog
            .validate_with_schema("live-event-rules", None, spec.rules.clone())
            .await?;
        if let Some(issue) = report.errors.first() {
            return Err(invalid(
                &format!("/rules{}", issue.path),
                issue.message.clone(),
            ));
        }
        for (index, change) in spec.overrides.iter().enumerate() {
            let checked = self
                .catalog
                .check_patch(change.config.as_str(), &change.patch)
                .await;
            match checked {
                Ok(PatchCheck::Valid { secret_paths }) => {
                    // Patches are stored, shown and sent to servers as
                    // they are: a secret value may not be in one.
                    if let Some(path) = patch_paths(&change.patch)
                        .into_iter()
                        .find(|p| secrets::holds_secret(p, &secret_paths))
                    {
                        return Err(invalid(
                            &format!("/overrides/{index}/patch{path}"),
                            "a live event cannot change a secret value (x-secret); deploy a version instead",
                        ));
                    }
                    if server_wide {
                        let environment = self
                            .catalog
                            .get_config(change.config.as_str())
                            .await?
                            .environment;
                        if self.hub.policy(&environment).deployment_needs_approval
                            && actor.role != Some(Role::Admin)
                        {
                            return Err(LiveOpsError::Forbidden(format!(
                                "deployments of {} ({environment}) need an admin's approval: \
                                 only an admin may create or change a live event that overrides it on servers",
                                change.config
                            )));
                        }
                    }
                }
                Ok(PatchCheck::Invalid(report)) => {
                    return Err(LiveOpsError::PatchInvalid {
                        index,
                        config: change.config.to_string(),
                        report,
                    });
                }
                Err(CatalogError::ConfigNotFound(name)) => {
                    return Err(invalid(
                        &format!("/overrides/{index}/config"),
                        format!("config {name:?} does not exist"),
                    ));
                }
                Err(CatalogError::InvalidField { message, .. }) => {
                    return Err(invalid(&format!("/overrides/{index}/patch"), message));
                }
                Err(
                    error @ (CatalogError::DocumentTooDeep { .. }
                    | CatalogError::DocumentTooLarge { .. }),
                ) => {
                    return Err(invalid(
                        &format!("/overrides/{index}/patch"),
                        error.to_string(),
                    ));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    /// The first event `spec` would clash with (same config path, same
    /// time, shared region) within the overlap horizon.
    fn overlap(
        &self,
        spec: &LiveEventSpec,
        zones: &[(String, chrono_tz::Tz)],
    ) -> LiveOpsResult<()> {
        if spec.allow_overlap || spec.overrides.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let horizon =
            now.saturating_add(i64::from(self.settings.overlap_horizon_days) * 86_400_000);
        let mine = Timetable {
            schedule: &spec.schedule,
            zones,
            preview_lead_ms: 0,
            ending_soon_lead_ms: 0,
        }
        .slots(&Progress::new(), now, horizon);
        for other in self.definitions().events.values() {
            if other.name() == spec.name.as_str() || other.progress.state.is_finished() {
                continue;
            }
            // Two server-wide events on one config stack their deployments
            // (each built on what servers run): any shared config clashes.
            let common = if spec_is_server_wide(spec) && spec_is_server_wide(&other.spec) {
                spec.overrides
                    .iter()
                    .find(|o| other.spec.overrides.iter().any(|t| t.config == o.config))
                    .map(|o| (o.config.to_string(), String::new()))
            } else {
                shared_path(&spec.overrides, &other.spec.overrides)
            };
            let Some((config, path)) = common else {
                continue;
            };
            let theirs = other.timetable().slots(&other.progress, now, horizon);
            if let Some(at) = first_clash(&mine, &spec.regions, &theirs, &other.spec.regions) {
                return Err(LiveOpsError::Overlap {
                    other: other.name().to_owned(),
                    config,
                    path,
                    at: rfc3339(at),
                });
            }
        }
        Ok(())
    }

    pub async fn create_event(
        self: &Arc<Self>,
        actor: &Actor,
        body: Value,
    ) -> LiveOpsResult<LiveEventView> {
        let spec = LiveEventSpec::parse(&body).map_err(|e| invalid(&e.path, e.message))?;
        let writing = self.writes.lock().await;
        let name = spec.name.as_str().to_owned();
        {
            let mut conn = self.store.conn().await?;
            if store::event_by_name(&mut conn, &name).await?.is_some() {
                return Err(LiveOpsError::EventExists(name));
            }
        }
        if self.running_events() >= self.settings.max_events {
            return Err(invalid(
                "/name",
                format!(
                    "at most {} live events may be scheduled, active or paused at once",
                    self.settings.max_events
                ),
            ));
        }
        self.check_definition(actor, &spec, &body).await?;
        let zones = zones_of(&self.zones, &spec);
        let now = self.now_ms();
        let timetable = Timetable {
            schedule: &spec.schedule,
            zones: &zones,
            preview_lead_ms: 0,
            ending_soon_lead_ms: 0,
        };
        if timetable.next_slot(&Progress::new(), now).is_none() {
            return Err(invalid("/schedule", "the schedule has no occurrence left"));
        }
        self.overlap(&spec, &zones)?;
        let progress = Progress::new();
        let row = store::LiveEventRow {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.clone(),
            revision: 1,
            spec: body.to_string(),
            state: progress.state.name().to_owned(),
            done_before_ms: progress.done_before_ms,
            manual_start_ms: None,
            manual_end_ms: None,
            paused_at_ms: None,
            created_by: actor.subject.clone(),
            // A record's time: the system clock's.
            created_at: crate::store::now_ms(),
            updated_at: crate::store::now_ms(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_event(&mut tx, &row).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "live-event.create",
                format!("live-events/{name}"),
                json!({
                    "eventType": spec.event_type.as_str(),
                    "overrides": spec.overrides.iter().map(|o| o.config.as_str()).collect::<Vec<_>>(),
                    "regions": spec.regions,
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let entry = EventEntry {
            id: row.id,
            revision: 1,
            zones,
            body,
            spec,
            progress,
            applied: Vec::new(),
            late_ms: 0,
            effect_error: None,
            pending_effects: false,
            created_by: row.created_by,
            created_at: now,
            updated_at: now,
        };
        self.publish_event(entry);
        // Its actor starts it at once when an occurrence is under way.
        // Written and published: the next change need not wait for the actor.
        drop(writing);
        self.refresh_event(&name, actor).await?;
        self.event(&name)
    }

    /// A new revision of an event's definition (the name stays). An active
    /// event's change takes effect at once.
    pub async fn update_event(
        self: &Arc<Self>,
        actor: &Actor,
        name: &str,
        mut body: Value,
    ) -> LiveOpsResult<LiveEventView> {
        if let Some(object) = body.as_object_mut() {
            match object.get("name") {
                None => {
                    object.insert("name".into(), Value::String(name.to_owned()));
                }
                Some(Value::String(given)) if given == name => {}
                Some(_) => return Err(invalid("/name", "a live event cannot be renamed")),
            }
        }
        let spec = LiveEventSpec::parse(&body).map_err(|e| invalid(&e.path, e.message))?;
        let writing = self.writes.lock().await;
        let current = self
            .definitions()
            .events
            .get(name)
            .cloned()
            .ok_or_else(|| LiveOpsError::EventNotFound(name.to_owned()))?;
        if current.progress.state.is_terminal() {
            return Err(LiveOpsError::InvalidTransition {
                state: current.progress.state.name(),
                reason: "a cancelled or rolled-back event cannot change".into(),
            });
        }
        if current.progress.state.is_finished() && self.running_events() >= self.settings.max_events
        {
            return Err(invalid(
                "/schedule",
                format!(
                    "at most {} live events may run at once",
                    self.settings.max_events
                ),
            ));
        }
        self.check_definition(actor, &spec, &body).await?;
        let zones = zones_of(&self.zones, &spec);
        self.overlap(&spec, &zones)?;
        // A record's time: the system clock's.
        let now = crate::store::now_ms();
        let mut tx = self.store.begin().await?;
        if !store::revise_event(
            &mut tx,
            &current.id,
            current.revision,
            &body.to_string(),
            &actor.subject,
            now,
        )
        .await?
        {
            return Err(LiveOpsError::Catalog(CatalogError::Conflict));
        }
        audit::record(
            &mut tx,
            actor.audit_entry(
                "live-event.update",
                format!("live-events/{name}"),
                json!({ "revision": current.revision + 1 }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.modify_event(name, |entry| {
            entry.revision += 1;
            entry.body = body;
            entry.spec = spec;
            entry.zones = zones;
            entry.updated_at = now;
        });
        drop(writing);
        self.refresh_event(name, actor).await?;
        self.event(name)
    }

    /// Deletes an event that is not active (its name stays taken).
    pub async fn delete_event(self: &Arc<Self>, actor: &Actor, name: &str) -> LiveOpsResult<()> {
        let _writing = self.writes.lock().await;
        let current = self
            .definitions()
            .events
            .get(name)
            .cloned()
            .ok_or_else(|| LiveOpsError::EventNotFound(name.to_owned()))?;
        if matches!(
            current.progress.state,
            EventState::Active | EventState::Paused
        ) {
            return Err(LiveOpsError::InvalidTransition {
                state: current.progress.state.name(),
                reason: "end or cancel it before deleting it".into(),
            });
        }
        if current.pending_effects {
            return Err(LiveOpsError::InvalidTransition {
                state: current.progress.state.name(),
                reason: "its deployments are still being rolled back; retry in a moment".into(),
            });
        }
        let mut tx = self.store.begin().await?;
        store::delete_event(&mut tx, &current.id, crate::store::now_ms()).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "live-event.delete",
                format!("live-events/{name}"),
                json!({}),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        // Stopped once the deletion is stored.
        let running = super::lock(&self.actors).remove(name);
        if let Some(handle) = running {
            let _ = handle.command(actor::Command::Stop).await;
        }
        self.hub
            .give_up_lease(&crate::store::cluster::event_resource(&current.id));
        let name = name.to_owned();
        self.change(|d| {
            d.events.remove(&name);
        });
        Ok(())
    }

    pub fn event(&self, name: &str) -> LiveOpsResult<LiveEventView> {
        self.definitions()
            .events
            .get(name)
            .map(|entry| event_view(entry, self.now_ms()))
            .ok_or_else(|| LiveOpsError::EventNotFound(name.to_owned()))
    }

    /// Events by name, filtered by state, region and a window their
    /// occurrences overlap.
    pub fn events(
        &self,
        state: Option<EventState>,
        region: Option<&str>,
        window: Option<(i64, i64)>,
    ) -> Vec<LiveEventView> {
        let now = self.now_ms();
        self.definitions()
            .events
            .values()
            .filter(|e| state.is_none_or(|s| e.progress.state == s))
            .filter(|e| {
                region.is_none_or(|r| {
                    e.spec.regions.is_empty()
                        || e.spec.regions.iter().any(|x| x.eq_ignore_ascii_case(r))
                })
            })
            .filter(|e| {
                window
                    .is_none_or(|(from, to)| !e.timetable().slots(&e.progress, from, to).is_empty())
            })
            .map(|e| event_view(e, now))
            .collect()
    }

    /// An operator's control, carried out by the event's actor.
    pub async fn control_event(
        self: &Arc<Self>,
        actor: &Actor,
        name: &str,
        control: Control,
    ) -> LiveOpsResult<LiveEventView> {
        if !self.definitions().events.contains_key(name) {
            return Err(LiveOpsError::EventNotFound(name.to_owned()));
        }
        if self.drive(name).await?.is_none() {
            // In a cluster, another node drives it: carried out there,
            // then read back.
            self.forward(name, Some(control), actor).await?;
            self.reload_events().await?;
            return self.event(name);
        }
        self.command(name, |reply| actor::Command::Control {
            control,
            actor: actor.clone(),
            reply,
        })
        .await?;
        self.event(name)
    }

    /// Tells the event's actor its definition changed (in a cluster, the
    /// node that drives it, which reads it back first).
    async fn refresh_event(self: &Arc<Self>, name: &str, actor: &Actor) -> LiveOpsResult<()> {
        self.hub.announce_liveops();
        if self.drive(name).await?.is_none() {
            return self.forward(name, None, actor).await;
        }
        self.command(name, |reply| actor::Command::Refresh { reply })
            .await
    }

    /// Sends a command to the event's actor and waits for its answer. An
    /// actor that was finishing (its event over) when the command came
    /// drops it unanswered: a fresh actor takes it then.
    pub(super) async fn command(
        self: &Arc<Self>,
        name: &str,
        make: impl Fn(oneshot::Sender<LiveOpsResult<()>>) -> actor::Command,
    ) -> LiveOpsResult<()> {
        for _ in 0..3 {
            let handle = self.drive(name).await?.ok_or_else(|| {
                LiveOpsError::Elsewhere(format!("live event {name} is driven by another node"))
            })?;
            let (reply, answer) = oneshot::channel();
            if handle.command(make(reply)).await.is_ok()
                && let Ok(answered) = answer.await
            {
                return answered;
            }
            for _ in 0..100 {
                if handle.is_stopped() {
                    break;
                }
                actix_web::rt::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        Err(LiveOpsError::Stopped)
    }

    /// Every occurrence in `[from, to)` (in `region` if given), earliest
    /// first, each with the events it clashes with.
    pub fn timeline(
        &self,
        from: i64,
        to: i64,
        region: Option<&str>,
    ) -> LiveOpsResult<TimelineView> {
        if to <= from || to - from > TIMELINE_MAX_DAYS * 86_400_000 {
            return Err(invalid(
                "/query/to",
                format!("`to` is after `from`, at most {TIMELINE_MAX_DAYS} days later"),
            ));
        }
        let definitions = self.definitions();
        let events: Vec<(&Arc<EventEntry>, Vec<Slot>)> = definitions
            .events
            .values()
            .map(|e| (e, e.timetable().slots(&e.progress, from, to)))
            .collect();
        let region = region.map(str::to_ascii_uppercase);
        let reaches = |entry: &EventEntry, slot: &Slot| match (&region, &slot.region) {
            (None, _) => true,
            (Some(r), Some(s)) => r == s,
            (Some(r), None) => entry.spec.regions.is_empty() || entry.spec.regions.contains(r),
        };
        // Which pairs of events change a path in common: once per pair.
        let mut shared: std::collections::HashMap<(usize, usize), (String, String)> =
            std::collections::HashMap::new();
        for (i, (a, _)) in events.iter().enumerate() {
            for (j, (b, _)) in events.iter().enumerate() {
                if i != j
                    && let Some(found) = shared_path(&a.spec.overrides, &b.spec.overrides)
                {
                    shared.insert((i, j), found);
                }
            }
        }
        let mut items = Vec::new();
        'events: for (i, (entry, slots)) in events.iter().enumerate() {
            for slot in slots.iter().filter(|s| reaches(entry, s)) {
                if items.len() > TIMELINE_MAX {
                    break 'events;
                }
                let mut overlaps = Vec::new();
                for (j, (other, theirs)) in events.iter().enumerate() {
                    let Some((config, path)) = shared.get(&(i, j)).cloned() else {
                        continue;
                    };
                    if first_clash(
                        std::slice::from_ref(slot),
                        &entry.spec.regions,
                        theirs,
                        &other.spec.regions,
                    )
                    .is_some()
                    {
                        overlaps.push(OverlapView {
                            event: other.name().to_owned(),
                            config,
                            path,
                        });
                    }
                }
                items.push(TimelineEntry {
                    event: entry.name().to_owned(),
                    event_type: entry.spec.event_type.as_str().to_owned(),
                    state: entry.progress.state.name().to_owned(),
                    occurrence: occurrence_view(slot),
                    overlaps,
                });
            }
        }
        items.sort_by(|a, b| (&a.occurrence.start, &a.event).cmp(&(&b.occurrence.start, &b.event)));
        let truncated = items.len() > TIMELINE_MAX;
        items.truncate(TIMELINE_MAX);
        Ok(TimelineView {
            from: rfc3339(from),
            to: rfc3339(to),
            items,
            truncated,
        })
    }
}

/// Whether an event's overrides reach servers' documents (no audience).
fn spec_is_server_wide(spec: &LiveEventSpec) -> bool {
    !spec.overrides.is_empty()
        && spec.audience.segments.is_empty()
        && spec.audience.percentage.is_none()
}

/// The stored shape of a progress.
pub(super) fn progress_row(progress: &Progress) -> store::ProgressRow {
    store::ProgressRow {
        state: progress.state.name().to_owned(),
        done_before_ms: progress.done_before_ms,
        manual_start_ms: progress.manual.map(|w| w.start_ms),
        manual_end_ms: progress.manual.map(|w| w.end_ms),
        paused_at_ms: progress.paused_at_ms,
    }
}
