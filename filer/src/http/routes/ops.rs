//! Operational routes: `/readyz` and `/metrics`.

use axum::extract::State;
use axum::response::Response;
use common::http::{ApiError, Json};
use serde::Serialize;

use crate::http::AppState;

/// Body of a ready `/readyz`.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub status: &'static str,
}

/// `GET /readyz`: 200 when the metadata store answers, else 503.
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Ready>, ApiError> {
    st.filer.ready().await.map_err(|e| {
        ApiError::unavailable(
            "store_unavailable",
            format!("metadata store not ready: {e}"),
            1,
        )
    })?;
    Ok(Json(Ready { status: "ready" }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<AppState>) -> Response {
    common::metrics::render(&st.registry)
}
