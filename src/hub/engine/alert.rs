//! The rollback alert: a webhook told of every rollback, fire and forget.

use crate::hub::{Hub, deployments::RollbackRecord};
use crate::store::hub as store_hub;
use serde_json::json;
use std::time::Duration;

impl Hub {
    /// Posts a rollback alert to the webhook, if one is set (fire and forget).
    pub(super) fn alert(&self, row: &store_hub::DeploymentRow, record: &RollbackRecord) {
        let url = self.deployment_settings.alert_webhook.trim().to_owned();
        if url.is_empty() {
            return;
        }
        let body = json!({
            "event": "deployment.rollback",
            "deployment": row.id,
            "config": row.config_name,
            "version": row.version,
            "revision": row.revision,
            "environment": row.environment,
            "rollback": record,
        });
        actix_web::rt::spawn(async move {
            let result = awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish()
                .post(&url)
                .send_json(&body)
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(%url, "rollback alert sent");
                }
                Ok(response) => {
                    tracing::warn!(%url, status = %response.status(), "the alert webhook refused the rollback alert")
                }
                Err(error) => {
                    tracing::warn!(%url, error = %error, "could not send the rollback alert")
                }
            }
        });
    }
}
