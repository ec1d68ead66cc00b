//! The master's router: `/dir/assign`, `/dir/lookup`, `/dir/status`, `/cluster/status`,
//! `/heartbeat`, `/healthz`, `/readyz`, `/metrics`, and `/openapi.json`, their OpenAPI document
//! (`openapi.json` beside this file).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use common::api::master::{
    AssignQuery, AssignResponse, ClusterStatus, DirStatus, Heartbeat, HeartbeatResponse,
    LookupQuery, LookupResponse,
};
use common::http::{ApiError, Json, Query, ServeConfig, openapi};
use common::ids::{FileId, VolumeId};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::service::Master;

/// Most keys one assign may reserve.
const MAX_COUNT: u64 = 100_000;

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The master.
    pub master: Arc<Master>,
    /// Metrics registry.
    pub registry: Arc<Registry>,
    /// This master's address.
    pub addr: String,
    /// Volume size limit in bytes, sent back on heartbeats.
    pub size_limit: u64,
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the master serves, by path. [`router`] registers exactly these, and the OpenAPI
/// test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/dir/assign", get(assign).post(assign)),
        ("/dir/lookup", get(lookup)),
        ("/dir/status", get(dir_status)),
        ("/cluster/status", get(cluster_status)),
        ("/heartbeat", post(heartbeat)),
        ("/healthz", get(common::http::healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        (openapi::PATH, openapi::route(OPENAPI)),
    ]
}

/// Builds the router with the shared layers.
pub fn router(state: AppState) -> Router {
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .with_state(state);
    common::http::with_layers(routes, ServeConfig::default())
}

async fn assign(
    State(s): State<AppState>,
    Query(q): Query<AssignQuery>,
) -> Result<Json<AssignResponse>, ApiError> {
    let count = q.count.unwrap_or(1);
    if count == 0 || count > MAX_COUNT {
        return Err(ApiError::bad_request(
            "bad_count",
            format!("count must be 1..={MAX_COUNT}, got {count}"),
        ));
    }
    let collection = q.collection.unwrap_or_default();
    if collection.len() > 64
        || !collection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ApiError::bad_request(
            "bad_collection",
            format!("collection {collection:?} must be at most 64 letters, digits, '-' or '.'"),
        ));
    }
    let replication = s.master.replication(q.replication.as_deref())?;
    Ok(Json(
        s.master.assign(&collection, replication, count).await?,
    ))
}

async fn lookup(
    State(s): State<AppState>,
    Query(q): Query<LookupQuery>,
) -> Result<Json<LookupResponse>, ApiError> {
    let (what, vid): (String, VolumeId) = match (&q.volume_id, &q.file_id) {
        (Some(v), _) => {
            // Accept `3` and, like SeaweedFS, a full fid passed as volumeId.
            let vid = v
                .split(',')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_volume_id",
                        format!("volumeId {v:?} is not a volume id"),
                    )
                })?;
            (v.clone(), vid)
        }
        (None, Some(f)) => {
            let fid: FileId = f.parse().map_err(|e: common::ids::FileIdError| {
                ApiError::bad_request("bad_fid", e.to_string())
            })?;
            (f.clone(), fid.volume_id)
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_volume_id",
                "give volumeId or fileId",
            ));
        }
    };
    let locations = s.master.lookup(vid);
    if locations.is_empty() {
        return Err(ApiError::not_found(
            "volume_not_found",
            format!("volume {vid} not found on any live server"),
        ));
    }
    Ok(Json(LookupResponse {
        volume_or_file_id: what,
        locations,
    }))
}

async fn dir_status(State(s): State<AppState>) -> Json<DirStatus> {
    let (max_volume_id, next_file_key) = s.master.counters().await;
    let nodes = s.master.topology.read().expect("topology lock").status();
    Json(DirStatus {
        max_volume_id,
        next_file_key,
        nodes,
    })
}

async fn cluster_status(State(s): State<AppState>) -> Json<ClusterStatus> {
    let t = s.master.topology.read().expect("topology lock");
    Json(ClusterStatus {
        is_leader: true,
        leader: s.addr.clone(),
        alive_nodes: t.alive_count(),
        known_nodes: t.known_count(),
    })
}

async fn heartbeat(
    State(s): State<AppState>,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    if beat.url.is_empty() || beat.url.len() > 256 {
        return Err(ApiError::bad_request(
            "bad_heartbeat",
            "heartbeat url must be 1..=256 bytes",
        ));
    }
    s.master.heartbeat(&beat).await?;
    Ok(Json(HeartbeatResponse {
        volume_size_limit: s.size_limit,
    }))
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    alive_volume_servers: usize,
}

/// `GET /readyz`: the state file is loaded (serving implies it). Volume servers come and go;
/// an assign without any answers 503 itself, so readiness does not wait for them (and a
/// deployment can start volume servers after the master is ready).
async fn readyz(State(s): State<AppState>) -> Json<impl Serialize> {
    Json(Ready {
        status: "ready",
        alive_volume_servers: s
            .master
            .topology
            .read()
            .expect("topology lock")
            .alive_count(),
    })
}

async fn metrics(State(s): State<AppState>) -> Response {
    common::metrics::render(&s.registry)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use common::client::HttpClient;
    use common::client::volume::VolumeClient;

    use super::*;
    use crate::service::Metrics;
    use crate::state::Sequencer;

    fn state(dir: &std::path::Path) -> AppState {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let master = Master::new(
            Sequencer::load(dir).unwrap(),
            Duration::from_secs(1),
            1 << 30,
            common::api::master::Replication::default(),
            VolumeClient::new(HttpClient::new(Duration::from_secs(1)).with_attempts(1)),
            metrics,
        );
        AppState {
            master: Arc::new(master),
            registry: Arc::new(registry),
            addr: "127.0.0.1:1".into(),
            size_limit: 1 << 30,
        }
    }

    #[tokio::test]
    async fn test_openapi_matches_router() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()));
        let paths: Vec<&str> = routes().into_iter().map(|(p, _)| p).collect();
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &[]).await {
            panic!("master/src/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
