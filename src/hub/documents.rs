//! Documents and frames for game servers, built once and shared: the
//! opened version documents (a few revisions per config), the RFC 6902
//! patches between revisions, and encoded frames (`Bytes`) reused by every
//! session they go to.

use crate::catalog::{Catalog, CatalogResult, ServedVersion};
use crate::store::now_ms;
use bytes::Bytes;
use hotswap_client::protocol::{self, HubMessage};
use hotswap_client::sync::lock;
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
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

#[derive(Default)]
pub struct DocumentCache {
    documents: Mutex<HashMap<(String, i64), Arc<ServedVersion>>>,
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
    /// A version as servers receive it, from memory or the store.
    pub async fn document(
        &self,
        catalog: &Catalog,
        config: &str,
        revision: i64,
    ) -> CatalogResult<Option<Arc<ServedVersion>>> {
        let key = (config.to_owned(), revision);
        if let Some(found) = lock(&self.documents).get(&key) {
            return Ok(Some(found.clone()));
        }
        let Some(served) = catalog.served_version(config, revision).await? else {
            return Ok(None);
        };
        let served = Arc::new(served);
        let mut documents = lock(&self.documents);
        documents.insert(key, served.clone());
        let mut revisions: Vec<i64> = documents
            .keys()
            .filter(|(c, _)| c == config)
            .map(|(_, r)| *r)
            .collect();
        if revisions.len() > REVISIONS_PER_CONFIG {
            revisions.sort_unstable();
            for old in &revisions[..revisions.len() - REVISIONS_PER_CONFIG] {
                documents.remove(&(config.to_owned(), *old));
            }
        }
        Ok(Some(served))
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
