//! The filer's HTTP API: the router, its state, and the routes.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`;
//! - the file API on `/{*path}`, SeaweedFS's filer routes and JSON shapes ([`seaweed`]):
//!   `POST|PUT` upload (raw or multipart `file`; with `?mv.from=/src` a rename), `GET|HEAD` a
//!   file (Range) or a directory listing (`limit`, `lastFileName`), `?metadata=true` for the
//!   entry, `?pretty` for indented JSON, `DELETE` (`?recursive=true`);
//! - the metadata API under `/__meta/`: `GET|PUT|DELETE /__meta/entry`, `GET /__meta/list`;
//! - `GET /openapi.json`: the OpenAPI document of these routes (`openapi.json` beside this file);
//!   a file cannot be read at that path.
//!
//! Who may call what (`Access`, applied as one route layer per group in [`router`]): the
//! file API is for clients and, with `--api-keys-file`, needs a key (`GET`/`HEAD` a read key,
//! anything else a write key; 401 without a valid one, 403 for a read key writing); `/__meta/`
//! is for Kelp services (broker, registry, and the CLI's `fs ls` and `topic locate`) and, with
//! `--cluster-token-file`, needs the cluster token (401). The cluster token also passes every
//! client check. Health, readiness, metrics and the OpenAPI document stay open for probes and
//! scrapers.

mod error;
mod routes;
pub mod seaweed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get};
use common::http::{ServeConfig, healthz, openapi, with_layers};
use common::metrics::SharedRegistry;
use common::security::{Security, require_client, require_cluster};
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::Filer;
use crate::store::MetaStore;

/// Limit of JSON bodies (metadata API).
const JSON_BODY_LIMIT: usize = 16 << 20;
/// Uploads may take long; responses are timed to their headers only.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The domain operations.
    pub filer: Arc<Filer>,
    /// The metrics registry rendered by `/metrics`.
    pub registry: SharedRegistry,
    /// The credentials the routes check and the filer's own calls carry.
    pub security: Arc<Security>,
}

impl AppState {
    /// Builds the state over `store` (metrics registered in a fresh registry), checking
    /// requests and signing its own calls with `security` (`Security::default()`: all off).
    pub fn new(
        cfg: &Config,
        store: Arc<dyn MetaStore>,
        security: Arc<Security>,
    ) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let filer = Filer::new(cfg, store, metrics, security.clone())?;
        Ok(Self {
            filer,
            registry: Arc::new(registry),
            security,
        })
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: probes, scrapers, the API document.
    Open,
    /// Clients: an API key of the method's scope (or the cluster token), when keys are set.
    Client,
    /// Kelp services: the cluster token, when one is set.
    Cluster,
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the filer serves, by path, with who may call it; file uploads may be
/// `upload_limit` bytes. [`router`] registers exactly these, and the OpenAPI test checks them
/// against [`OPENAPI`].
fn routes(upload_limit: usize) -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    let files = get(routes::files::get)
        .post(routes::files::post)
        .put(routes::files::post)
        .delete(routes::files::delete)
        .layer(DefaultBodyLimit::max(upload_limit));
    vec![
        ("/healthz", Access::Open, get(healthz)),
        ("/readyz", Access::Open, get(routes::ops::readyz)),
        ("/metrics", Access::Open, get(routes::ops::metrics)),
        // Shadows the file path `/openapi.json` (as `/__meta/` shadows its names).
        (openapi::PATH, Access::Open, openapi::route(OPENAPI)),
        (
            "/__meta/entry",
            Access::Cluster,
            get(routes::meta::get_entry)
                .put(routes::meta::put_entry)
                .delete(routes::meta::delete_entry),
        ),
        ("/__meta/list", Access::Cluster, get(routes::meta::list)),
        ("/", Access::Client, files.clone()),
        ("/{*path}", Access::Client, files),
    ]
}

/// The filer's router, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    // Uploads stream their body and enforce `--max-upload-mb` themselves; this limit covers
    // the multipart framing around it.
    let upload_limit =
        usize::try_from(state.filer.max_upload().saturating_add(1 << 20)).unwrap_or(usize::MAX);
    let (open, client, cluster) = routes(upload_limit).into_iter().fold(
        (Router::new(), Router::new(), Router::new()),
        |(open, client, cluster), (path, access, handlers)| match access {
            Access::Open => (open.route(path, handlers), client, cluster),
            Access::Client => (open, client.route(path, handlers), cluster),
            Access::Cluster => (open, client, cluster.route(path, handlers)),
        },
    );
    let sec = state.security.clone();
    let router = open
        .merge(client.route_layer(from_fn_with_state(sec.clone(), require_client)))
        .merge(cluster.route_layer(from_fn_with_state(sec, require_cluster)))
        .with_state(state);
    with_layers(
        router,
        ServeConfig {
            body_limit: JSON_BODY_LIMIT,
            request_timeout: REQUEST_TIMEOUT,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn test_openapi_matches_router() {
        // The master is unreachable: only metadata operations and empty uploads work, which is
        // all the probes need.
        let cfg = Config::for_test("data/unused", "127.0.0.1:1");
        let state = AppState::new(&cfg, Arc::new(MemoryStore::new()), Arc::default()).unwrap();
        let app = router(state);
        let paths: Vec<&str> = routes(0).into_iter().map(|(p, _, _)| p).collect();
        let samples = [("path", "probe/file")];
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &samples).await {
            panic!("filer/src/http/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
