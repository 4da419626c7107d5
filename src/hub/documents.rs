//! Documents and frames for game servers, built once and shared: the
//! opened version documents (a few revisions per config), the RFC 6902
//! patches between revisions, and encoded frames (`Bytes`) reused by every
//! session they go to.

use crate::catalog::{Catalog, CatalogError, ServedVersion};
use crate::store::now_ms;
use bytes::Bytes;
use hotswap_client::protocol::{self, HubMessage};
use hotswap_client::sync::lock;
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Revisions of one config kept opened in memory.
const REVISIONS_PER_CONFIG: usize = 8;
/// An encoded frame carries `sentAtMs`; a cached one is reused this long
/// (a reconnect storm shares encodes), then rebuilt with a fresh time.
const FRAME_REUSE: Duration = Duration::from_secs(1);

/// (config, base revision, target revision).
type PatchKey = (String, i64, i64);

#[derive(Clone, PartialEq, Eq, Hash)]
enum FrameKey {
    Snapshot {
        config: String,
        revision: i64,
        deployment: Option<String>,
    },
    Delta {
        config: String,
        base: i64,
        revision: i64,
        deployment: Option<String>,
    },
}

/// A document being read from the store: every caller that misses it
/// meanwhile waits for this one read (a reconnect storm of 10,000 servers
/// behind on one revision reads it once, not 10,000 times).
type Loading = Arc<tokio::sync::OnceCell<Result<Option<Arc<ServedVersion>>, Arc<CatalogError>>>>;

/// Takes a read's cell out of the map when it is done, or when the last
/// caller waiting on it goes (clones are made under the map's lock, so
/// the count is exact there).
struct Release<'a> {
    cells: &'a Mutex<HashMap<(String, i64), Loading>>,
    key: &'a (String, i64),
    cell: &'a Loading,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut cells = lock(self.cells);
        let done_or_abandoned = self.cell.initialized() || Arc::strong_count(self.cell) == 2;
        if done_or_abandoned
            && cells
                .get(self.key)
                .is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            cells.remove(self.key);
        }
    }
}

#[derive(Default)]
pub struct DocumentCache {
    documents: Mutex<HashMap<(String, i64), Arc<ServedVersion>>>,
    loading: Mutex<HashMap<(String, i64), Loading>>,
    /// Documents read from the store (`hotswap_document_loads_total`).
    loads: AtomicU64,
    /// (patch, its compact JSON length) by (config, base, target).
    patches: Mutex<HashMap<PatchKey, (Arc<Value>, usize)>>,
    document_sizes: Mutex<HashMap<(String, i64), usize>>,
    frames: Mutex<HashMap<FrameKey, (Instant, Bytes)>>,
}

impl std::fmt::Debug for DocumentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentCache").finish_non_exhaustive()
    }
}

impl DocumentCache {
    /// A version as servers receive it, from memory or the store; read
    /// from the store once however many callers miss it at the same time.
    pub async fn document(
        &self,
        catalog: &Catalog,
        config: &str,
        revision: i64,
    ) -> Result<Option<Arc<ServedVersion>>, Arc<CatalogError>> {
        let key = (config.to_owned(), revision);
        if let Some(found) = lock(&self.documents).get(&key) {
            return Ok(Some(found.clone()));
        }
        let loading = lock(&self.loading).entry(key.clone()).or_default().clone();
        // Let go of the cell once read, or if this caller goes first (a
        // resync cancelled mid-read): a later miss (an error, a revision
        // evicted) reads again.
        let _release = Release {
            cells: &self.loading,
            key: &key,
            cell: &loading,
        };
        loading
            .get_or_init(|| async {
                // Kept before this read ended? (A caller that missed just
                // before another's read was kept and its cell let go.)
                if let Some(found) = lock(&self.documents).get(&key) {
                    return Ok(Some(found.clone()));
                }
                self.loads.fetch_add(1, Ordering::Relaxed);
                let read = catalog
                    .served_version(config, revision)
                    .await
                    .map(|served| served.map(Arc::new))
                    .map_err(Arc::new);
                match &read {
                    Ok(Some(served)) => self.keep(&key, served.clone()),
                    Ok(None) => {}
                    // Said once here, not by each server waiting on it.
                    Err(error) => {
                        tracing::error!(%config, revision, %error, "cannot load a document for servers");
                    }
                }
                read
            })
            .await
            .clone()
    }

    /// Documents read from the store so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Keeps an opened version, and the newest few of its config.
    fn keep(&self, key: &(String, i64), served: Arc<ServedVersion>) {
        let mut documents = lock(&self.documents);
        documents.insert(key.clone(), served);
        let config = &key.0;
        let mut revisions: Vec<i64> = documents
            .keys()
            .filter(|(c, _)| c == config)
            .map(|(_, r)| *r)
            .collect();
        if revisions.len() > REVISIONS_PER_CONFIG {
            revisions.sort_unstable();
            for old in &revisions[..revisions.len() - REVISIONS_PER_CONFIG] {
                documents.remove(&(config.clone(), *old));
            }
        }
    }

    fn frame(&self, key: FrameKey, build: impl FnOnce(i64) -> HubMessage) -> Bytes {
        let mut frames = lock(&self.frames);
        if let Some((_, bytes)) = frames
            .get(&key)
            .filter(|(built, _)| built.elapsed() < FRAME_REUSE)
        {
            return bytes.clone();
        }
        frames.retain(|_, (built, _)| built.elapsed() < FRAME_REUSE);
        let bytes = Bytes::from(protocol::encode(&build(now_ms())));
        frames.insert(key, (Instant::now(), bytes.clone()));
        bytes
    }

    pub fn snapshot(&self, target: &ServedVersion, deployment: Option<&str>) -> Bytes {
        let key = FrameKey::Snapshot {
            config: target.config.clone(),
            revision: target.revision,
            deployment: deployment.map(str::to_owned),
        };
        self.frame(key, |sent_at_ms| HubMessage::Snapshot {
            config: target.config.clone(),
            revision: target.revision,
            version: target.version.clone(),
            content: target.document.clone(),
            checksum: target.checksum.clone(),
            signature: target.signature.clone(),
            deployment_id: deployment.map(str::to_owned),
            sent_at_ms,
        })
    }

    /// A delta from `base` to `target`, or a snapshot when the patch is not
    /// smaller than the document itself.
    pub fn delta_or_snapshot(
        &self,
        base: &ServedVersion,
        target: &ServedVersion,
        deployment: Option<&str>,
    ) -> Bytes {
        let patch_key = (target.config.clone(), base.revision, target.revision);
        let cached = lock(&self.patches).get(&patch_key).cloned();
        let (patch, patch_len) = match cached {
            Some(cached) => cached,
            None => {
                let patch = serde_json::to_value(crate::domain::diff::patch(
                    &base.document,
                    &target.document,
                ))
                .expect("a patch serializes");
                let patch_len = hotswap_client::canonical_json(&patch).len();
                let entry = (Arc::new(patch), patch_len);
                let mut patches = lock(&self.patches);
                if patches.len() > 1024 {
                    patches.clear();
                }
                patches.insert(patch_key, entry.clone());
                entry
            }
        };
        let document_len = *lock(&self.document_sizes)
            .entry((target.config.clone(), target.revision))
            .or_insert_with(|| hotswap_client::canonical_json(&target.document).len());
        if patch_len >= document_len {
            return self.snapshot(target, deployment);
        }
        let key = FrameKey::Delta {
            config: target.config.clone(),
            base: base.revision,
            revision: target.revision,
            deployment: deployment.map(str::to_owned),
        };
        self.frame(key, |sent_at_ms| HubMessage::Delta {
            config: target.config.clone(),
            base_revision: base.revision,
            revision: target.revision,
            version: target.version.clone(),
            patch: (*patch).clone(),
            checksum: target.checksum.clone(),
            signature: target.signature.clone(),
            deployment_id: deployment.map(str::to_owned),
            sent_at_ms,
        })
    }
}
