//! What a server runs of a config: one pure function over explicit layers.
//!
//! A config is served in layers, highest precedence first:
//!
//! 1. **In flight**: the assignment of the deployment in progress, for the
//!    servers it covers now (its phase, batch, regions or variant).
//! 2. **Standing**: completed deployments narrowed by regions or tags
//!    (which never became the config's active revision), newest first.
//! 3. **Active**: the config's active revision, for everyone else.
//!
//! [`Layers::resolve`] is the one answer: `hello`, resync, each phase
//! change, a rollback and a reconnect all ask it, so a server connecting
//! in the middle of a deployment gets what its cohort runs. A new kind of
//! layer (a live event, an experiment) is one more entry in this order,
//! not a change to the deployment engine.

use super::rollout::{Assignment, Cover, bucket, variant};
use std::sync::Arc;

/// Standing layers kept per config (the oldest beyond it lapse).
pub const MAX_STANDING: usize = 64;

/// The little of a server that decides what it runs.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub server_id: &'a str,
    pub region: &'a str,
    /// Tags the server declared in its `hello`.
    pub tags: &'a [String],
    /// Tags an operator set on it.
    pub operator_tags: &'a [String],
}

impl Who<'_> {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().chain(self.operator_tags).any(|t| t == tag)
    }

    /// The revision `assignment` gives this server, if it covers it.
    pub fn revision_in(&self, assignment: &Assignment) -> Option<i64> {
        assignment.revision_for(self.server_id, self.region, |t| self.has_tag(t))
    }
}

/// Which layer a server's revision comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    InFlight,
    /// The standing layer at this index (0 = newest).
    Standing(usize),
    Active,
}

/// A server's revision and the layer it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub revision: i64,
    pub source: Source,
}

/// A server's cohort in the deployment in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cohort {
    /// Outside the deployment, on the revision it would run without it.
    Baseline,
    /// Covered, on the deployment's revision.
    Canary,
    /// Covered by an A/B test, on the revision of the variant at this index.
    Variant(usize),
}

/// How one config is served.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The config's active revision (none before its first deployment).
    pub active: Option<i64>,
    /// Completed narrowed deployments still in force, newest first.
    standing: Vec<Arc<Assignment>>,
    /// The deployment in progress.
    in_flight: Option<Arc<Assignment>>,
}

impl Layers {
    /// What the server should run, and where that comes from.
    pub fn resolve(&self, who: &Who) -> Option<Resolved> {
        self.in_flight
            .as_ref()
            .and_then(|a| who.revision_in(a))
            .map(|revision| Resolved {
                revision,
                source: Source::InFlight,
            })
            .or_else(|| self.settled(who))
    }

    /// What the server runs outside the deployment in flight.
    pub fn settled(&self, who: &Who) -> Option<Resolved> {
        self.standing
            .iter()
            .enumerate()
            .find_map(|(index, layer)| {
                who.revision_in(layer).map(|revision| Resolved {
                    revision,
                    source: Source::Standing(index),
                })
            })
            .or_else(|| {
                self.active.map(|revision| Resolved {
                    revision,
                    source: Source::Active,
                })
            })
    }

    /// The server's cohort in the deployment in flight, given the revision
    /// it has applied: covered and on the deployment's revision, or outside
    /// and on its settled one; `None` in between (a frame on its way) or
    /// with nothing in flight.
    pub fn cohort(&self, who: &Who, applied: Option<i64>) -> Option<Cohort> {
        let in_flight = self.in_flight.as_ref()?;
        match who.revision_in(in_flight) {
            Some(revision) if applied == Some(revision) => match &in_flight.cover {
                Cover::Variants(variants) => {
                    let weights: Vec<f64> = variants.iter().map(|v| v.0).collect();
                    variant(bucket(&in_flight.deployment_id, who.server_id), &weights)
                        .map(Cohort::Variant)
                }
                _ => Some(Cohort::Canary),
            },
            Some(_) => None,
            None if applied.is_some() && applied == self.settled(who).map(|r| r.revision) => {
                Some(Cohort::Baseline)
            }
            None => None,
        }
    }

    pub fn in_flight(&self) -> Option<&Arc<Assignment>> {
        self.in_flight.as_ref()
    }

    /// The deployment in flight is now `assignment`.
    pub fn fly(&mut self, assignment: Arc<Assignment>) {
        self.in_flight = Some(assignment);
    }

    /// Nothing is in flight any more, if `deployment_id` was.
    pub fn land(&mut self, deployment_id: &str) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|a| a.deployment_id == deployment_id)
        {
            self.in_flight = None;
        }
    }

    /// A completed deployment that covers everyone becomes the active
    /// revision; the standing layers it covers lapse.
    pub fn activate(&mut self, revision: i64) {
        self.active = Some(revision);
        self.standing.clear();
    }

    /// A completed narrowed deployment stands, newest first.
    pub fn stand(&mut self, assignment: Arc<Assignment>) {
        self.withdraw(&assignment.deployment_id);
        self.standing.insert(0, assignment);
        self.standing.truncate(MAX_STANDING);
    }

    /// The standing layers read back at start-up, newest first, all of
    /// them (the cap applies as new ones stand).
    pub fn restore_standing(&mut self, newest_first: Vec<Arc<Assignment>>) {
        self.standing = newest_first;
    }

    /// The standing layer of `deployment_id` is withdrawn (rolled back).
    pub fn withdraw(&mut self, deployment_id: &str) {
        self.standing.retain(|l| l.deployment_id != deployment_id);
    }

    /// Whether deployment `id` stands as a layer (at any depth).
    pub fn stands(&self, deployment_id: &str) -> bool {
        self.standing
            .iter()
            .any(|l| l.deployment_id == deployment_id)
    }

    /// The newest standing layer.
    pub fn newest_standing(&self) -> Option<&Arc<Assignment>> {
        self.standing.first()
    }

    pub fn has_standing(&self) -> bool {
        !self.standing.is_empty()
    }
}

/// Whether a server is brought to `resolved` now. A server that reports
/// itself unhealthy is not moved onto a new revision by the deployment in
/// flight (it waits until healthy); one already there, and every move by
/// another layer (a rollback to the active revision, say), goes ahead.
pub fn moves_now(resolved: Resolved, applied: Option<i64>, healthy: bool) -> bool {
    healthy || resolved.source != Source::InFlight || applied == Some(resolved.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::{BUCKETS, Scope};

    fn layer(id: &str, revision: i64, scope: Scope, cover: Cover) -> Arc<Assignment> {
        Arc::new(Assignment {
            deployment_id: id.into(),
            revision,
            scope,
            cover,
        })
    }

    fn regions(list: &[&str]) -> Scope {
        Scope {
            regions: list.iter().map(|r| r.to_string()).collect(),
            tags: Vec::new(),
        }
    }

    /// A server in `region` with `tags`, whose id puts it inside (or
    /// outside) the first `percent` of deployment `d-3`'s buckets.
    fn server(region: &'static str, tags: &'static [String], inside: bool) -> Who<'static> {
        let ids: &[&str] = &[
            "s-0", "s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "s-7", "s-8", "s-9",
        ];
        let id = ids
            .iter()
            .find(|id| (bucket("d-3", id) < BUCKETS / 2) == inside)
            .expect("ten ids fall on both sides of half");
        Who {
            server_id: id,
            region,
            tags,
            operator_tags: &[],
        }
    }

    #[test]
    fn the_precedence_is_in_flight_then_standing_newest_first_then_active() {
        static BETA: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["beta".to_string()]);
        let beta: &'static [String] = &BETA;
        let mut layers = Layers {
            active: Some(1),
            ..Layers::default()
        };
        // Older standing layer: every EU server on 2; newer: beta servers on 3.
        layers.stand(layer("d-1", 2, regions(&["EU"]), Cover::Below(BUCKETS)));
        layers.stand(layer(
            "d-2",
            3,
            Scope {
                regions: Vec::new(),
                tags: vec!["beta".into()],
            },
            Cover::Below(BUCKETS),
        ));
        // In flight: half of the NA servers on 4.
        layers.fly(layer("d-3", 4, regions(&["NA"]), Cover::Below(BUCKETS / 2)));
        use Source::*;
        // (server, revision, source)
        let table = [
            (server("NA", &[], true), 4, InFlight),
            (server("NA", beta, true), 4, InFlight),
            (server("NA", beta, false), 3, Standing(0)),
            (server("EU", beta, true), 3, Standing(0)),
            (server("EU", &[], true), 2, Standing(1)),
            (server("NA", &[], false), 1, Active),
            (server("APAC", &[], true), 1, Active),
        ];
        for (who, revision, source) in table {
            assert_eq!(
                layers.resolve(&who),
                Some(Resolved { revision, source }),
                "{} in {} tagged {:?}",
                who.server_id,
                who.region,
                who.tags
            );
        }
        // Landing the deployment leaves the layers below it.
        layers.land("d-3");
        assert_eq!(
            layers.resolve(&server("NA", &[], true)).map(|r| r.source),
            Some(Active)
        );
        // A withdrawn layer uncovers the one below it.
        layers.withdraw("d-2");
        assert_eq!(
            layers.resolve(&server("EU", beta, true)),
            Some(Resolved {
                revision: 2,
                source: Standing(0)
            })
        );
        // A deployment that covers everyone becomes the active revision.
        layers.activate(5);
        assert!(!layers.has_standing());
        assert_eq!(
            layers.resolve(&server("EU", beta, true)),
            Some(Resolved {
                revision: 5,
                source: Active
            })
        );
        assert_eq!(Layers::default().resolve(&server("EU", &[], true)), None);
    }

    #[test]
    fn cohorts_are_the_covered_on_its_revision_and_the_rest_on_theirs() {
        let mut layers = Layers {
            active: Some(1),
            ..Layers::default()
        };
        let inside = server("NA", &[], true);
        let outside = server("NA", &[], false);
        assert_eq!(layers.cohort(&inside, Some(1)), None, "nothing in flight");
        layers.fly(layer("d-3", 4, Scope::default(), Cover::Below(BUCKETS / 2)));
        // (server, applied, cohort)
        let table = [
            (inside, Some(4), Some(Cohort::Canary)),
            (inside, Some(1), None),
            (outside, Some(1), Some(Cohort::Baseline)),
            (outside, Some(4), None),
            (outside, None, None),
        ];
        for (who, applied, cohort) in table {
            assert_eq!(
                layers.cohort(&who, applied),
                cohort,
                "{} on {applied:?}",
                who.server_id
            );
        }
        layers.fly(layer(
            "d-3",
            0,
            Scope::default(),
            Cover::Variants(vec![(1.0, 7), (1.0, 8)]),
        ));
        let on = |who: &Who| layers.resolve(who).unwrap().revision;
        let expected = |who: &Who| Some(Cohort::Variant(usize::try_from(on(who) - 7).unwrap()));
        assert_eq!(layers.cohort(&inside, Some(on(&inside))), expected(&inside));
        assert_eq!(
            layers.cohort(&outside, Some(on(&outside))),
            expected(&outside)
        );
    }

    #[test]
    fn unhealthy_servers_wait_only_for_the_deployment_in_flight() {
        let to = |source| Resolved {
            revision: 4,
            source,
        };
        // (source, applied, healthy, moves)
        let table = [
            (Source::InFlight, Some(1), true, true),
            (Source::InFlight, Some(1), false, false),
            (Source::InFlight, None, false, false),
            (Source::InFlight, Some(4), false, true),
            (Source::Active, Some(1), false, true),
            (Source::Standing(0), Some(1), false, true),
        ];
        for (source, applied, healthy, moves) in table {
            assert_eq!(
                moves_now(to(source), applied, healthy),
                moves,
                "{source:?} from {applied:?}, healthy: {healthy}"
            );
        }
    }
}
