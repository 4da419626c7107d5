//! Layered settings: `config/default.toml` (built into the binary), an
//! optional file given with `--config`, then `HOTSWAP_*` environment
//! variables (`HOTSWAP_BIND`, `HOTSWAP_DATABASE__URL`: a double underscore
//! steps into a section).

use crate::domain::{document::DEFAULT_MAX_DEPTH, kinds::Environment};
use anyhow::Context;
use serde::Deserialize;
use std::{fmt, path::Path};

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address the HTTP and WebSocket server listens on.
    pub bind: String,
    /// The hub's own environment; `production` turns on stricter startup checks.
    pub environment: Environment,
    /// Folder for the embedded SQLite file and development keys.
    pub data_dir: std::path::PathBuf,
    pub database: DatabaseSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub secrets: SecretsSettings,
    pub signing: SigningSettings,
    pub rate_limit: RateLimitSettings,
    pub http: HttpSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    pub hub: HubSettings,
    pub deployments: DeploymentSettings,
    #[serde(default)]
    pub liveops: LiveOpsSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub otel: OtelSettings,
    #[serde(default)]
    pub redis: RedisSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
}

/// More than one node (with `redis.url`, on PostgreSQL).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// The cluster's name: its nodes talk on the Redis channel
    /// `{name}:cluster`, so clusters sharing one Redis never hear each other.
    pub name: String,
    /// The key every node signs its messages with (HMAC-SHA256), the same
    /// on each; unset: derived from `auth.jwt_secret`, which the nodes
    /// share anyway. A message that does not verify is refused.
    pub secret: Option<SecretString>,
    /// This node's name among the others (leases and announcements carry
    /// it); unset: the host name and the process id.
    pub node_id: Option<String>,
    /// How long a node's lease on a deployment lasts unless renewed (a
    /// third of it), in milliseconds: a dead node's deployments are taken
    /// over after at most this long.
    pub lease_ms: u64,
    /// How often each node reads the desired state back from the store
    /// and brings its servers to it, and looks for deployments whose
    /// lease lapsed (announcements over Redis do it at once).
    pub reconcile_ms: u64,
    /// How often a node sends the owner of a deployment its servers'
    /// acks and metric slices (at most).
    pub share_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            name: "hotswap".into(),
            secret: None,
            node_id: None,
            lease_ms: 3_000,
            reconcile_ms: 2_000,
            share_ms: 100,
        }
    }
}

/// Redis, for more than one node. Unset: a single node, no Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://host:6379/0` (`rediss://` for TLS).
    pub url: Option<SecretString>,
    /// Longest wait to connect or for an answer, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 1_000,
        }
    }
}

/// OpenTelemetry traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OtelSettings {
    /// An OTLP/HTTP collector (`http://collector:4318`): spans are posted
    /// to `{endpoint}/v1/traces`. Unset: no traces.
    pub endpoint: Option<String>,
    /// The `service.name` of the spans.
    pub service_name: String,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "hotswap".into(),
        }
    }
}

/// Telemetry ingestion.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// Events accepted and not yet stored, at most; past it a batch is
    /// answered 503 with `Retry-After`.
    pub queue_events: usize,
    /// Events in one `POST /telemetry/batch`, at most.
    pub max_batch_events: usize,
    /// Events written per statement, at most (the writer takes what is
    /// queued, up to this).
    pub write_rows: usize,
    /// Days kept; older events are refused and removed.
    pub retention_days: u32,
    /// How far ahead of the hub's clock an event's time may be.
    pub max_future_ms: i64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            queue_events: 100_000,
            max_batch_events: 500,
            write_rows: 5_000,
            retention_days: 30,
            max_future_ms: 300_000,
        }
    }
}

/// Live events and segments.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LiveOpsSettings {
    /// Live events not finished (scheduled, active, paused) at once.
    pub max_events: usize,
    /// Segments defined (besides the built-in ones).
    pub max_segments: usize,
    /// Player ids in all list segments together (they travel to every
    /// server that resolves players locally, in each `liveops` frame).
    pub max_list_members_total: usize,
    /// Region → IANA time zone, for `regionLocal` schedules (region names
    /// are matched without regard to case).
    pub region_zones: std::collections::BTreeMap<String, String>,
    /// Creation refuses two events changing one config path at the same
    /// time in a shared region, looking this far ahead.
    pub overlap_horizon_days: u32,
    /// Experiments not finished (drafts, running, paused) at once.
    pub max_experiments: usize,
    /// How often a running experiment's guardrails are read.
    pub guardrail_interval_ms: u64,
    /// How often players' first assignments are written (in one batch).
    pub assignment_flush_ms: u64,
    /// Units an experiment may pin to their first variant when its
    /// weights change (they travel in each `liveops` frame).
    pub max_pins: usize,
    /// The `ContentManifest` config `GET /manifest` reads by default.
    pub manifest_config: String,
}

impl Default for LiveOpsSettings {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_segments: 1000,
            max_list_members_total: 200_000,
            region_zones: std::collections::BTreeMap::new(),
            overlap_horizon_days: 366,
            max_experiments: 100,
            guardrail_interval_ms: 30_000,
            assignment_flush_ms: 250,
            max_pins: 50_000,
            manifest_config: "content-manifest".into(),
        }
    }
}

/// Progressive deployments: defaults for requests, and the engine's pace.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentSettings {
    /// Deployments running at once (not finished).
    pub max_concurrent: usize,
    /// Environments whose deployments wait for an admin other than their creator.
    pub approval_environments: Vec<crate::domain::kinds::Environment>,
    pub phase_interval_ms: u64,
    pub batch_size: usize,
    pub batch_interval_ms: u64,
    pub verification_ms: u64,
    pub keep_blue_ms: u64,
    /// Green share of a blue-green deployment's servers, percent.
    pub green_percentage: f64,
    /// How often a deployment evaluates its cohorts and advances.
    pub evaluate_every_ms: u64,
    /// The metric window judged for warnings and rollbacks.
    pub window_ms: u64,
    /// A shorter window also judged for rollbacks, so a sudden regression is
    /// not diluted by minutes of healthy history.
    pub fast_window_ms: u64,
    /// Confidence a difference needs before it counts (0.99: p < 0.01).
    pub confidence: f64,
    /// A rollback waits this long for acks before it is recorded as done
    /// with the missing servers listed.
    pub rollback_ack_timeout_ms: u64,
    /// `http://` URL that gets a JSON POST on every rollback; empty for none.
    pub alert_webhook: String,
    /// Per-minute metric aggregates and player feedback are kept this long.
    pub metrics_retention_days: u64,
    /// Metric events a deployment actor may have queued.
    pub mailbox: usize,
}

/// The game-server side of the hub.
#[derive(Debug, Clone, Deserialize)]
pub struct HubSettings {
    /// Name of this node, sent in `welcome`.
    pub node_name: String,
    /// Heartbeat interval told to servers; 3 missed closes the session.
    pub heartbeat_ms: u64,
    /// Metrics interval told to servers.
    pub metrics_ms: u64,
    /// Time allowed for `hello`.
    pub hello_timeout_ms: u64,
    /// Frames queued per session before it counts as not reading.
    pub session_queue: usize,
    /// Largest frame accepted from a server.
    pub max_frame_bytes: usize,
    /// Disconnected servers are forgotten after this long.
    pub stale_after_secs: u64,
    /// On shutdown, servers are told to come back spread over this window.
    pub reconnect_window_ms: u64,
    /// Game-server sockets open on this node (hello or not); more are
    /// answered 503 before the upgrade.
    pub max_sessions: usize,
    /// Sockets of one API key; more are answered 429 before the upgrade.
    pub max_sessions_per_key: usize,
    /// A server id stays bound to its API key this long after its server
    /// was last seen (then another key may register it).
    pub server_id_binding_days: u64,
    /// Server ids one API key keeps bound; past it, its least recently
    /// seen ids of servers the hub no longer knows are released.
    pub max_server_ids_per_key: usize,
    /// The largest `capacity` a `hello` may declare, and the most players a
    /// server that declared none may report.
    pub max_players_per_server: u32,
}

impl HubSettings {
    /// The heartbeat interval the hub keeps, and tells servers in its
    /// `welcome`: the setting, at least
    /// [`MIN_HEARTBEAT_MS`](hotswap_actors::session::MIN_HEARTBEAT_MS).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat_ms
            .max(hotswap_actors::session::MIN_HEARTBEAT_MS)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: Option<SecretString>,
    pub public_key_file: Option<std::path::PathBuf>,
    /// `RS256` or `ES256`.
    pub public_key_algorithm: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecretsSettings {
    pub key: Option<SecretString>,
    pub key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub previous_keys: Vec<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SigningSettings {
    pub key: Option<SecretString>,
    pub key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub principal_per_minute: u32,
    pub principal_burst: u32,
    pub address_per_minute: u32,
    pub address_burst: u32,
    /// Game-server socket upgrades per source address (a bad key costs two).
    pub upgrade_per_minute: u32,
    pub upgrade_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Believe `X-Forwarded-For` from whatever connects directly (a hub
    /// reachable only through its proxy).
    pub trust_forwarded_for: bool,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` entries are
    /// believed, read from the right.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Origins besides the hub's own (`Host`) whose pages may use the
    /// dashboard's session cookie, e.g. `https://ops.studio.example` when
    /// a proxy rewrites `Host`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Browsers reach the hub over HTTPS through a proxy that ends TLS:
    /// the dashboard's cookie is `Secure` (and `__Host-` named) and only
    /// `https://` origins pass, as when the hub serves TLS itself.
    #[serde(default)]
    pub secure_cookies: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsSettings {
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://path` (created if missing) or `postgres://...`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection before answering 503.
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    /// Largest config document, as compact JSON.
    pub max_document_bytes: usize,
    /// Deepest nesting of objects and arrays in a document.
    #[serde(default = "default_depth")]
    pub max_json_depth: usize,
    /// Largest total size of a request's headers (names and values).
    #[serde(default = "default_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_header_bytes() -> usize {
    16 * 1024
}

fn default_depth() -> usize {
    DEFAULT_MAX_DEPTH
}

impl LimitSettings {
    /// Largest request body: a document plus its envelope (version, message, tags).
    pub fn max_body_bytes(&self) -> usize {
        self.max_document_bytes.saturating_mul(2).max(64 * 1024)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,hotswap=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A string that never prints (database URLs carry passwords).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Settings {
    /// Reads the layers; `file` is the `--config` file, if given.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            builder = builder.add_source(config::File::from(file).required(true));
        }
        builder
            .add_source(
                config::Environment::with_prefix("HOTSWAP")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("secrets.previous_keys"),
            )
            .build()
            .context("reading settings")?
            .try_deserialize()
            .context("settings are invalid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_parse() {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(settings.bind, "127.0.0.1:8080");
        assert_eq!(settings.database.url.expose(), "sqlite://data/hotswap.db");
        assert_eq!(settings.limits.max_document_bytes, 1024 * 1024);
        assert_eq!(format!("{:?}", settings.database.url), "\"***\"");
        assert_eq!(
            settings.deployments.approval_environments,
            [crate::domain::kinds::Environment::Production]
        );
    }

    #[test]
    fn an_unknown_approval_environment_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.toml");
        std::fs::write(&file, "[deployments]\napproval_environments = [\"prod\"]\n").unwrap();
        let error = Settings::load(Some(&file)).expect_err("refused");
        assert!(
            format!("{error:#}").contains("prod"),
            "the error names the value: {error:#}"
        );
        std::fs::write(
            &file,
            "[deployments]\napproval_environments = [\"staging\", \"production\"]\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&file)).is_ok());
    }
}
