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

mod error;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use common::http::{ServeConfig, openapi};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::service::Master;

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The master.
    pub master: Arc<Master>,
    /// Metrics registry.
    pub registry: Arc<Registry>,
    /// This master's address.
    pub addr: String,
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

/// Every route the master serves, by path. [`router`] registers exactly these, and the OpenAPI
/// test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        (
            "/dir/assign",
            get(routes::dir::assign).post(routes::dir::assign),
        ),
        ("/dir/lookup", get(routes::dir::lookup)),
        ("/dir/status", get(routes::dir::status)),
        ("/vol/grow", get(routes::vol::grow).post(routes::vol::grow)),
        ("/vol/status", get(routes::vol::status)),
        (
            "/vol/vacuum",
            get(routes::vol::vacuum).post(routes::vol::vacuum),
        ),
        (
            "/col/delete",
            get(routes::col::delete).post(routes::col::delete),
        ),
        (
            "/submit",
            post(routes::submit::submit).layer(DefaultBodyLimit::max(SUBMIT_BODY_LIMIT)),
        ),
        ("/cluster/status", get(routes::cluster::status)),
        ("/heartbeat", post(routes::cluster::heartbeat)),
        ("/healthz", get(common::http::healthz)),
        ("/readyz", get(routes::ops::readyz)),
        ("/metrics", get(routes::ops::metrics)),
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

#[cfg(test)]
mod tests;
