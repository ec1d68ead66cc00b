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
}

/// 200 once topics are recovered and no flush is failing.
pub async fn readyz(State(broker): State<AppState>) -> Result<Json<impl Serialize>, ApiError> {
    broker.readiness()?;
    Ok(Json(Ready { status: "ready" }))
}

/// Prometheus text.
pub async fn metrics(State(broker): State<AppState>) -> Response {
    common::metrics::render(broker.metrics.registry())
}
