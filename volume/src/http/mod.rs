//! The volume server's HTTP API: the router, its state, and the routes.
//!
//! Routes: `POST|PUT /{fid}` (raw body or multipart `file`), `GET|HEAD /{fid}` (Range, ETag),
//! `DELETE /{fid}`, `POST /admin/vacuum` (online compaction), the same on SeaweedFS's other URL forms `/{vid}/{key}` and
//! `/{vid}/{key}/{name}` (see [`fid`]: `.ext` suffixes, batch `_N` suffixes), `POST /admin/volume` (allocate), `DELETE /admin/volume` (delete a whole volume), `GET /status`, `/healthz`, `/readyz`, `/metrics`, and
//! `/openapi.json`, their OpenAPI document (`openapi.json` beside this file). Handlers live in
//! [`routes`]; `error` maps the service's errors to statuses.

pub mod content;
mod error;
pub mod fid;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use common::http::{ServeConfig, openapi};
use prometheus_client::registry::Registry;

use crate::service::VolumeServer;

/// State shared by the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The domain operations.
    pub volume: Arc<VolumeServer>,
    /// The metrics registry rendered by `/metrics`.
    pub registry: Arc<Registry>,
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the volume server serves, by path. [`router`] registers exactly these, and the
/// OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/healthz", get(common::http::healthz)),
        ("/readyz", get(routes::ops::readyz)),
        ("/metrics", get(routes::ops::metrics)),
        ("/status", get(routes::ops::status)),
        (
            "/admin/volume",
            post(routes::admin::allocate).delete(routes::admin::delete),
        ),
        ("/admin/vacuum", post(routes::admin::vacuum)),
        (openapi::PATH, openapi::route(OPENAPI)),
        ("/{fid}", blob()),
        ("/{vid}/{key}", blob()),
        ("/{vid}/{key}/{name}", blob()),
    ]
}

/// The blob methods, served on every URL form of a file id (see [`fid`]).
fn blob() -> MethodRouter<AppState> {
    get(routes::blobs::get_blob)
        .post(routes::blobs::put_blob)
        .put(routes::blobs::put_blob)
        .delete(routes::blobs::delete_blob)
}

/// Builds the router with the shared layers.
pub fn router(state: AppState) -> Router {
    let body_limit = state.volume.max_blob().saturating_add(1 << 20);
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .with_state(state);
    common::http::with_layers(
        routes,
        ServeConfig {
            body_limit,
            ..ServeConfig::default()
        },
    )
}

#[cfg(test)]
mod tests;
