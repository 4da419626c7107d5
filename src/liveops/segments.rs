//! Segments: rules over player attributes, and lists of player ids. Each
//! change is checked on a copy of the segment book (cycles, depth, list
//! size), written with its audit row, then published.

use super::{
    LiveOps, LiveOpsError, LiveOpsResult, SegmentEntry, invalid,
    views::{SegmentView, segment_view},
};
use crate::{
    catalog::Actor,
    domain::{
        names::Slug,
        segments::{BUILT_IN, BookError, MAX_LIST_MEMBERS, Segment, SegmentBook},
    },
    store::{StoreError, audit, live_ops as store},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{collections::HashSet, sync::Arc};

/// Longest player id.
pub const MAX_PLAYER_ID_CHARS: usize = 128;
/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 1024;

/// `POST /segments` and `PUT /segments/{name}`: a rule or a list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentRequest {
    /// A slug; on `PUT`, absent or the path's name.
    pub name: Option<String>,
    pub description: Option<String>,
    /// A rule over attributes (`{"attribute": "level", "gte": 10}`,
    /// `{"all": [...]}`, `{"segment": "vip"}`...); not with `members`.
    #[schema(value_type = Option<Object>)]
    pub rule: Option<Value>,
    /// Player ids (at most 100,000): a list segment; not with `rule`.
    pub members: Option<Vec<String>>,
}

/// `POST /segments/{name}/members`: ids added and removed (a list segment).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MembersRequest {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

fn check_ids(ids: &[String], at: &str) -> LiveOpsResult<()> {
    if ids.len() > MAX_LIST_MEMBERS {
        return Err(invalid(
            at,
            format!("at most {MAX_LIST_MEMBERS} player ids"),
        ));
    }
    for (index, id) in ids.iter().enumerate() {
        if id.is_empty()
            || id.chars().count() > MAX_PLAYER_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(invalid(
                &format!("{at}/{index}"),
                format!("a player id is 1-{MAX_PLAYER_ID_CHARS} printable characters"),
            ));
        }
    }
    Ok(())
}

fn book_error(error: BookError) -> LiveOpsError {
    match error {
        BookError::Rule(rule) => invalid(&format!("/rule{}", rule.path), rule.message),
        BookError::Cycle(names) => invalid(
            "/rule",
            format!("the rule would close a cycle: {}", names.join(" → ")),
        ),
        BookError::TooDeep(depth) => invalid(
            "/rule",
            format!(
                "segment references would chain {depth} deep; at most {}",
                crate::domain::segments::MAX_DEPTH
            ),
        ),
        BookError::TooManyMembers(count) => invalid(
            "/members",
            format!("{count} members; at most {MAX_LIST_MEMBERS}"),
        ),
    }
}

fn description(request: &SegmentRequest) -> LiveOpsResult<String> {
    let text = request.description.clone().unwrap_or_default();
    if text.chars().count() > MAX_DESCRIPTION_CHARS
        || text.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(invalid(
            "/description",
            format!("at most {MAX_DESCRIPTION_CHARS} printable characters"),
        ));
    }
    Ok(text)
}

fn is_built_in(name: &str) -> bool {
    BUILT_IN.iter().any(|(n, _)| *n == name)
}

impl LiveOps {
    /// Refuses a list of `count` ids for `name` that would take the lists'
    /// total past `liveops.max_list_members_total`.
    fn check_total(&self, name: &str, count: usize, at: &str) -> LiveOpsResult<()> {
        let others: usize = self
            .definitions()
            .segments
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(_, entry)| entry.members)
            .sum();
        let max = self.settings.max_list_members_total;
        if others + count > max {
            return Err(invalid(
                at,
                format!(
                    "the lists would hold {} player ids in all; at most {max} (liveops.max_list_members_total)",
                    others + count
                ),
            ));
        }
        Ok(())
    }

    /// Every segment, built-in ones first, then by name.
    pub fn segments(&self) -> Vec<SegmentView> {
        let definitions = self.definitions();
        let built_in = BUILT_IN
            .iter()
            .map(|(name, rule)| SegmentView::built_in(name, rule));
        built_in
            .chain(definitions.segments.values().map(segment_view))
            .collect()
    }

    pub fn segment(&self, name: &str) -> LiveOpsResult<SegmentView> {
        if let Some((name, rule)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
            return Ok(SegmentView::built_in(name, rule));
        }
        self.definitions()
            .segments
            .get(name)
            .map(segment_view)
            .ok_or_else(|| LiveOpsError::SegmentNotFound(name.to_owned()))
    }

    pub async fn create_segment(
        &self,
        actor: &Actor,
        request: SegmentRequest,
    ) -> LiveOpsResult<SegmentView> {
        let _writing = self.writes.lock().await;
        let name = request
            .name
            .as_deref()
            .ok_or_else(|| invalid("/name", "required"))?;
        let name = Slug::parse(name).map_err(|e| invalid("/name", e.to_string()))?;
        let name = name.as_str().to_owned();
        let definitions = self.definitions();
        if is_built_in(&name) || definitions.segments.contains_key(&name) {
            return Err(LiveOpsError::SegmentExists(name));
        }
        if definitions.segments.len() >= self.settings.max_segments {
            return Err(invalid(
                "/name",
                format!(
                    "at most {} segments; delete one first",
                    self.settings.max_segments
                ),
            ));
        }
        let description = description(&request)?;
        let mut book = (*definitions.book).clone();
        let (kind, rule, members) = match (&request.rule, request.members) {
            (Some(rule), None) => {
                book.define_rule(&name, rule).map_err(book_error)?;
                ("rule", Some(rule.to_string()), Vec::new())
            }
            (None, Some(members)) => {
                check_ids(&members, "/members")?;
                let members: Vec<String> = members
                    .into_iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                self.check_total(&name, members.len(), "/members")?;
                book.define_list(&name, members.iter().cloned())
                    .map_err(book_error)?;
                ("list", None, members)
            }
            _ => return Err(invalid("", "a segment has either a `rule` or `members`")),
        };
        // A record's time: the system clock's.
        let now = crate::store::now_ms();
        let row = store::SegmentRow {
            name: name.clone(),
            kind: kind.to_owned(),
            description,
            rule,
            revision: 1,
            created_by: actor.subject.clone(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store.begin().await?;
        store::insert_segment(&mut tx, &row).await?;
        store::add_members(&mut tx, &name, &members).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "segment.create",
                format!("segments/{name}"),
                json!({ "kind": kind, "members": members.len() }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        let entry = SegmentEntry {
            row,
            members: members.len(),
        };
        let view = segment_view(&entry);
        self.change(|d| {
            d.book = Arc::new(book);
            d.segments.insert(name, entry);
        });
        Ok(view)
    }

    /// Replaces a segment's description and rule (or its whole list).
    pub async fn update_segment(
        &self,
        actor: &Actor,
        name: &str,
        request: SegmentRequest,
    ) -> LiveOpsResult<SegmentView> {
        let _writing = self.writes.lock().await;
        if is_built_in(name) {
            return Err(invalid("/name", "built-in segments cannot change"));
        }
        if request.name.as_deref().is_some_and(|n| n != name) {
            return Err(invalid("/name", "a segment cannot be renamed"));
        }
        let definitions = self.definitions();
        let current = definitions
            .segments
            .get(name)
            .ok_or_else(|| LiveOpsError::SegmentNotFound(name.to_owned()))?;
        let description = description(&request)?;
        let mut book = (*definitions.book).clone();
        let (rule, members) = match (&current.row.kind[..], &request.rule, request.members) {
            ("rule", Some(rule), None) => {
                book.define_rule(name, rule).map_err(book_error)?;
                (Some(rule.to_string()), None)
            }
            ("rule", None, None) => (current.row.rule.clone(), None),
            ("list", None, Some(members)) => {
                check_ids(&members, "/members")?;
                let members: Vec<String> = members
                    .into_iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                self.check_total(name, members.len(), "/members")?;
                book.define_list(name, members.iter().cloned())
                    .map_err(book_error)?;
                (None, Some(members))
            }
            ("list", None, None) => (None, None),
            _ => {
                return Err(invalid(
                    "",
                    format!("segment {name:?} is a {} segment", current.row.kind),
                ));
            }
        };
        // A record's time: the system clock's.
        let now = crate::store::now_ms();
        let mut tx = self.store.begin().await?;
        if !store::update_segment(
            &mut tx,
            name,
            current.row.revision,
            &description,
            rule.as_deref(),
            now,
        )
        .await?
        {
            return Err(LiveOpsError::Catalog(
                crate::catalog::CatalogError::Conflict,
            ));
        }
        if let Some(members) = &members {
            store::clear_members(&mut tx, name).await?;
            store::add_members(&mut tx, name, members).await?;
        }
        audit::record(
            &mut tx,
            actor.audit_entry(
                "segment.update",
                format!("segments/{name}"),
                json!({ "members": members.as_ref().map(Vec::len) }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        let mut entry = current.clone();
        entry.row.description = description;
        entry.row.rule = rule;
        entry.row.revision += 1;
        entry.row.updated_at = now;
        if let Some(members) = &members {
            entry.members = members.len();
        }
        let view = segment_view(&entry);
        let name = name.to_owned();
        self.change(|d| {
            d.book = Arc::new(book);
            d.segments.insert(name, entry);
        });
        Ok(view)
    }

    /// Adds and removes ids of a list segment.
    pub async fn change_members(
        &self,
        actor: &Actor,
        name: &str,
        request: MembersRequest,
    ) -> LiveOpsResult<SegmentView> {
        let _writing = self.writes.lock().await;
        check_ids(&request.add, "/add")?;
        check_ids(&request.remove, "/remove")?;
        let definitions = self.definitions();
        let current = definitions
            .segments
            .get(name)
            .ok_or_else(|| LiveOpsError::SegmentNotFound(name.to_owned()))?;
        let Some(Segment::List(set)) = definitions.book.get(name) else {
            return Err(invalid("", format!("segment {name:?} is not a list")));
        };
        let mut set = set.clone();
        let removed: Vec<String> = request
            .remove
            .iter()
            .filter(|id| set.remove(id.as_str()))
            .cloned()
            .collect();
        let added: Vec<String> = request
            .add
            .into_iter()
            .filter(|id| set.insert(id.clone()))
            .collect();
        if set.len() > MAX_LIST_MEMBERS {
            return Err(invalid(
                "/add",
                format!(
                    "the list would hold {} ids; at most {MAX_LIST_MEMBERS}",
                    set.len()
                ),
            ));
        }
        let count = set.len();
        self.check_total(name, count, "/add")?;
        let mut book: SegmentBook = (*definitions.book).clone();
        book.define_list(name, set).map_err(book_error)?;
        // A record's time: the system clock's.
        let now = crate::store::now_ms();
        let mut tx = self.store.begin().await?;
        store::remove_members(&mut tx, name, &removed).await?;
        store::add_members(&mut tx, name, &added).await?;
        store::touch_segment(&mut tx, name, now).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "segment.members",
                format!("segments/{name}"),
                json!({ "added": added.len(), "removed": removed.len() }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        let mut entry = current.clone();
        entry.members = count;
        entry.row.revision += 1;
        entry.row.updated_at = now;
        let view = segment_view(&entry);
        let name = name.to_owned();
        self.change(|d| {
            d.book = Arc::new(book);
            d.segments.insert(name, entry);
        });
        Ok(view)
    }

    /// Deletes a segment no event and no other segment names.
    pub async fn delete_segment(&self, actor: &Actor, name: &str) -> LiveOpsResult<()> {
        let _writing = self.writes.lock().await;
        if is_built_in(name) {
            return Err(invalid("/name", "built-in segments cannot be deleted"));
        }
        let definitions = self.definitions();
        if !definitions.segments.contains_key(name) {
            return Err(LiveOpsError::SegmentNotFound(name.to_owned()));
        }
        let mut users: Vec<String> = definitions
            .events
            .values()
            .filter(|e| e.spec.audience.segments.iter().any(|s| s == name))
            .map(|e| format!("live-events/{}", e.name()))
            .collect();
        users.extend(definitions.segments.keys().filter(|other| {
            matches!(definitions.book.get(other), Some(Segment::Rule(rule)) if rule.references().contains(&name))
        }).map(|other| format!("segments/{other}")));
        if !users.is_empty() {
            return Err(LiveOpsError::SegmentInUse {
                segment: name.to_owned(),
                events: users,
            });
        }
        let mut tx = self.store.begin().await?;
        store::delete_segment(&mut tx, name).await?;
        audit::record(
            &mut tx,
            actor.audit_entry("segment.delete", format!("segments/{name}"), json!({})),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        let mut book = (*definitions.book).clone();
        book.remove(name);
        let name = name.to_owned();
        self.change(|d| {
            d.book = Arc::new(book);
            d.segments.remove(&name);
        });
        Ok(())
    }
}
