//! Keeping stored versions in step with the hub's keys: signing versions
//! written before signing existed, and re-encrypting secrets under a new key.

use super::{Actor, Catalog, CatalogError, CatalogResult};
use crate::{
    crypto::keyring,
    store::{StoreError, audit, configs, now_ms, upkeep, versions},
};
use serde_json::json;

impl Catalog {
    /// Signs versions that have no signature yet (written before signing
    /// existed). Returns how many were signed.
    pub async fn sign_unsigned_versions(&self) -> CatalogResult<usize> {
        let mut conn = self.store.conn().await?;
        let unsigned = versions::unsigned(&mut conn).await?;
        drop(conn);
        for (id, config, revision, checksum) in &unsigned {
            let signature = self.keys.signer.sign(config, *revision, checksum);
            let mut tx = self.store.begin().await?;
            versions::set_signature(&mut tx, id, &signature, self.keys.signer.key_id()).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(unsigned.len())
    }

    /// Once per store: records, for every config, the pointers its stored
    /// versions hold sealed (written before the hub remembered them), so
    /// later versions keep them sealed. Returns how many were recorded.
    pub async fn backfill_sealed_paths(&self) -> CatalogResult<Option<usize>> {
        const STEP: &str = "sealed-paths-v1";
        let mut conn = self.store.conn().await?;
        if upkeep::is_done(&mut conn, STEP).await? {
            return Ok(None);
        }
        let rows = versions::sealed_content_by_config(&mut conn, keyring::ENVELOPE_PREFIX).await?;
        drop(conn);
        let mut paths: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for (config_id, content) in rows {
            let document: serde_json::Value =
                serde_json::from_str(&content).map_err(|e| CatalogError::Unexpected(e.into()))?;
            paths
                .entry(config_id)
                .or_default()
                .extend(keyring::envelope_paths(&document));
        }
        let mut tx = self.store.begin().await?;
        let mut recorded = 0;
        for (config_id, sealed) in &paths {
            let sealed: Vec<String> = sealed.iter().cloned().collect();
            configs::add_sealed_paths(&mut tx, config_id, &sealed).await?;
            recorded += sealed.len();
        }
        upkeep::mark_done(
            &mut tx,
            STEP,
            now_ms(),
            &json!({ "configs": paths.len(), "paths": recorded }).to_string(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(recorded))
    }

    /// Re-encrypts every stored secret not sealed by the current key. Safe
    /// while hubs run: each rewrite only replaces the exact text it read, and
    /// hubs configured with the old key among `previous_keys` keep opening
    /// both forms meanwhile. Returns (versions rewritten, values re-sealed).
    pub async fn rotate_secrets(&self, actor: &Actor) -> CatalogResult<(usize, usize)> {
        let keyring = &self.keys.keyring;
        let current = keyring
            .current_key_id()
            .ok_or(CatalogError::Secrets(keyring::KeyringError::NoKey))?
            .to_owned();
        let mut conn = self.store.conn().await?;
        let candidates = versions::with_sealed_content(&mut conn, keyring::ENVELOPE_PREFIX).await?;
        drop(conn);
        let (mut rewritten, mut resealed) = (0, 0);
        for (id, content) in candidates {
            let mut document: serde_json::Value =
                serde_json::from_str(&content).map_err(|e| CatalogError::Unexpected(e.into()))?;
            let paths = keyring::envelope_paths(&document);
            let key_ids = keyring
                .open_all(&mut document)
                .map_err(CatalogError::Secrets)?;
            if key_ids.iter().all(|k| *k == current) {
                continue;
            }
            keyring
                .seal_paths(&mut document, &paths)
                .map_err(CatalogError::Secrets)?;
            let text = String::from_utf8(hotswap_client::canonical_json(&document))
                .map_err(|e| CatalogError::Unexpected(e.into()))?;
            let mut tx = self.store.begin().await?;
            if versions::replace_sealed_content(&mut tx, &id, &content, &text).await? {
                resealed += paths.len();
                rewritten += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        let mut tx = self.store.begin().await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "secrets.rotate",
                "secrets".into(),
                json!({ "keyId": current, "versions": rewritten, "values": resealed }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((rewritten, resealed))
    }
}
