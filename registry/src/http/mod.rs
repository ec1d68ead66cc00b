//! The registry's HTTP API: Confluent Schema Registry's REST routes, `/healthz`, `/readyz`,
//! `/metrics` and `/openapi.json` (the document beside this file, checked against the router).
//!
//! Answers are `application/vnd.schemaregistry.v1+json`; errors are Confluent's
//! `{"error_code": N, "message": "..."}`. The shared layers' own answers (an unknown route, a
//! wrong method, a timeout) get that body too: [`confluent_errors`] rewrites them, keeping
//! Kelp's `error`/`code` fields beside Confluent's.
//!
//! Writes (registrations, deletions, config and mode changes) reaching an instance that does
//! not hold the writer lease are forwarded to the instance that does (`forward`); the
//! follower then catches up with the log before answering, so its client reads its own write.

mod error;
mod extract;
mod forward;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use common::client::HttpClient;
use common::http::{ServeConfig, healthz, openapi, with_layers};
use common::metrics::SharedRegistry;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry as PromRegistry;
use serde::Serialize;

pub use error::{CONTENT_TYPE, ErrorBody, SrError};
pub use extract::ACCEPTED;

use crate::config::Config;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::service::Registry;
use crate::store::SchemaLog;

/// Requests taking longer get a 408 (a registration waits for a durable write).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Error bodies larger than this are not rewritten.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The metrics registry rendered by `/metrics`.
    pub metrics: SharedRegistry,
    /// The client writes are forwarded with.
    pub forwarder: HttpClient,
}

impl AppState {
    /// The only writer over `log`, with fresh metrics (not loaded yet: see
    /// [`Registry::load`]).
    pub fn new(cfg: Config, log: Arc<dyn SchemaLog>) -> Self {
        let me = format!("http://{}:{}", cfg.ip, cfg.port);
        Self::with_leadership(cfg, log, Arc::new(Leadership::single(&me)))
    }

    /// A registry over `log` whose role `leadership` decides.
    pub fn with_leadership(
        cfg: Config,
        log: Arc<dyn SchemaLog>,
        leadership: Arc<Leadership>,
    ) -> Self {
        let mut prom = PromRegistry::default();
        let metrics = Metrics::register(&mut prom);
        let forwarder = HttpClient::new(cfg.broker_timeout() + Duration::from_secs(5));
        Self {
            registry: Registry::new(cfg, log, leadership, metrics),
            metrics: Arc::new(prom),
            forwarder,
        }
    }
}

/// A JSON answer with the registry's content type.
#[derive(Debug, Clone)]
pub struct SrJson<T>(pub T);

impl<T: Serialize> IntoResponse for SrJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                body,
            )
                .into_response(),
            Err(e) => SrError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                50001,
                format!("encode the answer: {e}"),
            )
            .into_response(),
        }
    }
}

/// The OpenAPI document of [`router`] (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the registry serves, by path. [`router`] registers exactly these, and the
/// OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    use routes::{compatibility, config, ops, schemas, subjects};
    vec![
        ("/", get(ops::root)),
        ("/schemas/types", get(schemas::types)),
        ("/schemas/ids/{id}", get(schemas::get)),
        ("/schemas/ids/{id}/schema", get(schemas::get_schema)),
        ("/schemas/ids/{id}/versions", get(schemas::versions)),
        ("/schemas/ids/{id}/subjects", get(schemas::subjects)),
        ("/subjects", get(subjects::list)),
        (
            "/subjects/{subject}",
            post(subjects::lookup).delete(subjects::delete),
        ),
        (
            "/subjects/{subject}/versions",
            get(subjects::versions).post(subjects::register),
        ),
        (
            "/subjects/{subject}/versions/{version}",
            get(subjects::get_version).delete(subjects::delete_version),
        ),
        (
            "/subjects/{subject}/versions/{version}/schema",
            get(subjects::get_version_schema),
        ),
        (
            "/subjects/{subject}/versions/{version}/referencedby",
            get(subjects::referenced_by),
        ),
        (
            "/compatibility/subjects/{subject}/versions",
            post(compatibility::check_all),
        ),
        (
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility::check_version),
        ),
        (
            "/config",
            get(config::get_global)
                .put(config::put_global)
                .delete(config::delete_global),
        ),
        (
            "/config/{subject}",
            get(config::get_subject)
                .put(config::put_subject)
                .delete(config::delete_subject),
        ),
        ("/mode", get(config::get_mode).put(config::put_mode)),
        ("/healthz", get(healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        (openapi::PATH, openapi::route(OPENAPI)),
    ]
}

/// The registry's router, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    let body_limit = state.registry.cfg().max_body_bytes;
    let api = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::forward_writes,
        ))
        .with_state(state);
    with_layers(
        api,
        ServeConfig {
            body_limit,
            request_timeout: REQUEST_TIMEOUT,
        },
    )
    .layer(axum::middleware::map_response(confluent_errors))
}

/// Gives every error answer without Confluent's body (those of the shared layers: unknown
/// route, wrong method, timeout, body limit) an `error_code` (the status) and a `message`.
pub async fn confluent_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let mut value = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    if value.get("error_code").is_some() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = value
        .get("error")
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
        });
    value["error_code"] = serde_json::Value::from(status.as_u16());
    value["message"] = serde_json::Value::from(message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Response::from_parts(parts, Body::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemLog;

    #[tokio::test]
    async fn test_openapi_matches_router() {
        let state = AppState::new(Config::default(), Arc::new(MemLog::new()));
        state
            .registry
            .load(tokio_util::sync::CancellationToken::new())
            .await;
        let app = router(state);
        let paths: Vec<&str> = routes().into_iter().map(|(p, _)| p).collect();
        let samples = [("id", "1"), ("subject", "s"), ("version", "1")];
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &samples).await {
            panic!("registry/src/http/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
