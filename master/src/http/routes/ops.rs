//! Operational routes: `/readyz` and `/metrics`.

use axum::extract::State;
use axum::response::Response;
use common::http::Json;
use serde::Serialize;

use crate::http::AppState;

/// Body of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub status: &'static str,
    /// Live volume servers.
    pub alive_volume_servers: usize,
}

/// `GET /readyz`: the state file is loaded (serving implies it). Volume servers come and go;
/// an assign without any answers 503 itself, so readiness does not wait for them (and a
/// deployment can start volume servers after the master is ready).
pub async fn readyz(State(s): State<AppState>) -> Json<Ready> {
    Json(Ready {
        status: "ready",
        alive_volume_servers: s.master.node_counts().0,
    })
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(s): State<AppState>) -> Response {
    common::metrics::render(&s.registry)
}
