//! Per-principal rate limits shared by the nodes of a cluster: the same
//! GCRA as each node's own buckets (`auth/rate_limit.rs`), its state (the
//! theoretical arrival time) kept in Redis and moved by one Lua script, on
//! Redis's clock. A caller spread over the nodes spends one budget. While
//! Redis cannot answer, each node's own limits still hold (the shared one
//! lets the request through: availability first, the local bucket bounds it).

use super::Redis;
use std::time::Duration;

/// GCRA in one step: the key holds the theoretical arrival time (µs on
/// Redis's clock). Answers 0 when allowed, else the µs to wait.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1000)
return 0
"#;

/// The shared per-principal budget.
#[derive(Clone)]
pub struct SharedLimits {
    redis: Redis,
    prefix: String,
    /// µs between two requests at the sustained rate.
    interval_us: u64,
    /// µs of burst on top of one request.
    tolerance_us: u64,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// `per_minute` requests a minute with bursts of `burst`, per principal,
    /// for the cluster `name`.
    pub fn new(redis: &Redis, name: &str, per_minute: u32, burst: u32) -> SharedLimits {
        let interval_us = 60_000_000 / u64::from(per_minute.max(1));
        SharedLimits {
            redis: redis.clone(),
            prefix: format!("{name}:rate:"),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            down: Default::default(),
        }
    }

    /// `Err(wait)` when `principal` has spent its shared budget.
    pub async fn check(&self, principal: &str) -> Result<(), Duration> {
        use sha2::Digest as _;
        // Keys of a fixed size whatever the subject holds.
        let key = format!(
            "{}{}",
            self.prefix,
            hex::encode(sha2::Sha256::digest(principal.as_bytes()))
        );
        let answer = self
            .redis
            .query(self.redis.timeout, |mut c| async move {
                redis::cmd("EVAL")
                    .arg(GCRA)
                    .arg(1)
                    .arg(&key)
                    .arg(self.interval_us)
                    .arg(self.tolerance_us)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        let down = |why: String| {
            if !self.down.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(%why, "shared rate limits unavailable; each node's own limits hold");
            }
            Ok(())
        };
        match answer {
            Ok(wait) => {
                if self.down.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("shared rate limits back");
                }
                if wait > 0 {
                    Err(Duration::from_micros(wait as u64))
                } else {
                    Ok(())
                }
            }
            Err(error) => down(error),
        }
    }
}
