//! The telemetry writers: two tasks take what is queued (whole batches, up
//! to `telemetry.write_rows` events) and store it in one statement and
//! transaction, then answer every batch they took. On PostgreSQL each
//! day's partition is created before the first write to it. A failed write
//! answers its batches with the error (the client retries; event ids make
//! that safe); an accepted batch is answered only once stored.

use crate::{
    settings::TelemetrySettings,
    store::{Store, StoreError, telemetry as store},
};
use hotswap_client::sync::lock;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

/// Writer tasks: one writes while the other gathers the next batch.
const WRITERS: usize = 2;

struct Job {
    rows: Vec<store::EventRow>,
    /// Returned to the queue's budget when the job is done.
    _permit: OwnedSemaphorePermit,
    done: oneshot::Sender<Stored>,
}

/// A write's outcome: the kept attributes of the players it touched (of
/// every batch in it), or why it failed.
pub type Stored = Result<Arc<Vec<store::PlayerRow>>, String>;

/// The writers' queue (bounded: the budget of events bounds the jobs).
pub struct Queue {
    jobs: mpsc::Sender<Job>,
}

impl Queue {
    /// Hands rows to a writer and waits until they are stored.
    pub async fn write(&self, rows: Vec<store::EventRow>, permit: OwnedSemaphorePermit) -> Stored {
        let (done, stored) = oneshot::channel();
        self.jobs
            .send(Job {
                rows,
                _permit: permit,
                done,
            })
            .await
            .map_err(|_| "the hub is stopping".to_owned())?;
        stored.await.map_err(|_| "the writer stopped".to_owned())?
    }
}

pub fn start(store: Store, settings: &TelemetrySettings) -> Queue {
    let (jobs, receiver) = mpsc::channel(settings.queue_events.max(1));
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let days = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..WRITERS {
        tokio::spawn(write_loop(
            store.clone(),
            receiver.clone(),
            days.clone(),
            settings.write_rows.max(1),
        ));
    }
    Queue { jobs }
}

async fn write_loop(
    store: Store,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    days: Arc<Mutex<HashSet<i64>>>,
    write_rows: usize,
) {
    loop {
        let mut taken = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut rows = first.rows.len();
            taken.push(first);
            while rows < write_rows {
                match receiver.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        taken.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let rows: Vec<store::EventRow> = taken
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.rows))
            .collect();
        let result = write(&store, &days, &rows)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::warn!(%error, events = rows.len(), "telemetry not stored; its senders retry");
        }
        for job in taken {
            let _ = job.done.send(result.clone());
        }
    }
}

async fn write(
    store: &Store,
    days: &Mutex<HashSet<i64>>,
    rows: &[store::EventRow],
) -> Result<Vec<store::PlayerRow>, StoreError> {
    let mut needed: Vec<i64> = rows.iter().map(|r| r.d).collect();
    needed.sort_unstable();
    needed.dedup();
    needed.retain(|d| !lock(days).contains(d));
    if !needed.is_empty() {
        let mut conn = store.conn().await?;
        store::ensure_days(&mut conn, store.backend(), &needed).await?;
        lock(days).extend(needed);
    }
    let mut tx = store.begin().await?;
    let kept = store::insert_events(&mut tx, store.backend(), rows).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(kept)
}
