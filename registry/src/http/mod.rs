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
//!
//! With `--api-keys-file`, every route but health, readiness, metrics and the OpenAPI document
//! needs a key ([`require_client`]): as a bearer token, or as the password of HTTP Basic auth,
//! which is how Confluent clients send `basic.auth.user.info = <user>:<key>`. Writes need a
//! write key; everything else, including the lookups and compatibility checks clients `POST`,
//! a read key. A refusal is Confluent's 401 `40101` or 403 `40301`. The check runs before a
//! write is forwarded; the forward itself carries the cluster token, which the writer accepts
//! as a key of every scope.

mod error;
mod extract;
mod forward;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use common::client::HttpClient;
use common::http::{ServeConfig, healthz, openapi, with_layers};
use common::metrics::SharedRegistry;
use common::security::{Scope, Security};
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
    /// The client writes are forwarded with (it carries the cluster token).
    pub forwarder: HttpClient,
    /// The credentials the routes check.
    pub security: Arc<Security>,
}

impl AppState {
    /// The only writer over `log`, with fresh metrics (not loaded yet: see
    /// [`Registry::load`]), checking requests with `security` (`Security::default()`: open).
    pub fn new(
        cfg: Config,
        log: Arc<dyn SchemaLog>,
        security: Arc<Security>,
    ) -> anyhow::Result<Self> {
        let me = format!("http://{}:{}", cfg.ip, cfg.port);
        Self::with_leadership(cfg, log, Arc::new(Leadership::single(&me)), security)
    }

    /// A registry over `log` whose role `leadership` decides.
    pub fn with_leadership(
        cfg: Config,
        log: Arc<dyn SchemaLog>,
        leadership: Arc<Leadership>,
        security: Arc<Security>,
    ) -> anyhow::Result<Self> {
        let mut prom = PromRegistry::default();
        let metrics = Metrics::register(&mut prom);
        let forwarder = security
            .apply(HttpClient::new(
                cfg.broker_timeout() + Duration::from_secs(5),
            ))
            .context("build the forwarding client")?;
        Ok(Self {
            registry: Registry::new(cfg, log, leadership, metrics),
            metrics: Arc::new(prom),
            forwarder,
            security,
        })
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: probes, scrapers, the API document.
    Open,
    /// Clients: an API key (or the cluster token), when keys are set ([`require_client`]).
    Client,
}

/// The registry's client guard (a route layer): when API keys are set, a request needs one
/// (bearer, or the password of Basic auth) or the cluster token; a write
/// (`forward::is_write`) a write key, anything else a read key. Refusals are Confluent's
/// `40101` (401, with a Basic challenge) and `40301` (403).
pub async fn require_client(
    State(security): State<Arc<Security>>,
    req: Request,
    next: Next,
) -> Response {
    let need = if forward::is_write(req.method(), req.uri().path()) {
        Scope::Write
    } else {
        Scope::Read
    };
    match security.check_client(req.headers(), need) {
        Ok(()) => next.run(req).await,
        Err(e) if e.status() == StatusCode::FORBIDDEN => {
            SrError::new(StatusCode::FORBIDDEN, 40301, e.to_string()).into_response()
        }
        Err(e) => {
            let mut resp =
                SrError::new(StatusCode::UNAUTHORIZED, 40101, e.to_string()).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kelp-registry\""),
            );
            resp
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

/// Every route the registry serves, by path, with who may call it. [`router`] registers
/// exactly these, and the OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    use routes::{compatibility, config, ops, schemas, subjects};
    vec![
        ("/", Access::Client, get(ops::root)),
        ("/schemas/types", Access::Client, get(schemas::types)),
        ("/schemas/ids/{id}", Access::Client, get(schemas::get)),
        (
            "/schemas/ids/{id}/schema",
            Access::Client,
            get(schemas::get_schema),
        ),
        (
            "/schemas/ids/{id}/versions",
            Access::Client,
            get(schemas::versions),
        ),
        (
            "/schemas/ids/{id}/subjects",
            Access::Client,
            get(schemas::subjects),
        ),
        ("/subjects", Access::Client, get(subjects::list)),
        (
            "/subjects/{subject}",
            Access::Client,
            post(subjects::lookup).delete(subjects::delete),
        ),
        (
            "/subjects/{subject}/versions",
            Access::Client,
            get(subjects::versions).post(subjects::register),
        ),
        (
            "/subjects/{subject}/versions/{version}",
            Access::Client,
            get(subjects::get_version).delete(subjects::delete_version),
        ),
        (
            "/subjects/{subject}/versions/{version}/schema",
            Access::Client,
            get(subjects::get_version_schema),
        ),
        (
            "/subjects/{subject}/versions/{version}/referencedby",
            Access::Client,
            get(subjects::referenced_by),
        ),
        (
            "/compatibility/subjects/{subject}/versions",
            Access::Client,
            post(compatibility::check_all),
        ),
        (
            "/compatibility/subjects/{subject}/versions/{version}",
            Access::Client,
            post(compatibility::check_version),
        ),
        (
            "/config",
            Access::Client,
            get(config::get_global)
                .put(config::put_global)
                .delete(config::delete_global),
        ),
        (
            "/config/{subject}",
            Access::Client,
            get(config::get_subject)
                .put(config::put_subject)
                .delete(config::delete_subject),
        ),
        (
            "/mode",
            Access::Client,
            get(config::get_mode).put(config::put_mode),
        ),
        ("/healthz", Access::Open, get(healthz)),
        ("/readyz", Access::Open, get(ops::readyz)),
        ("/metrics", Access::Open, get(ops::metrics)),
        (openapi::PATH, Access::Open, openapi::route(OPENAPI)),
    ]
}

/// The registry's router, guarded (`Access`) and wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    let body_limit = state.registry.cfg().max_body_bytes;
    let (open, client) = routes().into_iter().fold(
        (Router::new(), Router::new()),
        |(open, client), (path, access, handlers)| match access {
            Access::Open => (open.route(path, handlers), client),
            Access::Client => (open, client.route(path, handlers)),
        },
    );
    // The later layer runs first: a write is authorized, then forwarded.
    let client = client
        .route_layer(from_fn_with_state(state.clone(), forward::forward_writes))
        .route_layer(from_fn_with_state(state.security.clone(), require_client));
    let api = open.merge(client).with_state(state);
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
        let state =
            AppState::new(Config::default(), Arc::new(MemLog::new()), Arc::default()).unwrap();
        state
            .registry
            .load(tokio_util::sync::CancellationToken::new())
            .await;
        let app = router(state);
        let paths: Vec<&str> = routes().into_iter().map(|(p, _, _)| p).collect();
        let samples = [("id", "1"), ("subject", "s"), ("version", "1")];
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &samples).await {
            panic!("registry/src/http/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
