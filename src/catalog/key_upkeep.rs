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

    /// Once per store: moves every stored version's checksum to RFC 8785
    /// (JCS) and signs it again, in place (the document is unchanged), with
    /// one audit row for the whole step. Returns `(versions, changed)`, or
    /// `None` when it was done already. A version whose secrets cannot be
    /// opened (no key for them) leaves the step to the next start.
    pub async fn upgrade_checksums(&self) -> CatalogResult<Option<(usize, usize)>> {
        const STEP: &str = "checksums-rfc8785-v1";
        let mut conn = self.store.conn().await?;
        if upkeep::is_done(&mut conn, STEP).await? {
            return Ok(None);
        }
        drop(conn);
        let (mut seen, mut changed, mut unopened) = (0, 0, 0);
        let mut after = String::new();
        loop {
            let mut conn = self.store.conn().await?;
            let page = versions::checksums_after(&mut conn, &after, 200).await?;
            drop(conn);
            let Some(last) = page.last() else {
                break;
            };
            after = last.id.clone();
            let mut tx = self.store.begin().await?;
            for version in &page {
                seen += 1;
                let document = match self.opened_stored(&version.content) {
                    Ok(document) => document,
                    Err(error) => {
                        tracing::warn!(version = %version.id, %error, "cannot open a version to upgrade its checksum");
                        unopened += 1;
                        continue;
                    }
                };
                let checksum = hotswap_client::document_checksum(&document);
                if checksum == version.checksum {
                    continue;
                }
                let signature = self
                    .keys
                    .signer
                    .sign(&version.config, version.revision, &checksum);
                if versions::upgrade_checksum(
                    &mut tx,
                    &version.id,
                    &version.checksum,
                    &checksum,
                    &signature,
                    self.keys.signer.key_id(),
                )
                .await?
                {
                    changed += 1;
                }
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        if unopened > 0 {
            return Ok(Some((seen, changed)));
        }
        let summary = json!({ "scheme": "RFC 8785 (JCS)", "versions": seen, "changed": changed });
        let mut tx = self.store.begin().await?;
        // A store without versions (a first start) has nothing to audit.
        if upkeep::mark_done(&mut tx, STEP, now_ms(), &summary.to_string()).await? && seen > 0 {
            audit::record(
                &mut tx,
                Actor::system().audit_entry(
                    "versions.checksum-upgrade",
                    "versions".into(),
                    summary,
                ),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some((seen, changed)))
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
