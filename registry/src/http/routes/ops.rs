//! Operational routes: `/` (Confluent's root answers `{}`), `/readyz` and `/metrics`.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use crate::http::error::SrError;
use crate::http::{AppState, SrJson};
use crate::leader::Role;
use crate::service::Error;

/// Body of a ready `/readyz`.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub status: &'static str,
    /// Records of the schemas log applied.
    pub records: u64,
    /// `writer` (holds the writer lease, or is the only instance) or `follower`.
    pub role: &'static str,
    /// The writer's URL, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// `GET /`: an empty object, as Confluent's registry answers (clients use it as a ping).
pub async fn root() -> SrJson<serde_json::Map<String, serde_json::Value>> {
    SrJson(serde_json::Map::new())
}

/// `GET /readyz`: 200 once the index is rebuilt from the log, else 503.
pub async fn readyz(State(st): State<AppState>) -> Result<SrJson<Ready>, SrError> {
    if !st.registry.is_ready() {
        return Err(Error::NotReady.into());
    }
    let leadership = st.registry.leadership();
    let (role, writer) = match leadership.role() {
        Role::Writer => ("writer", Some(leadership.me().to_owned())),
        Role::Follower(w) => ("follower", w),
    };
    Ok(SrJson(Ready {
        status: "ready",
        records: st.registry.counts().2,
        role,
        writer,
    }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<AppState>) -> Response {
    common::metrics::render(&st.metrics)
}
