//! The volume server's router and shared state.
//!
//! Routes: `POST|PUT /{fid}` (raw body or multipart `file`), `GET|HEAD /{fid}` (Range, ETag),
//! `DELETE /{fid}`, `POST /admin/volume`, `GET /status`, `/healthz`, `/readyz`, `/metrics`, and
//! `/openapi.json`, their OpenAPI document (`openapi.json` beside this file).

mod blobs;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use common::api::master::{AllocateQuery, Replication};
use common::api::volume::VolumeServerStatus;
use common::client::HttpClient;
use common::client::master::MasterClient;
use common::client::volume::VolumeClient;
use common::http::{ApiError, Json, Query, ServeConfig, openapi};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// State shared by the handlers and the heartbeat loop.
#[derive(Clone)]
pub struct AppState {
    /// The volumes.
    pub store: Arc<Store>,
    /// The master (for replica lookups and heartbeats).
    pub master: Arc<MasterClient>,
    /// Client for forwarding writes to replicas.
    pub volumes: VolumeClient,
    /// The traced HTTP client behind `volumes` (replica writes that carry needle metadata).
    pub http: HttpClient,
    /// This server's address as the master knows it.
    pub url: String,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// The metrics.
    pub metrics: Metrics,
    /// Wakes the heartbeat loop (after an allocation).
    pub beat: Arc<Notify>,
    /// Configuration.
    pub cfg: Arc<Config>,
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the volume server serves, by path. [`router`] registers exactly these, and the
/// OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/healthz", get(common::http::healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/status", get(status)),
        ("/admin/volume", post(allocate)),
        (openapi::PATH, openapi::route(OPENAPI)),
        (
            "/{fid}",
            get(blobs::get_blob)
                .post(blobs::put_blob)
                .put(blobs::put_blob)
                .delete(blobs::delete_blob),
        ),
    ]
}

/// Builds the router with the shared layers.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(common::config::mib(state.cfg.max_blob_mb) + (1 << 20))
        .unwrap_or(usize::MAX);
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

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    volumes: usize,
}

/// `GET /readyz`: volumes are loaded (the listener only serves after recovery).
async fn readyz(State(s): State<AppState>) -> Json<impl Serialize> {
    Json(Ready {
        status: "ready",
        volumes: s.store.len(),
    })
}

async fn metrics(State(s): State<AppState>) -> Response {
    common::metrics::render(&s.registry)
}

async fn status(State(s): State<AppState>) -> Json<VolumeServerStatus> {
    Json(VolumeServerStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        volumes: s.store.infos(),
    })
}

#[derive(Serialize)]
struct Allocated {
    volume: u32,
    collection: String,
    replication: Replication,
}

/// `POST /admin/volume?volumeId=&collection=&replication=`: the master grows a volume here.
async fn allocate(
    State(s): State<AppState>,
    Query(q): Query<AllocateQuery>,
) -> Result<Json<Allocated>, ApiError> {
    let replication: Replication = match &q.replication {
        Some(r) if !r.is_empty() => r
            .parse()
            .map_err(|e: String| ApiError::bad_request("bad_replication", e))?,
        _ => Replication::default(),
    };
    if q.collection.len() > 64
        || !q
            .collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ApiError::bad_request(
            "bad_collection",
            format!(
                "collection {:?} must be at most 64 letters, digits, '-' or '.'",
                q.collection
            ),
        ));
    }
    if s.store.get(q.volume_id).is_err() && s.store.len() >= s.cfg.max_volumes as usize {
        return Err(ApiError::conflict(
            "no_free_slot",
            format!(
                "this server already holds its maximum of {} volumes",
                s.cfg.max_volumes
            ),
        ));
    }
    let store = s.store.clone();
    let collection = q.collection.clone();
    let vid = q.volume_id;
    tokio::task::spawn_blocking(move || store.allocate(vid, &collection, replication))
        .await
        .map_err(ApiError::internal)??;
    s.beat.notify_one();
    Ok(Json(Allocated {
        volume: vid,
        collection: q.collection,
        replication,
    }))
}

#[cfg(test)]
mod tests;
