//! The filer's HTTP API: the router, its state, and the routes.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`;
//! - the file API on `/{*path}`: `POST|PUT` upload (raw or multipart `file`; with
//!   `?mv.from=/src` a rename), `GET|HEAD` a file (Range) or a directory listing (JSON),
//!   `DELETE` (`?recursive=true`);
//! - the metadata API under `/__meta/`: `GET|PUT|DELETE /__meta/entry`, `GET /__meta/list`.

mod error;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use common::http::{ServeConfig, healthz, with_layers};
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

/// The filer's router, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    // Uploads stream their body and enforce `--max-upload-mb` themselves; this limit covers
    // the multipart framing around it.
    let upload_limit =
        usize::try_from(state.filer.max_upload().saturating_add(1 << 20)).unwrap_or(usize::MAX);
    let files = get(routes::files::get)
        .post(routes::files::post)
        .put(routes::files::post)
        .delete(routes::files::delete)
        .layer(DefaultBodyLimit::max(upload_limit));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route(
            "/__meta/entry",
            get(routes::meta::get_entry)
                .put(routes::meta::put_entry)
                .delete(routes::meta::delete_entry),
        )
        .route("/__meta/list", get(routes::meta::list))
        .route("/", files.clone())
        .route("/{*path}", files)
        .with_state(state);
    with_layers(
        router,
        ServeConfig {
            body_limit: JSON_BODY_LIMIT,
            request_timeout: REQUEST_TIMEOUT,
        },
    )
}
