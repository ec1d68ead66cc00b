//! The master's HTTP API: the router, its state, and the routes.
//!
//! - `GET|POST /dir/assign`, `GET /dir/lookup`, `GET /dir/status` ([`routes::dir`]);
//! - `GET|POST /vol/grow`, `GET /vol/status`, `GET|POST /vol/vacuum` ([`routes::vol`]), `POST /submit`
//!   ([`routes::submit`]), `GET|POST /col/delete` ([`routes::col`]): SeaweedFS's routes, in its
//!   shapes;
//! - `POST /heartbeat`, `GET /cluster/status` ([`routes::cluster`]);
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` ([`routes::ops`]);
//! - `GET /openapi.json`: the OpenAPI document of these routes (`openapi.json` beside this file).
//!
//! Handlers extract, validate, call [`Master`] and map its [`Error`](crate::service::Error)
//! through `error.rs`; none touches the topology itself.
//!
//! # Access
//! Each route has one `Access`, applied as a route layer in [`router`] (so a 405 stays a
//! 405): `/heartbeat` is for volume servers and needs the cluster token; the routes that
//! change something (assign, submit, grow, vacuum, collection delete) need a `write` API key,
//! whatever their method; lookups and status views a `read` key (the cluster token counts as
//! either); `/healthz`, `/readyz` (the orchestrator's probe), `/metrics` and `/openapi.json`
//! are open. Each check is a no-op while its credential is not configured.
//!
//! # Followers
//! A standby master (see [`crate::leader`]) serves `/heartbeat`, `/cluster/status` and the
//! open routes itself, and answers every other route with a 307 to the same path and query on
//! the leader (whose address is also in the JSON body), or a 503 `no_leader` while none is
//! elected. A 307 keeps the method and body, so `curl -L` and SeaweedFS clients follow it.
mod error;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use common::http::{ApiError, ServeConfig, openapi};
use common::security::{Scope, Security, require_cluster};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::leader::Role;
use crate::service::Master;

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The master.
    pub master: Arc<Master>,
    /// Metrics registry.
    pub registry: Arc<Registry>,
    /// `/vol/vacuum`'s threshold when the request names none (`--garbage-threshold`).
    pub garbage_threshold: f64,
}

/// Largest `/submit` body (the volume server enforces its own blob limit too).
const SUBMIT_BODY_LIMIT: usize = 256 << 20;

/// Whether SeaweedFS's `pretty` parameter asks for indented JSON (any non-empty value).
pub(crate) fn pretty(p: Option<&str>) -> bool {
    p.is_some_and(|p| !p.is_empty())
}

/// A 200 JSON answer, indented when `pretty`.
pub(crate) fn answer<T: Serialize>(value: &T, pretty: bool) -> Response {
    let body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    match body {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => common::http::ApiError::internal(e).into_response(),
    }
}

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Who may call a route (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone.
    Open,
    /// A client with a `read` (or `write`) API key, or a Kelp service.
    Read,
    /// A client with a `write` API key, or a Kelp service, whatever the method.
    Write,
    /// Kelp services only: the cluster token.
    Cluster,
}

impl Access {
    /// `handlers` behind this access check (a route layer: only requests that reach a
    /// handler are checked, so an unserved method is still a 405).
    fn guard(
        self,
        handlers: MethodRouter<AppState>,
        sec: &Arc<Security>,
    ) -> MethodRouter<AppState> {
        let sec = sec.clone();
        match self {
            Self::Open => handlers,
            Self::Read => handlers.route_layer(from_fn_with_state(sec, require_read)),
            Self::Write => handlers.route_layer(from_fn_with_state(sec, require_write)),
            Self::Cluster => handlers.route_layer(from_fn_with_state(sec, require_cluster)),
        }
    }
}

/// Middleware: an API key with the `read` scope (or the cluster token), when keys are set.
async fn require_read(State(sec): State<Arc<Security>>, req: Request, next: Next) -> Response {
    match sec.check_client(req.headers(), Scope::Read) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware: an API key with the `write` scope (or the cluster token), when keys are set,
/// whatever the method (SeaweedFS's `GET /dir/assign` reserves keys too).
async fn require_write(State(sec): State<Arc<Security>>, req: Request, next: Next) -> Response {
    match sec.check_client(req.headers(), Scope::Write) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Every route the master serves, by path, with who may call it. [`router`] registers exactly
/// these, and the OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    use Access::{Cluster, Open, Read, Write};
    vec![
        (
            "/dir/assign",
            Write,
            get(routes::dir::assign).post(routes::dir::assign),
        ),
        ("/dir/lookup", Read, get(routes::dir::lookup)),
        ("/dir/status", Read, get(routes::dir::status)),
        (
            "/vol/grow",
            Write,
            get(routes::vol::grow).post(routes::vol::grow),
        ),
        ("/vol/status", Read, get(routes::vol::status)),
        (
            "/vol/vacuum",
            Write,
            get(routes::vol::vacuum).post(routes::vol::vacuum),
        ),
        (
            "/col/delete",
            Write,
            get(routes::col::delete).post(routes::col::delete),
        ),
        (
            "/submit",
            Write,
            post(routes::submit::submit).layer(DefaultBodyLimit::max(SUBMIT_BODY_LIMIT)),
        ),
        ("/cluster/status", Read, get(routes::cluster::status)),
        ("/heartbeat", Cluster, post(routes::cluster::heartbeat)),
        ("/healthz", Open, get(common::http::healthz)),
        ("/readyz", Open, get(routes::ops::readyz)),
        ("/metrics", Open, get(routes::ops::metrics)),
        (openapi::PATH, Open, openapi::route(OPENAPI)),
    ]
}

/// The routes a follower serves itself (every other one goes to the leader).
fn follower_serves(path: &str) -> bool {
    matches!(
        path,
        "/heartbeat" | "/cluster/status" | "/healthz" | "/readyz" | "/metrics"
    ) || path == openapi::PATH
}

/// Middleware: on a follower, a 307 to the leader (or 503 `no_leader`); on a leader or a
/// master without election, the route.
async fn to_leader(State(master): State<Arc<Master>>, req: Request, next: Next) -> Response {
    match master.leadership().role() {
        Role::Alone | Role::Leader => next.run(req).await,
        Role::Follower { leader: None } => ApiError::unavailable(
            "no_leader",
            "this master is a standby and no leader is elected yet; retry",
            1,
        )
        .into_response(),
        Role::Follower {
            leader: Some(leader),
        } => {
            let scheme = if master.security().serves_tls() {
                "https"
            } else {
                "http"
            };
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let location = format!("{scheme}://{leader}{path}");
            let body = serde_json::json!({
                "error": format!("this master is a standby; the leader is {leader}"),
                "code": "not_leader",
                "leader": leader,
            });
            match HeaderValue::from_str(&location) {
                Ok(v) => (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, v)],
                    axum::Json(body),
                )
                    .into_response(),
                Err(e) => ApiError::internal(e).into_response(),
            }
        }
    }
}

/// Builds the router with the shared layers, each route's access check and, on the routes
/// only the leader serves, the redirect of followers.
pub fn router(state: AppState) -> Router {
    let sec = state.master.security().clone();
    let master = state.master.clone();
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, access, handlers)| {
            // The access check runs first (the outer layer): a caller without credentials
            // learns nothing, not even where the leader is.
            let handlers = if follower_serves(path) {
                handlers
            } else {
                handlers.route_layer(from_fn_with_state(master.clone(), to_leader))
            };
            r.route(path, access.guard(handlers, &sec))
        })
        .with_state(state);
    common::http::with_layers(routes, ServeConfig::default())
}

#[cfg(test)]
pub(crate) mod tests;
