//! Operators' actions on a deployment another node drives: sent to its
//! owner over the channel and answered there, so a REST call reaching any
//! node behind the load balancer acts on the deployment.

use crate::{
    catalog::Actor,
    cluster::Message,
    hub::{
        Hub,
        deployments::{DeploymentError, RollbackRequest, ThresholdsRequest},
        engine::Action,
    },
};
use hotswap_client::sync::lock;
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};

/// How long a node waits for the owner's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Actions waiting for an answer on this node, at most.
const MAX_PENDING: usize = 1_024;

/// Removes a forwarded action's waiting entry however its wait ends
/// (answered, timed out, or its caller gone).
struct Waiting<'a>(
    &'a std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::oneshot::Sender<(String, String)>>,
    >,
    String,
);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

/// An action as it travels.
fn to_wire(action: &Action) -> Value {
    match action {
        Action::Approve => json!({ "action": "approve" }),
        Action::Pause => json!({ "action": "pause" }),
        Action::Resume => json!({ "action": "resume" }),
        Action::Promote => json!({ "action": "promote" }),
        Action::Cancel => json!({ "action": "cancel" }),
        Action::Supersede(by) => json!({ "action": "supersede", "by": by }),
        Action::Rollback(request) => json!({ "action": "rollback", "request": request }),
        Action::Thresholds(request) => json!({ "action": "thresholds", "request": request }),
    }
}

/// An action read back, as strictly as its REST body was.
fn from_wire(value: &Value) -> Result<Action, String> {
    let request = || value.get("request").cloned().unwrap_or(Value::Null);
    Ok(match value["action"].as_str() {
        Some("approve") => Action::Approve,
        Some("pause") => Action::Pause,
        Some("resume") => Action::Resume,
        Some("promote") => Action::Promote,
        Some("cancel") => Action::Cancel,
        Some("supersede") => Action::Supersede(
            value["by"]
                .as_str()
                .filter(|by| by.len() <= 64)
                .ok_or("a supersede names its deployment")?
                .to_owned(),
        ),
        Some("rollback") => Action::Rollback(
            serde_json::from_value::<RollbackRequest>(request()).map_err(|e| e.to_string())?,
        ),
        Some("thresholds") => Action::Thresholds(
            serde_json::from_value::<ThresholdsRequest>(request()).map_err(|e| e.to_string())?,
        ),
        other => return Err(format!("unknown action {other:?}")),
    })
}

/// An outcome as it travels: `ok`, or the error's kind and message.
fn outcome_of(result: &Result<(), DeploymentError>) -> (&'static str, String) {
    match result {
        Ok(()) => ("ok", String::new()),
        Err(error) => (
            match error {
                DeploymentError::Invalid(_) => "invalid",
                DeploymentError::InProgress(_) => "inProgress",
                DeploymentError::NotFound(_) => "notFound",
                DeploymentError::Forbidden(_) => "forbidden",
                DeploymentError::Stopping | DeploymentError::OwnerUnreachable(_) => "unavailable",
                _ => "conflict",
            },
            error.to_string().chars().take(4_000).collect(),
        ),
    }
}

fn error_of(outcome: &str, message: String) -> Result<(), DeploymentError> {
    Err(match outcome {
        "ok" => return Ok(()),
        "invalid" => DeploymentError::Invalid(message),
        "inProgress" => DeploymentError::Conflict(message),
        "notFound" => DeploymentError::NotFound(message),
        "forbidden" => DeploymentError::Forbidden(message),
        "unavailable" => DeploymentError::OwnerUnreachable(message),
        _ => DeploymentError::Conflict(message),
    })
}

impl Hub {
    /// Whether another node drives deployment `id` (it is unfinished and
    /// this node holds no lease on it).
    pub(in crate::hub) fn driven_elsewhere(&self, id: &str, status: &str) -> bool {
        self.cluster.is_some()
            && !self.lease_held(id)
            && !crate::domain::rollout::DeploymentState::from_stored(status, 0).is_finished()
    }

    /// Sends the message `make` builds (given its request id) and waits at
    /// most 5 s for the owner's answer: (outcome, message), or `Err(why)`
    /// when none came (or too many wait already, or there is no cluster).
    async fn ask(&self, make: impl FnOnce(String) -> Message) -> Result<(String, String), String> {
        let Some(node) = &self.cluster else {
            return Err("this hub is no cluster's node".into());
        };
        let request = uuid::Uuid::now_v7().to_string();
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut pending = lock(&node.pending);
            if pending.len() >= MAX_PENDING {
                return Err("too many actions wait for other nodes; retry".into());
            }
            pending.insert(request.clone(), reply);
        }
        let _waiting = Waiting(&node.pending, request.clone());
        node.cluster.send(make(request));
        match tokio::time::timeout(ANSWER_WITHIN, answer).await {
            Ok(Ok(answered)) => Ok(answered),
            _ => Err("the node driving it did not answer within 5 s; retry".into()),
        }
    }

    /// Sends `action` to the node driving deployment `id` and waits (at
    /// most 5 s) for its answer.
    pub(in crate::hub) async fn forward(
        &self,
        id: &str,
        action: &Action,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let answered = self
            .ask(|request| Message::Command {
                request,
                deployment: id.to_owned(),
                action: to_wire(action),
                actor: serde_json::to_value(actor).expect("an actor serializes"),
            })
            .await;
        // The owner's view said before its answer is older than the
        // action: the store (committed before the answer) is read instead,
        // until the owner says a newer one.
        self.forget_view(id);
        match answered {
            Ok((outcome, message)) => error_of(&outcome, message),
            Err(why) => Err(DeploymentError::OwnerUnreachable(format!(
                "deployment {id}: {why}"
            ))),
        }
    }

    /// Another node's action on a deployment this node drives: carried out
    /// by its actor, then answered. Ignored unless this node drives it.
    pub(in crate::hub) fn on_command(
        self: &Arc<Self>,
        from: String,
        request: String,
        deployment: String,
        action: Value,
        actor: Value,
    ) {
        let Some(node) = &self.cluster else {
            return;
        };
        if !self.lease_held(&deployment) {
            return;
        }
        let handle = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            .find(|l| *l.deployment_id == *deployment && !l.mirror)
            .and_then(|l| l.handle.clone());
        let cluster = node.cluster.clone();
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let result = match (from_wire(&action), serde_json::from_value::<Actor>(actor)) {
                (Ok(action), Ok(actor)) => match handle {
                    Some(handle) => hub.send(&handle, action, &actor).await,
                    None => Err(DeploymentError::Conflict(format!(
                        "deployment {deployment} is not running"
                    ))),
                },
                (Err(why), _) => Err(DeploymentError::Invalid(why)),
                (_, Err(why)) => Err(DeploymentError::Invalid(why.to_string())),
            };
            let (outcome, message) = outcome_of(&result);
            cluster.send(Message::Reply {
                request,
                to: from,
                outcome: outcome.into(),
                message,
            });
        });
    }

    /// Sends a live event's control (or `refresh`) to the node driving it
    /// and waits (at most 5 s) for its answer: (kind, message) when refused.
    pub(crate) async fn forward_event(
        &self,
        event: &str,
        control: &str,
        actor: &Actor,
    ) -> Result<(), (String, String)> {
        let answered = self
            .ask(|request| Message::EventCommand {
                request,
                event: event.to_owned(),
                control: control.to_owned(),
                actor: serde_json::to_value(actor).expect("an actor serializes"),
            })
            .await;
        match answered {
            Ok((outcome, _)) if outcome == "ok" => Ok(()),
            Ok(refused) => Err(refused),
            Err(why) => Err((
                "unavailable".to_owned(),
                format!("live event {event}: {why}"),
            )),
        }
    }

    /// Another node's control of a live event: carried out by live ops
    /// when this node drives it, then answered.
    pub(in crate::hub) fn on_event_command(
        &self,
        from: String,
        request: String,
        event: String,
        control: String,
        actor: Value,
    ) {
        let Some(node) = &self.cluster else {
            return;
        };
        let Some(commands) = node.event_commands.get() else {
            return;
        };
        let Ok(actor) = serde_json::from_value::<Actor>(actor) else {
            return;
        };
        let answer = commands(event, control, actor);
        let cluster = node.cluster.clone();
        actix_web::rt::spawn(async move {
            let Some(result) = answer.await else {
                return;
            };
            let (outcome, message) = match result {
                Ok(()) => ("ok".to_owned(), String::new()),
                Err((outcome, message)) => (outcome, message.chars().take(4_000).collect()),
            };
            cluster.send(Message::Reply {
                request,
                to: from,
                outcome,
                message,
            });
        });
    }

    /// The owner's answer to an action this node forwarded.
    pub(in crate::hub) fn on_reply(&self, request: &str, outcome: String, message: String) {
        if let Some(node) = &self.cluster
            && let Some(reply) = lock(&node.pending).remove(request)
        {
            let _ = reply.send((outcome, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_travel_and_come_back_as_they_were() {
        let actions = [
            Action::Approve,
            Action::Pause,
            Action::Resume,
            Action::Promote,
            Action::Cancel,
            Action::Supersede("d2".into()),
            Action::Rollback(RollbackRequest {
                region: Some("EU-WEST".into()),
                reason: Some("bad".into()),
            }),
        ];
        for action in actions {
            let back = from_wire(&to_wire(&action)).unwrap();
            assert_eq!(format!("{back:?}"), format!("{action:?}"));
        }
        assert!(from_wire(&json!({ "action": "explode" })).is_err());
        assert!(from_wire(&json!({ "action": "rollback", "request": { "force": true } })).is_err());
        let refused = outcome_of(&Err(DeploymentError::Conflict("no".into())));
        assert!(matches!(
            error_of(refused.0, refused.1),
            Err(DeploymentError::Conflict(m)) if m == "no"
        ));
        assert!(error_of("ok", String::new()).is_ok());
    }
}
