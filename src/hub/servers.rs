//! Operators' hands on known servers: closing a revoked key's sockets,
//! releasing a server id, operator tags.

use super::{Dirty, Hub, sessions::key_revoked};
use crate::store::{hub as store_hub, server_bindings};
use hotswap_actors::CloseReason;
use hotswap_client::{protocol::close_code, sync::lock};

impl Hub {
    /// Closes every socket of a revoked API key, whether it said hello or
    /// not, and refuses the key's sockets from now on.
    pub fn close_sessions_of_key(&self, key_id: &str) -> usize {
        self.gate.revoke(key_id, &key_revoked())
    }

    /// Deregisters a server and releases its id (any API key may register
    /// it next), audited: the store changes first, then its session is
    /// closed (4005). False when the hub knows neither the server nor a
    /// binding of its id.
    pub async fn deregister(
        &self,
        actor: &crate::catalog::Actor,
        server_id: &str,
    ) -> anyhow::Result<bool> {
        let known = self.registry.read_then(server_id, |_| ()).is_some();
        let mut tx = self.store.begin().await?;
        let released = server_bindings::release(&mut tx, server_id).await?;
        if !known && !released {
            return Ok(false);
        }
        store_hub::delete_game_servers(&mut tx, &[server_id.to_owned()]).await?;
        crate::store::audit::record(
            &mut tx,
            actor.audit_entry(
                "game-server.deregister",
                format!("game-servers/{server_id}"),
                serde_json::json!({ "connected": self.registry.read_then(server_id, |r| r.connected), "idReleased": released }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.registry.remove(
            server_id,
            CloseReason::new(
                close_code::DEREGISTERED,
                "an admin deregistered this server and released its id",
            ),
        );
        lock(&self.first_seen).remove(server_id);
        lock(&self.dirty).remove(server_id);
        Ok(true)
    }

    /// Replaces a server's operator tags.
    pub fn set_operator_tags(&self, server_id: &str, tags: Vec<String>) -> bool {
        let done = self.registry.set_operator_tags(server_id, tags);
        if done {
            self.mark_dirty(server_id, Dirty::Row);
        }
        done
    }
}
