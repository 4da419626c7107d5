//! Game-server API keys: created by admins (the secret is shown once),
//! listed without it, revoked; and checked when a server connects.

use super::{
    Actor, Catalog, CatalogError, CatalogResult, PageRequest,
    views::{ApiKeyView, CreatedApiKeyView, Page, ServerIdentity},
};
use crate::{
    auth::api_keys,
    domain::kinds::Environment,
    store::{
        StoreError,
        api_keys::{self as store_keys, NewApiKey},
        audit, now_ms,
    },
};
use serde::Deserialize;
use serde_json::json;

/// Most regions one key may be limited to.
const MAX_REGIONS: usize = 100;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// What the key is for (`eu-west-fleet`); 1-128 characters.
    pub name: String,
    /// Environments the key may serve; empty or absent means all.
    #[serde(default)]
    pub environments: Vec<Environment>,
    /// Regions the key may serve (`NA-WEST`); empty or absent means all.
    #[serde(default)]
    pub regions: Vec<String>,
}

fn invalid(path: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::InvalidField {
        path: path.into(),
        message: message.into(),
    }
}

impl Catalog {
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        request: NewApiKeyRequest,
    ) -> CatalogResult<CreatedApiKeyView> {
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(invalid("/name", "must be 1-128 printable characters"));
        }
        if request.regions.len() > MAX_REGIONS {
            return Err(invalid(
                "/regions",
                format!("at most {MAX_REGIONS} regions"),
            ));
        }
        for (index, region) in request.regions.iter().enumerate() {
            let ok = !region.is_empty()
                && region.len() <= 64
                && region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(invalid(
                    &format!("/regions/{index}"),
                    "a region is 1-64 letters, digits, '-' or '_'",
                ));
            }
        }
        let mut environments: Vec<&str> = request.environments.iter().map(|e| e.as_str()).collect();
        environments.sort_unstable();
        environments.dedup();
        let mut regions = request.regions.clone();
        regions.sort();
        regions.dedup();
        let key = api_keys::generate();
        let id = uuid::Uuid::now_v7().to_string();
        let environments_json = json!(environments).to_string();
        let regions_json = json!(regions).to_string();
        let mut tx = self.store.begin().await?;
        store_keys::insert(
            &mut tx,
            &NewApiKey {
                id: &id,
                name,
                key_hash: &key.hash,
                hint: &key.hint,
                environments: &environments_json,
                regions: &regions_json,
                created_by: &actor.subject,
                created_at: now_ms(),
            },
        )
        .await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "api-key.create",
                format!("api-keys/{id}"),
                json!({ "name": name, "hint": key.hint, "environments": environments, "regions": regions }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let mut conn = self.store.conn().await?;
        let row = store_keys::by_id(&mut conn, &id).await?.ok_or_else(|| {
            CatalogError::Unexpected(anyhow::anyhow!("the key just written is gone"))
        })?;
        Ok(CreatedApiKeyView {
            key: key.secret,
            api_key: ApiKeyView::from(row),
        })
    }

    pub async fn list_api_keys(&self, page: &PageRequest) -> CatalogResult<Page<ApiKeyView>> {
        let before = page.position()?;
        let mut conn = self.store.conn().await?;
        let rows = store_keys::list(&mut conn, before.as_deref(), page.fetch_limit()).await?;
        Ok(page.page(rows, |row| row.id.clone(), ApiKeyView::from))
    }

    /// Revokes a key. The socket endpoint closes the sessions that use it.
    pub async fn revoke_api_key(&self, actor: &Actor, id: &str) -> CatalogResult<ApiKeyView> {
        let not_found = || CatalogError::ApiKeyNotFound(id.to_owned());
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(not_found());
        }
        let mut tx = self.store.begin().await?;
        if !store_keys::revoke(&mut tx, id, &actor.subject, now_ms()).await? {
            return Err(not_found());
        }
        audit::record(
            &mut tx,
            actor.audit_entry("api-key.revoke", format!("api-keys/{id}"), json!({})),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let mut conn = self.store.conn().await?;
        Ok(ApiKeyView::from(
            store_keys::by_id(&mut conn, id)
                .await?
                .ok_or_else(not_found)?,
        ))
    }

    /// The identity behind a presented key, if it is live.
    pub async fn authenticate_server_key(
        &self,
        presented: &str,
    ) -> CatalogResult<Option<ServerIdentity>> {
        if !api_keys::looks_like_key(presented) {
            return Ok(None);
        }
        let mut conn = self.store.conn().await?;
        let row = store_keys::live_by_hash(&mut conn, &api_keys::hash(presented)).await?;
        Ok(row.map(ServerIdentity::from))
    }
}
