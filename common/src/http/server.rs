//! The layer stack every service router gets, the fallbacks, and the serve loop.
//!
//! Layer order, outermost first: a server span named `"{METHOD} {matched route}"` whose parent
//! is the incoming W3C trace context, `x-request-id`, a request timeout, the body limit.
//!
//! The serve loop ([`serve_with`]) is hyper-util's, so it can bound what a hostile client can
//! hold: a header-read (and TLS handshake) timeout against slowloris, a cap on requests in
//! flight that sheds the excess with an immediate 503 `overloaded`, and a cap on connections.
//! It serves HTTPS when given a rustls configuration.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
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

/// How [`serve_with`] runs: drain period, TLS and the denial-of-service bounds.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// After shutdown, how long in-flight requests may take before the server returns anyway.
    pub drain: Duration,
    /// Serve HTTPS with this configuration (see [`crate::tls::server_config`]); `None` is plain
    /// HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A connection must finish its TLS handshake, and each request its header, within this
    /// time, or it is closed (slowloris).
    pub header_read_timeout: Duration,
    /// Requests handled at once; beyond it a request gets an immediate 503 `overloaded` with
    /// `Retry-After: 1`. Connections are bounded to four times this (at least 256); beyond
    /// that a new connection is closed at once.
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            max_in_flight: 2048,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most `drain` before returning. Plain HTTP with the default bounds of
/// [`ServeOptions`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let opts = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    serve_with(listener, router, shutdown, opts).await
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2, over TLS when `opts.tls` is set) until
/// `shutdown` is cancelled; then stops accepting and lets in-flight requests finish for at
/// most `opts.drain`. Handlers can extract `ConnectInfo<SocketAddr>`.
///
/// Accept errors (out of file descriptors, a connection reset before it was accepted) are
/// logged and retried after a short pause; they never end the loop.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> std::io::Result<()> {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let max_in_flight = opts.max_in_flight.max(1);
    let shed = Arc::new(Shedder::new(max_in_flight).await);
    let connections = Arc::new(Semaphore::new(max_connections(max_in_flight)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    let handshake_timeout = opts.header_read_timeout;
    let graceful = GracefulShutdown::new();

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                continue;
            }
        };
        let Ok(conn_permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many connections: closing a new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = match make_service.call(peer).await {
            Ok(router) => router,
            Err(never) => match never {},
        };
        let shed = shed.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let permit = shed.try_acquire();
            let shed = shed.clone();
            let router = router.clone();
            async move {
                let Some(permit) = permit else {
                    return Ok::<_, Infallible>(shed.overloaded());
                };
                let resp = router.oneshot(req).await;
                drop(permit);
                resp
            }
        });
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _conn_permit = conn_permit;
            let result = match acceptor {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(()),
        () = tokio::time::sleep(opts.drain) => {
            tracing::warn!(drain = ?opts.drain, "in-flight requests did not finish within the drain period");
            Ok(())
        }
    }
}

/// Connections held at once: four per request in flight, and at least 256 so a small
/// `max_in_flight` still lets a few clients keep their keep-alive pools.
fn max_connections(max_in_flight: usize) -> usize {
    max_in_flight.saturating_mul(4).max(256)
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The load shedder: a permit per request in flight, and the 503 for those beyond.
struct Shedder {
    permits: Arc<Semaphore>,
    /// The `overloaded` answer, built once (without logging it) and cloned per refusal.
    template: (axum::http::response::Parts, Bytes),
    /// Refusals since the last warning, and when that was (ms since `start`).
    refused: AtomicU64,
    last_warn_ms: AtomicU64,
    start: Instant,
}

impl Shedder {
    async fn new(max_in_flight: usize) -> Self {
        let resp =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                ApiError::unavailable(
                    "overloaded",
                    format!("server overloaded: more than {max_in_flight} requests in flight"),
                    1,
                )
                .into_response()
            });
        let (parts, body) = resp.into_parts();
        let body = body_bytes(body).await;
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            template: (parts, body),
            refused: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The 503 for one refused request; warns at most once a second with the count.
    fn overloaded(&self) -> Response {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .last_warn_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused.store(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                "too many requests in flight: answering 503 overloaded"
            );
        }
        let (parts, body) = &self.template;
        let mut resp = Response::new(axum::body::Body::from(body.clone()));
        *resp.status_mut() = parts.status;
        *resp.headers_mut() = parts.headers.clone();
        resp
    }
}

/// The bytes of a body known to be complete in memory (an `ApiError`'s JSON).
async fn body_bytes(body: axum::body::Body) -> Bytes {
    use http_body_util::BodyExt;
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests;
