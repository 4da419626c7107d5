//! Group commit of server-id bindings. A server id unknown to the registry
//! is bound to its API key in the store before its `hello` is welcomed; a
//! fleet connecting for the first time brings thousands of them at once,
//! and one write transaction each queued on SQLite's write lock (and its
//! busy back-off) until hellos timed out. Claims are gathered while the
//! previous batch commits, written in one transaction, and each `hello`
//! goes on once its batch is committed. Each key keeps at most
//! `hub.max_server_ids_per_key` bindings: past it, its least recently seen
//! ids of servers the hub no longer knows are released (a fleet whose ids
//! churn keeps working; a key inventing ids cannot grow the table).

use crate::store::{Store, now_ms, server_bindings};
use hotswap_actors::Registry;
use std::{collections::HashMap, sync::Arc};
use tokio::sync::{mpsc, oneshot};

/// Claims in one transaction, at most.
const BATCH: usize = 1024;
/// Claims waiting for a transaction, at most (more wait to be queued).
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<String, String>>;

#[derive(Debug)]
struct Claim {
    server_id: String,
    key_id: String,
    reply: Reply,
}

/// The sending side; the writer task ends when it is dropped.
#[derive(Debug, Clone)]
pub(super) struct BindingWriter {
    claims: mpsc::Sender<Claim>,
}

impl BindingWriter {
    /// Starts the writer on the current runtime. `registry`: the servers
    /// the hub knows, whose ids are never released to the cap.
    pub fn start(store: Store, registry: Arc<Registry>, max_per_key: usize) -> Self {
        let (claims, received) = mpsc::channel(QUEUE);
        actix_web::rt::spawn(write_batches(store, registry, received, max_per_key.max(1)));
        Self { claims }
    }

    /// Binds `server_id` to `key_id` unless it is bound already; the key
    /// holding it once the claim is committed.
    pub async fn bind(&self, server_id: &str, key_id: &str) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let claim = Claim {
            server_id: server_id.to_owned(),
            key_id: key_id.to_owned(),
            reply,
        };
        self.claims
            .send(claim)
            .await
            .map_err(|_| "the binding writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the binding writer has stopped".to_owned())?
    }
}

async fn write_batches(
    store: Store,
    registry: Arc<Registry>,
    mut received: mpsc::Receiver<Claim>,
    max_per_key: usize,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while received.recv_many(&mut batch, BATCH).await > 0 {
        // The first claim of an id in a batch wins, as it would one by one.
        let mut seen = HashMap::with_capacity(batch.len());
        let pairs: Vec<(String, String)> = batch
            .iter()
            .filter(|c| seen.insert(c.server_id.clone(), ()).is_none())
            .map(|c| (c.server_id.clone(), c.key_id.clone()))
            .collect();
        let written = async {
            let mut tx = store.begin().await?;
            let holders = server_bindings::bind_many(&mut tx, &pairs, now_ms()).await?;
            let mut keys: Vec<&str> = pairs.iter().map(|(_, key)| key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                // This batch's ids are being welcomed: known too.
                let known =
                    |id: &str| seen.contains_key(id) || registry.read_then(id, |_| ()).is_some();
                let released = server_bindings::trim(&mut tx, key, max_per_key, known).await?;
                if released > 0 {
                    tracing::info!(
                        key,
                        released,
                        "released a key's least recently seen server ids past its cap"
                    );
                }
            }
            tx.commit().await?;
            anyhow::Ok(holders)
        }
        .await;
        for claim in batch.drain(..) {
            let answer = match &written {
                Ok(holders) => holders
                    .get(&claim.server_id)
                    .cloned()
                    .ok_or_else(|| "a binding just written is gone".to_owned()),
                Err(error) => Err(error.to_string()),
            };
            let _ = claim.reply.send(answer);
        }
    }
}
