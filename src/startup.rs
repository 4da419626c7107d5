//! Building and running the hub: `Application::build(settings)` connects
//! and migrates the store, loads or generates keys, seals the audit chain,
//! installs the built-in schemas and binds the listener;
//! `run_until_stopped()` serves until SIGINT/SIGTERM. Tests build the same
//! application on port 0.

use crate::ws::upgrade::UpgradeFactory;
use crate::{
    auth::{Role, jwt::Authenticator, rate_limit::RateLimits},
    catalog::Catalog,
    crypto::KeyMaterial,
    http::{
        self,
        auth::AccessControl,
        client_address::{Network, TrustedProxies},
        extract::{BodyLimits, path_error, query_error},
    },
    hub::Hub,
    settings::{Settings, TlsSettings},
    store::{Store, audit},
};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::{
    App,
    dev::{AppConfig, Server},
    middleware, web,
};
use anyhow::Context;
use std::{sync::Arc, time::Duration};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE_SECS: u64 = 30;
/// How long closing the store may take at exit (in-flight writes finish).
const STORE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the first-run admin token lives.
const FIRST_RUN_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A built hub, ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    hub: Arc<Hub>,
    liveops: Arc<crate::liveops::LiveOps>,
    telemetry: Arc<crate::telemetry::Telemetry>,
}

/// Stops a running hub gracefully: game servers are told when to come
/// back, then the HTTP server drains. Cloneable; tests use it in place of a signal.
#[derive(Clone)]
pub struct ShutdownHandle {
    hub: Arc<Hub>,
    liveops: Arc<crate::liveops::LiveOps>,
    server: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    pub async fn shutdown(&self) {
        let started = std::time::Instant::now();
        // Live events stop first: what they committed resumes on the next start.
        self.liveops.stop().await;
        // Dashboards' sockets close now, not at the drain's end.
        self.hub.feed.close();
        self.hub.shutdown().await;
        let draining = std::time::Instant::now();
        // The game servers' sockets are the hub's, not the HTTP server's:
        // their reconnect and close frames leave before the workers stop.
        let grace = Duration::from_secs(SHUTDOWN_GRACE_SECS);
        if actix_web::rt::time::timeout(grace, self.hub.sockets.none_open())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.hub.sockets.count(),
                "game servers' sockets still open after the grace; stopping anyway"
            );
        }
        self.server.stop(true).await;
        // What sessions and requests brought while draining.
        self.liveops.flush_writes().await;
        let drained = draining.elapsed();
        if drained > Duration::from_secs(5) {
            // Connections that outlived the servers' reconnect: worth knowing.
            tracing::warn!(
                drain_ms = drained.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "connections were still open long after every server was told to reconnect"
            );
        }
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn tls_config(tls: &TlsSettings) -> anyhow::Result<Option<rustls::ServerConfig>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let (cert_file, key_file) = match (&tls.cert_file, &tls.key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("tls.cert_file and tls.key_file go together"),
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the key in {}", key_file.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS certificate and key do not match")?;
    Ok(Some(config))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let setup =
            Authenticator::from_settings(&settings.auth, settings.environment, &settings.data_dir)?;
        let derived_cluster_key = setup.derived_cluster_key;
        let keys = Arc::new(KeyMaterial::from_settings(&settings)?);
        let tls = tls_config(&settings.tls)?;

        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let sealed = audit::seal_unchained(&store)
            .await
            .context("sealing the audit chain")?;
        if sealed > 0 {
            tracing::info!(
                rows = sealed,
                "chained audit rows written before the chain existed"
            );
        }
        let meters = Arc::new(crate::observability::meters::Meters::new());
        let tracer = match &settings.otel.endpoint {
            Some(endpoint) => {
                tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
                crate::observability::traces::Tracer::exporting(
                    endpoint,
                    &settings.otel.service_name,
                )?
            }
            None => crate::observability::traces::Tracer::disabled(),
        };
        let catalog = Catalog::new(store.clone(), settings.limits.clone(), keys.clone())
            .with_meters(meters)
            .with_tracer(tracer);
        catalog
            .install_builtin_schemas()
            .await
            .context("installing built-in schemas")?;
        let signed = catalog
            .sign_unsigned_versions()
            .await
            .context("signing unsigned versions")?;
        if signed > 0 {
            tracing::info!(
                versions = signed,
                "signed versions written before signing existed"
            );
        }
        if let Some((versions, changed)) = catalog
            .upgrade_checksums()
            .await
            .context("moving stored checksums to RFC 8785")?
        {
            tracing::info!(
                versions,
                changed,
                "stored checksums are RFC 8785 (JCS) checksums now, signed again"
            );
        }
        if let Some(paths) = catalog
            .backfill_sealed_paths()
            .await
            .context("recording the sealed paths of stored versions")?
        {
            tracing::info!(paths, "recorded the sealed paths of stored versions");
        }
        if keys.keyring.current_key_id().is_none() {
            tracing::warn!(
                "no secrets key configured: versions with x-secret fields will be refused"
            );
        }

        let scheme = if tls.is_some() { "https" } else { "http" };
        let first_run_token = if setup.generated_secret {
            Some(
                setup
                    .authenticator
                    .mint("admin", Role::Admin, FIRST_RUN_TOKEN_TTL)?,
            )
        } else {
            None
        };
        let networks = settings
            .http
            .trusted_proxies
            .iter()
            .map(|text| Network::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| anyhow::anyhow!("http.trusted_proxies: {why}"))?;
        let redis = crate::cluster::Redis::from_settings(&settings.redis)?.map(web::Data::new);
        let access = web::Data::new(AccessControl {
            authenticator: setup.authenticator,
            rate_limits: RateLimits::new(&settings.rate_limit),
            proxies: TrustedProxies {
                any_peer: settings.http.trust_forwarded_for,
                networks,
            },
            shared_limits: redis.as_ref().map(|redis| {
                crate::cluster::rate::SharedLimits::new(
                    redis,
                    &settings.cluster.name,
                    settings.rate_limit.principal_per_minute,
                    settings.rate_limit.principal_burst,
                )
            }),
        });
        let origins = web::Data::new(http::session::BrowserPolicy::new(
            &settings.http.allowed_origins,
            settings.http.secure_cookies || tls.is_some(),
        ));
        let sessions = web::Data::new(http::session::Sessions::default());
        let docs_sessions = web::Data::new(http::session::DocsSessions::default());
        if !origins.secure && origins.origins.iter().any(|o| o.starts_with("https://")) {
            tracing::warn!(
                "http.allowed_origins names https:// origins but http.secure_cookies is false: the dashboard's cookie is not marked Secure"
            );
        }
        let forget_idle = access.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                forget_idle.rate_limits.forget_idle();
            }
        });
        // With Redis this node is one of several; they share PostgreSQL.
        let cluster = match &redis {
            Some(_) if store.backend() != crate::store::Backend::Postgres => {
                anyhow::bail!(
                    "redis.url makes this hub one node of several, which share a PostgreSQL database: set database.url to postgres://…, or unset redis.url for a single node on SQLite"
                );
            }
            Some(redis) => {
                let key = match settings
                    .cluster
                    .secret
                    .as_ref()
                    .filter(|s| !s.expose().is_empty())
                {
                    Some(secret) => {
                        use sha2::Digest as _;
                        <[u8; 32]>::from(sha2::Sha256::digest(secret.expose().as_bytes()))
                    }
                    None => derived_cluster_key.context(
                        "the nodes of a cluster sign their messages: set cluster.secret (HOTSWAP_CLUSTER__SECRET), the same on every node, or auth.jwt_secret",
                    )?,
                };
                let (cluster, inbound) =
                    crate::cluster::Cluster::start(redis, settings.cluster.clone(), key);
                tracing::info!(node = %cluster.node, "one node of a cluster");
                Some((cluster, inbound))
            }
            None => None,
        };
        let (cluster, inbound) = match cluster {
            Some((cluster, inbound)) => (Some(cluster), Some(inbound)),
            None => (None, None),
        };
        let hub = Hub::load(
            catalog.clone(),
            store.clone(),
            settings.hub.clone(),
            settings.deployments.clone(),
            cluster,
        )
        .await
        .context("loading the hub's state")?;
        hub.start_background_tasks();
        if let Some(inbound) = inbound {
            hub.start_cluster(inbound);
        }
        let liveops = crate::liveops::LiveOps::load(
            store.clone(),
            catalog.clone(),
            hub.clone(),
            settings.liveops.clone(),
        )
        .await
        .context("loading live events and segments")?;
        liveops.start();
        let telemetry =
            crate::telemetry::Telemetry::start(store.clone(), settings.telemetry.clone())
                .await
                .context("loading the telemetry taxonomy")?;
        telemetry.start_retention();
        {
            let known = Arc::downgrade(&telemetry);
            liveops.set_event_type_check(Arc::new(move |name: &str| {
                known.upgrade().is_some_and(|t| t.has_type(name))
            }));
            let stored = Arc::downgrade(&liveops);
            telemetry.set_stored_sink(Box::new(move |batch| {
                if let Some(liveops) = stored.upgrade() {
                    liveops.note_kept(batch.kept);
                    liveops.note_exposure(
                        batch.player,
                        batch.envelope,
                        batch.vouched,
                        batch.earliest_ms,
                    );
                }
            }));
        }
        let telemetry_data = web::Data::new(telemetry.clone());
        let liveops_data = web::Data::new(liveops.clone());
        let hub_data = web::Data::new(hub.clone());
        let feed = hub.feed.clone();
        feed.start(Arc::downgrade(&hub), Arc::downgrade(&liveops));
        let feed_data = web::Data::new(feed);
        let catalog = web::Data::new(catalog);
        let body_limits = web::Data::new(BodyLimits {
            max_bytes: settings.limits.max_body_bytes(),
            max_header_bytes: settings.limits.max_header_bytes,
        });
        let make_app = move || {
            App::new()
                .wrap(middleware::from_fn(http::request_context))
                .app_data(catalog.clone())
                .app_data(hub_data.clone())
                .app_data(feed_data.clone())
                .app_data(liveops_data.clone())
                .app_data(telemetry_data.clone())
                .app_data(access.clone())
                .app_data(origins.clone())
                .app_data(sessions.clone())
                .app_data(docs_sessions.clone())
                .configure(|cfg| {
                    // Only with `redis.url`: readiness asks for it if present.
                    if let Some(redis) = redis.clone() {
                        cfg.app_data(redis);
                    }
                })
                .app_data(body_limits.clone())
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .app_data(web::PathConfig::default().error_handler(path_error))
                .configure(http::configure)
                .default_service(web::to(http::route_not_found))
        };
        let listeners = listen(&settings.bind, LISTEN_BACKLOG)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listeners[0].local_addr()?.port();
        let secure = tls.is_some();
        let builder = actix_server::Server::build()
            .shutdown_timeout(SHUTDOWN_GRACE_SECS)
            // Signals are ours (run_until_stopped): servers hear `reconnect` first.
            .disable_signals()
            .backlog(LISTEN_BACKLOG);
        let draining = builder.graceful_shutdown_signal();
        // actix-web's HttpServer, with one addition: an upgrade service,
        // through which the hub takes game servers' sockets (`ws/upgrade.rs`).
        macro_rules! http_service {
            ($addr:expr, $make_app:expr, $draining:expr) => {{
                let addr = $addr;
                let make_app = &$make_app;
                let config = AppConfig::__priv_test_new(secure, addr.to_string(), addr);
                let draining = $draining.clone();
                let app = make_app()
                    .into_factory()
                    .map_err(|error| error.error_response());
                let upgrades = make_app().into_factory();
                actix_http::HttpService::build()
                    .keep_alive(actix_http::KeepAlive::default())
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .h1_allow_half_closed(true)
                    .local_addr(addr)
                    // Every frame to a game server is a whole message wanted
                    // now: no Nagle wait behind an unacknowledged pong.
                    .tcp_nodelay(true)
                    .graceful_shutdown_signal(move || {
                        let draining = draining.clone();
                        async move { draining.notified().await }
                    })
                    .upgrade(UpgradeFactory::new(upgrades, config.clone()))
                    .finish(map_config(app, move |_| config.clone()))
            }};
        }
        let mut server = builder;
        for listener in listeners {
            let addr = listener.local_addr()?;
            let make_app = make_app.clone();
            let draining = draining.clone();
            server = match &tls {
                Some(tls) => {
                    let tls = tls.clone();
                    server.listen(format!("hotswap-{addr}"), listener, move || {
                        http_service!(addr, make_app, draining).rustls_0_23_with_config(
                            tls.clone(),
                            actix_http::TlsAcceptorConfig::default(),
                        )
                    })
                }
                None => server.listen(format!("hotswap-{addr}"), listener, move || {
                    http_service!(addr, make_app, draining).tcp()
                }),
            }
            .with_context(|| format!("serving {}", settings.bind))?;
        }
        if let Some(token) = first_run_token {
            // Printed once, on the run that generated the secret: the operator's way in.
            println!(
                "\nHotSwap generated a development JWT secret in {dir}.\n\
                 Admin token (30 days):\n\n  {token}\n\n\
                 API explorer: {scheme}://{bind}/docs/ (sign in there with this token)\n\
                 Mint more with: hotswap token --role operator --sub alice --ttl 8h\n",
                dir = settings.data_dir.display(),
                bind = settings.bind,
            );
        }
        let server = server.run();
        tracing::info!(port, scheme, backend = ?store.backend(), "hub listening");
        Ok(Self {
            port,
            server,
            store,
            hub,
            liveops,
            telemetry,
        })
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            hub: self.hub.clone(),
            liveops: self.liveops.clone(),
            server: self.server.handle(),
        }
    }

    /// Telemetry (its queue, for benchmarks).
    pub fn telemetry(&self) -> &Arc<crate::telemetry::Telemetry> {
        &self.telemetry
    }

    /// Live ops (its clock, for tests that cross a schedule's instants).
    pub fn liveops(&self) -> &Arc<crate::liveops::LiveOps> {
        &self.liveops
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM (or a [`ShutdownHandle`]) stops it
    /// gracefully, then closes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.shutdown_handle();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            handle.shutdown().await;
        });
        let result = self.server.await;
        // A connection still checked out must not keep the process alive.
        if actix_web::rt::time::timeout(STORE_CLOSE_GRACE, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = STORE_CLOSE_GRACE.as_millis() as u64,
                "the store did not close in time; stopping anyway"
            );
        }
        tracing::info!("hub stopped");
        result
    }
}

/// Connections the kernel may hold for the hub before it accepts them
/// (capped by `net.core.somaxconn`; actix's own default is 2,048). A
/// restarted hub meets every server whose reconnect moment passed while it
/// was down at once, within a few hundred milliseconds: the SYNs beyond the
/// queue are dropped and those servers wait out TCP's 1 s (then 3 s) retry.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds every address `bind` resolves to, with `backlog`, as actix-web's
/// `HttpServer::bind` does (it fails if one of them cannot be bound).
fn listen(bind: &str, backlog: u32) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    let mut listeners = Vec::new();
    for addr in bind.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        #[cfg(not(windows))]
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        listeners.push(socket.into());
    }
    if listeners.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "resolved to no address",
        ));
    }
    Ok(listeners)
}

/// Game servers one hub node is sized for (`ARCHITECTURE.md`).
const SIZED_FOR_SERVERS: u64 = 10_000;
/// Open files the hub keeps beyond its game servers' sockets (store,
/// listeners, REST clients, dashboards).
const FILES_BESIDES_SERVERS: u64 = 256;

/// Raises the process's open-files limit to its hard limit (every game
/// server holds a socket, and the usual soft limit of 1,024 would turn
/// servers away at about a thousand) and logs it, with a warning when it
/// cannot hold the fleet a node is sized for. Returns the limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        // Linux refuses an unlimited RLIMIT_NOFILE; its usual ceiling is 2^20.
        let target = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
        let limit = if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            target
        } else {
            soft
        };
        let servers = limit.saturating_sub(FILES_BESIDES_SERVERS);
        if servers < SIZED_FOR_SERVERS {
            tracing::warn!(
                limit,
                servers,
                "the open-files limit holds fewer game servers than a node is sized for: \
                 raise it (`ulimit -n`, or LimitNOFILE= under systemd)"
            );
        } else {
            tracing::info!(limit, "open-files limit");
        }
        Some(limit)
    }
    #[cfg(not(unix))]
    None
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let ceiling = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
        // Lowered first (an unprivileged process may raise it back), to
        // half the ceiling: the other tests of this process keep plenty.
        let lowered = (ceiling / 2).max(1024).min(ceiling);
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        let limit = super::raise_open_files_limit().expect("a limit on unix");
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, limit, "the limit returned is the one in force");
        assert_eq!(soft, ceiling, "raised from {lowered}");
    }
}
