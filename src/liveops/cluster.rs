//! Live events on a cluster: each event's actor runs on the one node
//! holding its lease (`event:<id>`), so an occurrence is activated once;
//! its writes are fenced by the lease (`Hub::fence_lease`). The other nodes
//! read the events back from the store (on each announcement and every
//! `cluster.reconcile_ms`) and work out what is in force from the same
//! schedule, for their players' resolutions; an operator's control reaching
//! them is carried out by the owner; the owner's `event` frames reach their
//! servers too. A node takes the lease of an unfinished event no node
//! holds (its owner died), and its actor catches up from the store.

use super::{LiveOps, LiveOpsError, LiveOpsResult, actor, entry_of};
use crate::{
    catalog::Actor,
    domain::{event_progress::Control, experiments::spec::Status},
    store::{cluster::event_resource, experiments as experiments_store, live_ops as store},
};
use std::sync::Arc;

/// How a control travels.
fn control_name(control: Control) -> &'static str {
    match control {
        Control::Activate => "activate",
        Control::Pause => "pause",
        Control::Resume => "resume",
        Control::End => "end",
        Control::Cancel => "cancel",
        Control::RollBack => "rollback",
    }
}

fn control_of(name: &str) -> Option<Control> {
    Some(match name {
        "activate" => Control::Activate,
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "end" => Control::End,
        "cancel" => Control::Cancel,
        "rollback" => Control::RollBack,
        _ => return None,
    })
}

impl LiveOps {
    /// Whether this node drives event `name` now: it holds its lease and
    /// its actor runs (always the case alone, once started).
    pub(super) fn driving(&self, name: &str) -> bool {
        let Some(id) = self.definitions().events.get(name).map(|e| e.id.clone()) else {
            return false;
        };
        self.hub.held_epoch(&event_resource(&id)).is_some()
            && hotswap_client::sync::lock(&self.actors)
                .get(name)
                .is_some_and(|h| !h.is_stopped())
    }

    /// The event's actor on this node: running, or started once this node
    /// holds (or takes) the event's lease; `None` while another node holds
    /// it, or once the hub is stopping.
    pub(super) async fn drive(
        self: &Arc<Self>,
        name: &str,
    ) -> LiveOpsResult<Option<super::EventActor>> {
        if self.hub.in_cluster() {
            let Some(id) = self.definitions().events.get(name).map(|e| e.id.clone()) else {
                return Err(LiveOpsError::EventNotFound(name.to_owned()));
            };
            let resource = event_resource(&id);
            if self.hub.held_epoch(&resource).is_none() {
                let mut conn = self.store.conn().await?;
                if self.hub.take_lease(&mut conn, &resource).await?.is_none() {
                    return Ok(None);
                }
                tracing::info!(event = %name, "this node drives the live event");
            }
        }
        self.actor_for(name).map(Some).ok_or(LiveOpsError::Stopped)
    }

    /// Sends an operator's control (or, `None`, a refresh after a
    /// revision) to the node driving the event.
    pub(super) async fn forward(
        &self,
        name: &str,
        control: Option<Control>,
        actor: &Actor,
    ) -> LiveOpsResult<()> {
        let what = control.map_or("refresh", control_name);
        match self.hub.forward_event(name, what, actor).await {
            Ok(()) => Ok(()),
            Err((outcome, message)) => Err(match outcome.as_str() {
                "notFound" => LiveOpsError::EventNotFound(name.to_owned()),
                "invalidTransition" => LiveOpsError::InvalidTransition {
                    state: "changed",
                    reason: message,
                },
                _ => LiveOpsError::Elsewhere(message),
            }),
        }
    }

    /// Another node's control (or refresh) of an event: carried out when
    /// this node drives it; `None` when it does not (the owner answers).
    pub(super) async fn on_forwarded(
        self: &Arc<Self>,
        name: String,
        what: String,
        actor: Actor,
    ) -> Option<Result<(), (String, String)>> {
        if !self.driving(&name) {
            return None;
        }
        let result = match what.as_str() {
            "refresh" => {
                // The revision was written by another node: read it first.
                if let Err(error) = self.reload_events().await {
                    tracing::warn!(%error, "cannot read live events back from the store");
                }
                self.command(&name, |reply| actor::Command::Refresh { reply })
                    .await
            }
            other => match control_of(other) {
                Some(control) => self.control_event(&actor, &name, control).await.map(|_| ()),
                None => Err(LiveOpsError::Elsewhere(format!(
                    "unknown control {other:?}"
                ))),
            },
        };
        Some(result.map_err(|error| {
            let outcome = match &error {
                LiveOpsError::EventNotFound(_) => "notFound",
                LiveOpsError::InvalidTransition { .. } => "invalidTransition",
                _ => "unavailable",
            };
            (outcome.to_owned(), error.to_string())
        }))
    }

    /// What a node does each time the cluster's state may have moved: the
    /// events read back from the store (those it does not drive, whole,
    /// with what is in force now; those it drives, their newer revisions),
    /// and the lease taken of each unfinished event no node holds.
    pub async fn cluster_tick(self: &Arc<Self>) {
        if !self.hub.in_cluster() || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(error) = self.reload_segments().await {
            tracing::warn!(%error, "cannot read segments back from the store");
        }
        let refresh = match self.reload_events().await {
            Ok(refresh) => refresh,
            Err(error) => {
                tracing::warn!(%error, "cannot read live events back from the store");
                return;
            }
        };
        for name in refresh {
            let _ = self
                .command(&name, |reply| actor::Command::Refresh { reply })
                .await;
        }
        let unfinished: Vec<String> = self
            .definitions()
            .events
            .iter()
            .filter(|(_, e)| !e.progress.state.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in unfinished {
            if !self.driving(&name)
                && let Err(error) = self.drive(&name).await
            {
                tracing::warn!(event = %name, %error, "cannot take a live event's lease");
            }
        }
        if let Err(error) = self.reload_experiments().await {
            tracing::warn!(%error, "cannot read experiments back from the store");
            return;
        }
        let started: Vec<String> = self
            .definitions()
            .experiments
            .iter()
            .filter(|(_, e)| matches!(e.status, Status::Running | Status::Paused))
            .map(|(name, _)| name.clone())
            .collect();
        for name in started {
            if !self.watching(&name) {
                self.watch(&name).await;
            }
        }
    }

    /// Reads the experiments back from the store: each one another node
    /// wrote a newer revision of replaces this node's (a started one with
    /// its pins worked out again from the stored assignments, as at
    /// start-up), so every node resolves players alike.
    async fn reload_experiments(self: &Arc<Self>) -> LiveOpsResult<()> {
        let mut conn = self.store.conn().await?;
        let rows = experiments_store::all(&mut conn).await?;
        let current = self.definitions();
        let mut updates = Vec::new();
        let mut flushed = false;
        for row in rows {
            if current
                .experiments
                .get(&row.name)
                .is_some_and(|mine| mine.revision >= row.revision)
            {
                continue;
            }
            let Some(mut entry) = super::experiments::entry_of(&row) else {
                continue;
            };
            if matches!(entry.status, Status::Running | Status::Paused) {
                let mine = current.experiments.get(&row.name);
                let same_weights = mine.is_some_and(|m| {
                    m.status != Status::Draft && m.spec.weights() == entry.spec.weights()
                });
                let pins = match mine {
                    Some(mine) if same_weights => mine.definition.pins.clone(),
                    _ => {
                        // New weights: the units this node placed and has
                        // not stored yet are stored first, so the pins
                        // worked out from the store include them.
                        if !flushed {
                            self.assignments.flush().await;
                            flushed = true;
                        }
                        let units = experiments_store::unit_variants(&mut conn, &entry.id).await?;
                        super::experiments::pins_of(&entry.spec, units)
                    }
                };
                entry.definition = Arc::new(super::experiments::definition_of(&entry.spec, pins));
            }
            updates.push(entry);
        }
        drop(conn);
        if updates.is_empty() {
            return Ok(());
        }
        for entry in &updates {
            if entry.status == Status::Finished {
                self.assignments.forget(&entry.id);
            }
        }
        self.change(|d| {
            for entry in updates {
                // Unless this node wrote a newer one meanwhile.
                if d.experiments
                    .get(entry.name())
                    .is_none_or(|mine| mine.revision < entry.revision)
                {
                    d.experiments
                        .insert(entry.name().to_owned(), Arc::new(entry));
                }
            }
        });
        Ok(())
    }

    /// Reads the segments back from the store when another node changed
    /// them (a segment's revision or time differs, or one came or went):
    /// the book is rebuilt as at start-up.
    async fn reload_segments(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut conn = self.store.conn().await?;
        let rows = store::segments(&mut conn).await?;
        let current = self.definitions();
        let same = rows.len() == current.segments.len()
            && rows.iter().all(|row| {
                current.segments.get(&row.name).is_some_and(|mine| {
                    mine.row.revision == row.revision && mine.row.updated_at == row.updated_at
                })
            });
        if same {
            return Ok(());
        }
        let (book, segments) = super::read_segments(&mut conn).await?;
        drop(conn);
        self.change(|d| {
            d.book = Arc::new(book);
            d.segments = segments;
        });
        Ok(())
    }

    /// Reads the events back from the store into the definitions; the names
    /// of the events this node drives that have a newer revision there
    /// (their actors must catch up with it).
    pub(super) async fn reload_events(self: &Arc<Self>) -> LiveOpsResult<Vec<String>> {
        let rows = {
            let mut conn = self.store.conn().await?;
            store::live_events(&mut conn).await?
        };
        let now = self.now_ms();
        let current = self.definitions();
        let mut updates = Vec::new();
        let mut refresh = Vec::new();
        let seen: std::collections::HashSet<String> = rows.iter().map(|r| r.name.clone()).collect();
        for row in rows {
            let Some(mut entry) = entry_of(&self.zones, &row) else {
                continue;
            };
            let mine = current.events.get(&row.name);
            if self.driving(&row.name) {
                // Its actor's fields are this node's; a revision written
                // elsewhere is taken, and the actor told.
                if let Some(mine) = mine.filter(|m| row.revision > m.revision) {
                    let mut next = (**mine).clone();
                    (
                        next.revision,
                        next.body,
                        next.spec,
                        next.zones,
                        next.updated_at,
                    ) = (
                        entry.revision,
                        entry.body,
                        entry.spec,
                        entry.zones,
                        entry.updated_at,
                    );
                    updates.push((row.name.clone(), next));
                    refresh.push(row.name);
                }
                continue;
            }
            entry.applied = entry.timetable().in_force(&entry.progress, now);
            let same = mine.is_some_and(|m| {
                m.revision == entry.revision
                    && m.progress == entry.progress
                    && m.applied == entry.applied
            });
            if !same {
                updates.push((row.name, entry));
            }
        }
        // Deleted elsewhere: an actor of one here stops, its lease given up.
        let gone: Vec<String> = current
            .events
            .keys()
            .filter(|name| !seen.contains(name.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            let running = hotswap_client::sync::lock(&self.actors).remove(name);
            if let Some(handle) = running {
                let _ = handle.command(actor::Command::Stop).await;
            }
            if let Some(entry) = current.events.get(name) {
                self.hub.give_up_lease(&event_resource(&entry.id));
            }
        }
        if !updates.is_empty() || !gone.is_empty() {
            self.change(|d| {
                for (name, entry) in updates {
                    d.events.insert(name, Arc::new(entry));
                }
                for name in &gone {
                    d.events.remove(name);
                }
            });
        }
        Ok(refresh)
    }
}
