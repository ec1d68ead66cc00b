//! Operational routes: `GET /readyz`, `GET /metrics`, `GET /status`.

use axum::extract::State;
use axum::response::Response;
use common::api::volume::VolumeServerStatus;
use common::http::Json;
use serde::Serialize;

use crate::http::AppState;

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    volumes: usize,
}

/// `GET /readyz`: volumes are loaded (the listener only serves after recovery).
pub async fn readyz(State(s): State<AppState>) -> Json<impl Serialize> {
    Json(Ready {
        status: "ready",
        volumes: s.volume.store().len(),
    })
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(s): State<AppState>) -> Response {
    common::metrics::render(&s.registry)
}

/// `GET /status`: every volume of this server.
pub async fn status(State(s): State<AppState>) -> Json<VolumeServerStatus> {
    Json(s.volume.status())
}
