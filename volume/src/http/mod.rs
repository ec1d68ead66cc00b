//! The volume server's HTTP API: the router, its state, and the routes.
//!
//! Routes: `POST|PUT /{fid}` (raw body or multipart `file`), `GET|HEAD /{fid}` (Range, ETag),
//! `DELETE /{fid}`, `POST /admin/vacuum` (online compaction), the same on SeaweedFS's other URL forms `/{vid}/{key}` and
//! `/{vid}/{key}/{name}` (see [`fid`]: `.ext` suffixes, batch `_N` suffixes), `POST /admin/volume` (allocate), `DELETE /admin/volume` (delete a whole volume), `GET /status`, `/healthz`, `/readyz`, `/metrics`, and
//! `/openapi.json`, their OpenAPI document (`openapi.json` beside this file). Handlers live in
//! [`routes`]; `error` maps the service's errors to statuses.
//!
//! Access: the `/admin/*` routes are for the master and need the cluster token (a route layer,
//! so an unserved method is still a 405); the blob handlers check fid tokens themselves (see
//! [`routes::blobs`]); the rest is open. Each check is a no-op while its credential is not
//! configured.

pub mod content;
mod error;
pub mod fid;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, post};
use common::http::{ServeConfig, openapi};
use common::security::require_cluster;
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

/// Who may call a route (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone (blob routes check fid tokens in their handlers).
    Open,
    /// Kelp services only: the cluster token.
    Cluster,
}

/// Every route the volume server serves, by path, with who may call it. [`router`] registers
/// exactly these, and the OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    use Access::{Cluster, Open};
    vec![
        ("/healthz", Open, get(common::http::healthz)),
        ("/readyz", Open, get(routes::ops::readyz)),
        ("/metrics", Open, get(routes::ops::metrics)),
        ("/status", Open, get(routes::ops::status)),
        (
            "/admin/volume",
            Cluster,
            post(routes::admin::allocate).delete(routes::admin::delete),
        ),
        ("/admin/vacuum", Cluster, post(routes::admin::vacuum)),
        (openapi::PATH, Open, openapi::route(OPENAPI)),
        ("/{fid}", Open, blob()),
        ("/{vid}/{key}", Open, blob()),
        ("/{vid}/{key}/{name}", Open, blob()),
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
    let sec = state.volume.security().clone();
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, access, handlers)| {
            let handlers = match access {
                Access::Open => handlers,
                Access::Cluster => {
                    handlers.route_layer(from_fn_with_state(sec.clone(), require_cluster))
                }
            };
            r.route(path, handlers)
        })
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
