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

mod error;
mod routes;
pub mod seaweed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get};
use common::http::{ServeConfig, healthz, openapi, with_layers};
use common::metrics::SharedRegistry;
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
}

impl AppState {
    /// Builds the state over `store` (metrics registered in a fresh registry).
    pub fn new(cfg: &Config, store: Arc<dyn MetaStore>) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let filer = Filer::new(cfg, store, metrics);
        Self {
            filer,
            registry: Arc::new(registry),
        }
    }
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the filer serves, by path; file uploads may be `upload_limit` bytes. [`router`]
/// registers exactly these, and the OpenAPI test checks them against [`OPENAPI`].
fn routes(upload_limit: usize) -> Vec<(&'static str, MethodRouter<AppState>)> {
    let files = get(routes::files::get)
        .post(routes::files::post)
        .put(routes::files::post)
        .delete(routes::files::delete)
        .layer(DefaultBodyLimit::max(upload_limit));
    vec![
        ("/healthz", get(healthz)),
        ("/readyz", get(routes::ops::readyz)),
        ("/metrics", get(routes::ops::metrics)),
        // Shadows the file path `/openapi.json` (as `/__meta/` shadows its names).
        (openapi::PATH, openapi::route(OPENAPI)),
        (
            "/__meta/entry",
            get(routes::meta::get_entry)
                .put(routes::meta::put_entry)
                .delete(routes::meta::delete_entry),
        ),
        ("/__meta/list", get(routes::meta::list)),
        ("/", files.clone()),
        ("/{*path}", files),
    ]
}

/// The filer's router, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    // Uploads stream their body and enforce `--max-upload-mb` themselves; this limit covers
    // the multipart framing around it.
    let upload_limit =
        usize::try_from(state.filer.max_upload().saturating_add(1 << 20)).unwrap_or(usize::MAX);
    let router = routes(upload_limit)
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
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
        let app = router(AppState::new(&cfg, Arc::new(MemoryStore::new())));
        let paths: Vec<&str> = routes(0).into_iter().map(|(p, _)| p).collect();
        let samples = [("path", "probe/file")];
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &samples).await {
            panic!("filer/src/http/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
