//! The layer stack every service router gets, the fallbacks, and the serve loop.
//!
//! Layer order, outermost first: a server span named `"{METHOD} {matched route}"` whose parent
//! is the incoming W3C trace context, `x-request-id`, a request timeout, the body limit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Span;

use super::{ApiError, Json};
use crate::telemetry;

/// Limits applied by [`with_layers`].
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Largest request body accepted by the JSON and byte extractors.
    pub body_limit: usize,
    /// Requests taking longer get a 408.
    pub request_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            body_limit: 16 << 20,
            request_timeout: Duration::from_secs(120),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps a service's router in the shared layers and fallbacks.
pub fn with_layers(router: Router, cfg: ServeConfig) -> Router {
    router
        .fallback(fallback_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            cfg.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_server_span)
                // A 5xx is logged by `ApiError` at its level (ERROR only for a 500); the trace
                // layer's own note of it stays at WARN so a 503 under a fault is not an ERROR.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN))
                .on_response(
                    |resp: &axum::http::Response<_>, latency: Duration, span: &Span| {
                        span.record("http.response.status_code", resp.status().as_u16());
                        tracing::debug!(status = resp.status().as_u16(), ?latency, "served");
                    },
                ),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn make_server_span(req: &Request) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "http.server",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    telemetry::set_parent_from_headers(&span, req.headers());
    // Log lines inside the request carry the trace id (when traces are being exported).
    if let Some(id) = telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    span
}

/// The fallback for unknown routes: a 404 JSON error naming the path.
pub async fn fallback_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("no_route", format!("no route for {method} {}", uri.path()))
}

/// The fallback for known routes hit with the wrong method: a 405 JSON error.
pub async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        message: format!("method {method} not allowed on {}", uri.path()),
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<impl Serialize> {
    Json(Health { status: "ok" })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let server =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => res,
        () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "in-flight requests did not finish within the drain period");
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct Addrs {
    http: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<SocketAddr>,
}

/// Writes `<dir>/addrs.json` with the bound address, so tests and tools that started the
/// service on port 0 can find it.
pub fn write_addrs_file(dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    write_addrs(dir, addr, None)
}

/// Writes `<dir>/addrs.json` with the HTTP address and, for a broker with a Kafka listener,
/// its address (`"kafka"`).
pub fn write_addrs(dir: &Path, http: SocketAddr, kafka: Option<SocketAddr>) -> std::io::Result<()> {
    let body = serde_json::to_vec(&Addrs { http, kafka }).map_err(std::io::Error::other)?;
    crate::fs::durable_overwrite(&dir.join("addrs.json"), &body)
}
