//! `spawn_app(db)`: a hub on port 0 with a fresh database, and typed helpers.

use hotswap::{
    Authenticator, Role,
    settings::{SecretString, Settings},
    startup::Application,
};
use serde_json::Value;
use std::{io::Write, sync::OnceLock, time::Duration};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The HS256 secret of every test hub.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
/// The subject of the default admin token.
pub const TEST_ADMIN: &str = "test-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs a test body once on SQLite and once on PostgreSQL:
/// `on_both_databases!(name)` makes `name::on_sqlite` and `name::on_postgres`;
/// `on_both_databases!(name with adjust)` first applies `fn adjust(&mut Settings)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident $(with $customize:ident)?),+ $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn on_sqlite() {
                let app = $crate::helpers::spawn_app_with(
                    $crate::helpers::Db::Sqlite,
                    |_settings| { $( super::$customize(_settings); )? },
                );
                if let Some(app) = app.await {
                    let hub = app.hub.clone();
                    super::$name(app).await;
                    // Deployment actors finish their step before the runtime goes.
                    hub.stop_runs().await;
                }
            }

            #[actix_web::test]
            async fn on_postgres() {
                let app = $crate::helpers::spawn_app_with(
                    $crate::helpers::Db::Postgres,
                    |_settings| { $( super::$customize(_settings); )? },
                );
                if let Some(app) = app.await {
                    let hub = app.hub.clone();
                    super::$name(app).await;
                    // Deployment actors finish their step before the runtime goes.
                    hub.stop_runs().await;
                }
            }
        }
    )+};
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(path, rule)` of each problem+json error.
    pub fn error_paths(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_owned(),
                    e["rule"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub database_url: String,
    /// Sent with every request unless a call says otherwise.
    pub admin_token: String,
    pub shutdown: hotswap::startup::ShutdownHandle,
    pub hub: std::sync::Arc<hotswap::Hub>,
    /// The clock live ops read; a test moves it to cross a schedule's instants.
    pub clock: hotswap_actors::Clock,
    pub client: awc::Client,
    pub authenticator: Authenticator,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("address", &self.address)
            .field("db", &self.db)
            .finish()
    }
}

/// Settings for a test hub: port 0, the given database, keys under
/// `data_dir`, small limits, rate limits out of the way.
pub fn test_settings(database_url: &str, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::load(None).expect("default settings load");
    settings.bind = "127.0.0.1:0".into();
    settings.data_dir = data_dir.to_owned();
    settings.auth.jwt_secret = Some(SecretString::new(TEST_JWT_SECRET));
    settings.rate_limit.principal_per_minute = 100_000;
    settings.rate_limit.principal_burst = 10_000;
    settings.rate_limit.address_per_minute = 100_000;
    settings.rate_limit.address_burst = 10_000;
    settings.database.url = SecretString::new(database_url);
    // Fast hub timings, so socket tests finish in seconds.
    settings.hub.heartbeat_ms = 300;
    settings.hub.metrics_ms = 300;
    settings.hub.hello_timeout_ms = 1000;
    settings.hub.max_frame_bytes = 256 * 1024;
    settings.hub.session_queue = 16;
    settings.hub.reconnect_window_ms = 2000;
    // A fast deployment engine: evaluations every 50 ms over short windows.
    settings.deployments.evaluate_every_ms = 50;
    settings.deployments.window_ms = 10_000;
    settings.deployments.fast_window_ms = 2_000;
    settings.deployments.rollback_ack_timeout_ms = 5_000;
    settings.database.max_connections = 5;
    settings.limits.max_document_bytes = 64 * 1024;
    settings.limits.max_json_depth = 32;
    settings
}

fn postgres_base_url() -> String {
    std::env::var("HOTSWAP_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Any non-empty `CI` counts: a PostgreSQL test that cannot run there
/// fails rather than passing as skipped.
pub(crate) fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.trim().is_empty())
}

/// Says a test was skipped straight to stderr (cargo's capture does not
/// swallow it), so a skip is never silent.
pub(crate) fn announce_skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Creates a fresh PostgreSQL schema for one test and returns a URL whose
/// search_path points at it; `None` (with a printed reason) when PostgreSQL
/// is unreachable outside CI. Under `CI=true` an unreachable PostgreSQL fails
/// the test.
pub async fn postgres_schema_url() -> Option<String> {
    sqlx::any::install_default_drivers();
    let base = postgres_base_url();
    let pool = match sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&base)
        .await
    {
        Ok(pool) => pool,
        Err(error) => {
            let reason = format!(
                "PostgreSQL unreachable at {base} ({error}); set HOTSWAP_TEST_POSTGRES_URL or start it"
            );
            assert!(
                !under_ci(),
                "{reason} (CI=true requires the PostgreSQL tests to run)"
            );
            announce_skip(&reason);
            return None;
        }
    };
    static CLEANED: OnceLock<()> = OnceLock::new();
    let now = chrono::Utc::now().timestamp();
    if CLEANED.set(()).is_ok() {
        drop_stale_schemas(&pool, now).await;
    }
    let schema = format!("hs_t_{now}_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("creating a test schema");
    pool.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Drops test schemas left by runs more than an hour old.
async fn drop_stale_schemas(pool: &sqlx::AnyPool, now: i64) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'hs\\_t\\_%'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let created = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(now);
        if now - created > 3600 {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(pool)
            .await;
        }
    }
}

pub async fn spawn_app(db: Db) -> Option<TestApp> {
    spawn_app_with(db, |_| {}).await
}

/// A hub whose settings `customize` adjusts first.
pub async fn spawn_app_with(db: Db, customize: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("hotswap.db").display()),
        Db::Postgres => postgres_schema_url().await?,
    };
    Some(spawn_app_on(db, database_url, dir, customize).await)
}

/// A hub over an existing database (restart tests).
pub async fn spawn_app_on(
    db: Db,
    database_url: String,
    dir: tempfile::TempDir,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings(&database_url, dir.path());
    customize(&mut settings);
    let authenticator =
        Authenticator::from_settings(&settings.auth, settings.environment, &settings.data_dir)
            .expect("test authenticator")
            .authenticator;
    let admin_token = authenticator
        .mint(TEST_ADMIN, Role::Admin, Duration::from_secs(3600))
        .unwrap();
    let application = Application::build(settings).await.expect("the hub builds");
    let shutdown = application.shutdown_handle();
    let hub = application.hub().clone();
    let clock = application.liveops().clock().clone();
    let address = format!("http://127.0.0.1:{}", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    let client = hub_client(Duration::from_secs(30));
    TestApp {
        address,
        db,
        database_url,
        admin_token,
        shutdown,
        hub,
        clock,
        client,
        authenticator,
        _dir: dir,
    }
}

impl TestApp {
    /// Hands the temp dir over, for a restart on the same database.
    pub fn into_parts(self) -> (Db, String, tempfile::TempDir) {
        (self.db, self.database_url, self._dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A GET with the admin token and one extra header.
    pub async fn request_with_header(&self, path: &str, header: (&str, &str)) -> Response {
        self.finish(
            self.client
                .get(self.url(path))
                .insert_header((header.0, header.1)),
            None,
        )
        .await
    }

    /// `ws://` address of the hub.
    pub fn ws_url(&self) -> String {
        self.address.replacen("http://", "ws://", 1)
    }

    /// A new game-server API key (secret, id), with optional limits.
    pub async fn server_key(&self, environments: &[&str], regions: &[&str]) -> (String, String) {
        let created = self
            .post_json("/api/v1/api-keys", &serde_json::json!({"name": "test fleet", "environments": environments, "regions": regions}))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        (
            created.body["key"].as_str().unwrap().to_owned(),
            created.body["id"].as_str().unwrap().to_owned(),
        )
    }

    /// The hub's signing key (base64).
    pub async fn signing_key(&self) -> String {
        self.get("/api/v1/signing-key").await.body["publicKey"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a config, uploads `version` with `content` and deploys it (Direct).
    pub async fn deploy(&self, config: &str, version: &str, content: Value) -> Response {
        let uploaded = self.post_version(config, version, content).await;
        assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
        let deployed = self
            .post_json(
                "/api/v1/deployments",
                &serde_json::json!({"config": config, "version": version, "strategy": "Direct"}),
            )
            .await;
        assert_eq!(deployed.status, 201, "{:?}", deployed.body);
        deployed
    }

    /// A token for `role` naming `subject`.
    pub fn token(&self, role: Role, subject: &str) -> String {
        self.authenticator
            .mint(subject, role, Duration::from_secs(3600))
            .unwrap()
    }

    /// Sends a request with the given token (`None`: no Authorization header).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Response {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        self.send(request, body).await
    }

    async fn finish(&self, request: awc::ClientRequest, body: Option<(&str, Vec<u8>)>) -> Response {
        let request =
            request.insert_header(("authorization", format!("Bearer {}", self.admin_token)));
        self.send(request, body).await
    }

    async fn send(&self, request: awc::ClientRequest, body: Option<(&str, Vec<u8>)>) -> Response {
        let sent = match body {
            Some((content_type, bytes)) => {
                request
                    .insert_header(("content-type", content_type))
                    .send_body(bytes)
                    .await
            }
            None => request.send().await,
        };
        let mut response = sent.expect("request reaches the hub");
        let bytes = response.body().limit(64 * 1024 * 1024).await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Response {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.finish(self.client.get(self.url(path)), None).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.finish(self.client.delete(self.url(path)), None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.send_raw(
            "POST",
            path,
            "application/json",
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Response {
        self.send_raw(
            "PUT",
            path,
            "application/json",
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn post_empty(&self, path: &str) -> Response {
        self.finish(self.client.post(self.url(path)), None).await
    }

    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        self.finish(
            self.client.request(method, self.url(path)),
            Some((content_type, body)),
        )
        .await
    }

    // ---- typed helpers -------------------------------------------------------

    /// Polls a deployment until its status is `status` (at most 15 s);
    /// its view then.
    pub async fn wait_deployment_status(&self, id: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let view = self.get(&format!("/api/v1/deployments/{id}")).await.body;
            if view["status"] == status {
                return view;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deployment never became {status}: {}",
                serde_json::to_string_pretty(&view).unwrap()
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every stored version's text, read straight from the database.
    pub async fn stored_version_texts(&self) -> String {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.database_url).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as("SELECT content FROM config_versions")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|(c,)| c)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A count read straight from the hub's database (`SELECT COUNT(*) ...`).
    pub async fn count_rows(&self, sql: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.database_url).await.unwrap();
        let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        count
    }

    /// Posts a telemetry batch with `token` (a server key or a player token).
    pub async fn telemetry(&self, token: &str, batch: &Value) -> Response {
        self.request(
            "POST",
            "/api/v1/telemetry/batch",
            Some(token),
            Some(("application/json", serde_json::to_vec(batch).unwrap())),
        )
        .await
    }

    /// Uploads `version` of `config` and starts a Canary of it (50 % then
    /// 100 %, no auto-promotion: it stays in its first phase); its id.
    pub async fn start_canary(&self, config: &str, version: &str, content: Value) -> String {
        let uploaded = self.post_version(config, version, content).await;
        assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
        let created = self
            .post_json(
                "/api/v1/deployments",
                &serde_json::json!({"config": config, "version": version, "strategy": "Canary",
                        "phases": [50, 100], "autoPromote": false}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_config(
        &self,
        name: &str,
        config_type: &str,
        environment: &str,
    ) -> Response {
        self.post_json(
            "/api/v1/configs",
            &serde_json::json!({"name": name, "configType": config_type, "environment": environment}),
        )
        .await
    }

    /// A production `Custom` config validated by the registered schema
    /// `schema_id` (the shape the secret attacks start from).
    pub async fn create_production_config(&self, name: &str, schema_id: &str) -> Response {
        self.post_json(
            "/api/v1/configs",
            &serde_json::json!({"name": name, "configType": "Custom", "environment": "production", "schemaId": schema_id}),
        )
        .await
    }

    pub async fn post_version(&self, name: &str, version: &str, content: Value) -> Response {
        self.post_json(
            &format!("/api/v1/configs/{name}/versions"),
            &serde_json::json!({"version": version, "content": content}),
        )
        .await
    }
}

/// A valid GameBalance document with one rifle of the given damage.
pub fn balance(damage: u32) -> Value {
    serde_json::json!({
        "weapons": {"rifle": {"damage": damage, "fireRate": 600, "reloadTime": 2.5}},
        "characters": {"tank": {"health": 200, "armor": 50, "abilities": {"shield": {"cooldown": 10.0}}}}
    })
}

/// An SDK client of `weapon-balance` (staging, EU-WEST), quick to retry.
pub fn sdk_config(app: &TestApp, key: &str, server_id: &str) -> hotswap_client::ClientConfig {
    hotswap_client::ClientConfig::new(app.ws_url(), key, server_id)
        .region("EU-WEST")
        .environment("staging")
        .subscribe("weapon-balance")
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// Starts an SDK client and waits until it is connected.
pub async fn connected(config: hotswap_client::ClientConfig) -> hotswap_client::Client {
    let client = hotswap_client::Client::start(config).expect("client starts");
    assert!(
        client
            .wait_for_state(Duration::from_secs(10), |s| matches!(
                s,
                hotswap_client::ConnectionState::Connected { .. }
            ))
            .await,
        "client never connected: {:?}",
        client.state()
    );
    client
}

/// A private `redis-server` on a free port (killed when dropped).
pub(crate) struct PrivateRedis {
    child: std::process::Child,
    pub(crate) port: u16,
}

impl PrivateRedis {
    pub(crate) fn start(port: Option<u16>) -> PrivateRedis {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian's redis-server)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        PrivateRedis { child, port }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateRedis {
    /// `redis://` URL of this server.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// A client of a test hub. Its idle connections are let go before the
/// hub's keep-alive (5 s) closes them: awc's default (15 s) reused one the
/// hub had just closed, after a test waited 5-15 s (a browser starting),
/// and the request failed with `Disconnected`.
pub fn hub_client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(2)))
        .finish()
}
