//! More than one node (issue 19, in progress): what this node shares with
//! the others through Redis. Today: the connection itself, which
//! readiness reports. With no `redis.url` nothing here runs and a node is
//! whole on its own.

use crate::settings::RedisSettings;
use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// This node's link to Redis: one multiplexed connection, made on first
/// use and remade by itself after Redis went away (a node starts, and
/// keeps serving, while Redis is down).
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The link `settings` describe, or `None` without a `redis.url`. The
    /// URL is checked now; the connection is made on first use.
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<Redis>> {
        let Some(url) = settings.url.as_ref().filter(|u| !u.expose().is_empty()) else {
            return Ok(None);
        };
        let client = redis::Client::open(url.expose()).context("redis.url")?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .context("the Redis connection")?;
        Ok(Some(Redis {
            connection,
            timeout,
        }))
    }

    /// Whether Redis answers a `PING` within the timeout.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(pong)) if pong == "PONG" => Ok(()),
            Ok(Ok(other)) => Err(format!("PING answered {other:?}")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}
