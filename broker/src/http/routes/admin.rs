//! `POST /admin/flush`, `GET /readyz`, `GET /metrics`.

use axum::extract::State;
use axum::response::Response;
use common::api::broker::FlushResponse;
use common::http::{ApiError, Json};
use serde::Serialize;

use crate::http::AppState;

/// Answers once everything buffered at call time is durable.
pub async fn flush(State(broker): State<AppState>) -> Result<Json<FlushResponse>, ApiError> {
    Ok(Json(broker.flush_all().await?))
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    /// A standby's active broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<String>,
}

/// 200 once topics are recovered and no flush is failing, and for a standby that knows the
/// active broker (`"status": "standby"`: it redirects clients there).
pub async fn readyz(State(broker): State<AppState>) -> Result<Json<impl Serialize>, ApiError> {
    if let Some(active) = broker.standby_of() {
        return Ok(Json(Ready {
            status: "standby",
            active: Some(active),
        }));
    }
    broker.readiness()?;
    Ok(Json(Ready {
        status: "ready",
        active: None,
    }))
}

/// Prometheus text.
pub async fn metrics(State(broker): State<AppState>) -> Response {
    common::metrics::render(broker.metrics.registry())
}
