//! Building and running the hub: `Application::build(settings)` connects
//! and migrates the store, installs the built-in schemas and binds the
//! listener; `run_until_stopped()` serves until SIGINT/SIGTERM. Tests build
//! the same application on port 0.

use crate::{
    catalog::Catalog,
    http::{
        self,
        extract::{BodyLimits, path_error, query_error},
    },
    settings::Settings,
    store::Store,
};
use actix_web::{App, HttpServer, dev::Server, middleware, web};
use anyhow::Context;
use std::net::TcpListener;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE_SECS: u64 = 30;

/// A built hub, ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    store: Store,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let catalog = Catalog::new(store.clone(), settings.limits.clone());
        catalog
            .install_builtin_schemas()
            .await
            .context("installing built-in schemas")?;

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let catalog = web::Data::new(catalog);
        let body_limits = web::Data::new(BodyLimits {
            max_bytes: settings.limits.max_body_bytes(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(middleware::from_fn(http::request_context))
                .app_data(catalog.clone())
                .app_data(body_limits.clone())
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .app_data(web::PathConfig::default().error_handler(path_error))
                .configure(http::configure)
                .default_service(web::to(http::route_not_found))
        })
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .listen(listener)?
        .run();
        tracing::info!(port, backend = ?store.backend(), "hub listening");
        Ok(Self {
            port,
            server,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server stops (signals are handled by actix: SIGINT
    /// and SIGTERM stop it gracefully), then closes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.store.close().await;
        tracing::info!("hub stopped");
        result
    }
}
