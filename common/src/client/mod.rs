//! The one traced HTTP client every internal call goes through, and the typed clients of each
//! service built on it.
//!
//! Every request gets a client span (`"{METHOD} {route}"`, kind client) whose W3C context is
//! injected as `traceparent`. Idempotent requests are retried with exponential backoff on
//! connection errors and 502/503/504; non-idempotent ones are sent once. Error responses are
//! parsed back into [`ClientError::Api`] so callers match on the error `code`.

pub mod broker;
pub mod filer;
pub mod master;
pub mod volume;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::http::ErrorBody;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and a JSON error body.
    #[error("{url} answered {status}: {message} ({code})")]
    Api {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The stable error code.
        code: String,
        /// The error text.
        message: String,
        /// `Retry-After` seconds, for 503s.
        retry_after: Option<u64>,
    },
    /// The server could not be reached or the connection broke.
    #[error("call {url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The response body was not what the contract says.
    #[error("decode the answer of {url}: {message}")]
    Decode {
        /// The URL called.
        url: String,
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the request may succeed if repeated later (transport errors, 5xx gateway errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Api { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Self::Decode { .. } => false,
        }
    }
}

/// A request to send: method, URL, the route template that names its span, and a body.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// HTTP method.
    pub method: Method,
    /// Full URL.
    pub url: String,
    /// Route template for the span name, e.g. `POST /{fid}`.
    pub route: &'a str,
    /// Request body (cheaply cloneable for retries).
    pub body: Option<Bytes>,
    /// Extra headers.
    pub headers: HeaderMap,
    /// Whether repeating the call is harmless.
    pub idempotent: bool,
    /// Whether a 3xx answer is the caller's to handle ([`Call::accept_redirects`]); otherwise
    /// it is an error, never taken for success.
    pub redirects: bool,
    /// A timeout for this call instead of the client's.
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    /// A call without a body.
    pub fn new(method: Method, url: impl Into<String>, route: &'a str) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        Self {
            method,
            url: url.into(),
            route,
            body: None,
            headers: HeaderMap::new(),
            idempotent,
            redirects: false,
            timeout: None,
        }
    }

    /// Hands a 3xx answer to the caller (who follows it itself) instead of failing the call.
    pub fn accept_redirects(mut self) -> Self {
        self.redirects = true;
        self
    }

    /// Bounds this call by `timeout` instead of the client's own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets a raw body.
    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets a JSON body.
    pub fn json<T: Serialize>(mut self, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("wire types serialize");
        self.headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        self.body = Some(Bytes::from(bytes));
        self
    }

    /// Overrides whether the call may be retried.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// The traced, retrying HTTP client.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    attempts: u32,
    timeout: Duration,
    /// Whether the client speaks TLS: `http://` URLs are then sent as `https://`.
    tls: bool,
    /// Headers added to every request (e.g. the cluster token).
    default_headers: HeaderMap,
    /// The TLS configuration, kept to rebuild the client ([`HttpClient::with_http2`]).
    tls_cfg: Option<rustls::ClientConfig>,
    /// Whether the client speaks HTTP/2 only.
    http2: bool,
}

impl HttpClient {
    /// A client with the given per-request timeout and 4 attempts for idempotent calls.
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: build_reqwest(timeout, None, false),
            attempts: 4,
            timeout,
            tls: false,
            default_headers: HeaderMap::new(),
            tls_cfg: None,
            http2: false,
        }
    }

    /// The same client speaking HTTP/2 only: every request to a server shares one connection
    /// (cleartext HTTP/2 with prior knowledge, or `h2` negotiated over TLS). Every Kelp service
    /// speaks both HTTP/1.1 and HTTP/2 on its port.
    pub fn with_http2(mut self) -> Self {
        self.http2 = true;
        self.inner = build_reqwest(self.timeout, self.tls_cfg.clone(), true);
        self
    }

    /// The same client speaking TLS with `cfg` (see [`crate::tls::client_config`]): same
    /// timeouts and attempts, and every `http://` URL is sent as `https://`, so it never speaks
    /// plain HTTP.
    pub fn with_tls(mut self, cfg: rustls::ClientConfig) -> Self {
        self.inner = build_reqwest(self.timeout, Some(cfg.clone()), self.http2);
        self.tls_cfg = Some(cfg);
        self.tls = true;
        self
    }

    /// Adds a header to every request this client sends; the value is marked sensitive (kept
    /// out of debug output).
    pub fn with_default_header(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        self.default_headers.insert(name, value);
        self
    }

    /// Whether this client speaks TLS ([`HttpClient::with_tls`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Sets the number of attempts for idempotent calls.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Sends a call and returns the successful response (any 2xx, and a 3xx when the call
    /// [accepts redirects](Call::accept_redirects)); anything else is an error.
    pub async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, ClientError> {
        let span = tracing::info_span!(
            "http.client",
            otel.name = call.route,
            otel.kind = "client",
            http.request.method = %call.method,
            url.full = %call.url,
            http.response.status_code = tracing::field::Empty,
        );
        let attempts = if call.idempotent { self.attempts } else { 1 };
        async move {
            let mut attempt = 1;
            loop {
                let result = self.send_once(&call).await;
                match result {
                    Err(e) if attempt < attempts && e.is_transient() => {
                        let wait = match &e {
                            ClientError::Api {
                                retry_after: Some(s),
                                ..
                            } => Duration::from_secs(*s).min(Duration::from_secs(2)),
                            _ => crate::retry::backoff(
                                attempt,
                                Duration::from_millis(50),
                                Duration::from_secs(2),
                            ),
                        };
                        tracing::debug!(attempt, error = %e, "retrying idempotent call");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    other => {
                        if let Ok(resp) = &other {
                            tracing::Span::current()
                                .record("http.response.status_code", resp.status().as_u16());
                        }
                        return other;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<reqwest::Response, ClientError> {
        let mut headers = self.default_headers.clone();
        headers.extend(call.headers.clone());
        crate::telemetry::inject_current(&mut headers);
        let url = self.effective_url(&call.url);
        let mut req = self
            .inner
            .request(call.method.clone(), url.as_ref())
            .headers(headers);
        if let Some(body) = &call.body {
            req = req.body(body.clone());
        }
        if let Some(t) = call.timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone().into_owned(),
            source,
        })?;
        if resp.status().is_success() || (call.redirects && resp.status().is_redirection()) {
            return Ok(resp);
        }
        Err(api_error(&url, resp).await)
    }

    /// The URL actually sent: `http://` becomes `https://` on a TLS client.
    fn effective_url<'u>(&self, url: &'u str) -> std::borrow::Cow<'u, str> {
        match url.strip_prefix("http://") {
            Some(rest) if self.tls => std::borrow::Cow::Owned(format!("https://{rest}")),
            _ => std::borrow::Cow::Borrowed(url),
        }
    }

    /// Sends a call and decodes its JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, ClientError> {
        let url = call.url.clone();
        let resp = self.send(call).await?;
        decode_json(url, resp).await
    }

    /// Sends a call and returns its whole body.
    pub async fn bytes(&self, call: Call<'_>) -> Result<Bytes, ClientError> {
        let url = call.url.clone();
        let resp = self.send(call).await?;
        resp.bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }
}

/// The code of a [`redirect_error`].
pub(crate) const REDIRECT_CODE: &str = "redirect_not_followed";

/// The error of a redirect not followed (to a service the client was not given: the call
/// carries credentials).
pub(crate) fn redirect_error(url: String, message: String) -> ClientError {
    ClientError::Api {
        url,
        status: StatusCode::TEMPORARY_REDIRECT,
        code: REDIRECT_CODE.to_owned(),
        message,
        retry_after: None,
    }
}

/// The `scheme://host:port` of a redirect's `Location`.
pub(crate) fn origin_of(location: &str) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// Reads `resp`'s body (from `url`) and decodes it as JSON.
pub async fn decode_json<T: DeserializeOwned>(
    url: String,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url,
        message: e.to_string(),
    })
}

/// Builds the reqwest client: the one place one is built (clippy.toml forbids it elsewhere).
///
/// TLS always goes through a rustls configuration with the ring provider: `cfg`, or for a
/// plain client one that trusts no CA (so an `https://` URL fails verification rather than
/// reqwest looking for a process-wide provider).
#[allow(clippy::disallowed_methods)]
fn build_reqwest(
    timeout: Duration,
    cfg: Option<rustls::ClientConfig>,
    http2: bool,
) -> reqwest::Client {
    let mut cfg = cfg.unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default tls versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    // Redirects are not followed: the one Kelp service that sends them (a standby master) is
    // followed by `master::MasterClient`, which keeps the credentials reqwest would strip on a
    // hop to another port, and remembers where the leader is; any other 3xx (a proxy in front
    // of Kelp, say) fails the call rather than pass for its success.
    let mut builder = reqwest::Client::builder();
    if http2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        builder = builder.http2_prior_knowledge();
    }
    builder
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .tls_backend_preconfigured(cfg)
        .build()
        .expect("a client with a preconfigured rustls config always builds")
}

/// Turns an error response into [`ClientError::Api`], keeping the server's code and text.
pub async fn api_error(url: &str, resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.bytes().await.unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => (b.code, b.error),
        Err(_) => (
            "unknown".to_owned(),
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        ),
    };
    ClientError::Api {
        url: url.to_owned(),
        status,
        code,
        message,
        retry_after,
    }
}

/// Prefixes `http://` to a `host:port` address unless it already has a scheme.
pub fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", addr.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::response::IntoResponse;
    use axum::routing::any;

    use super::*;

    /// A server whose first `fail` answers are 503 (with a JSON error body), then 200.
    async fn flaky(fail: u32) -> (String, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = Router::new().route(
            "/x",
            any(move || {
                let h = h.clone();
                async move {
                    if h.fetch_add(1, Ordering::SeqCst) < fail {
                        crate::http::ApiError::unavailable("busy", "try later", 0).into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/x"), hits)
    }

    #[tokio::test]
    async fn test_http2_client_shares_one_connection_with_the_services_server() {
        // The services' own server (`serve`) answers each request with its HTTP version and
        // the client's port, so the test sees the protocol and how many connections were used.
        let app = Router::new().route(
            "/v",
            any(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >,
                 req: axum::extract::Request| async move {
                    format!("{:?} {}", req.version(), peer.port())
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(crate::http::serve(
            listener,
            app,
            stop.clone(),
            Duration::from_secs(1),
        ));
        let answers = |client: HttpClient| {
            let url = url.clone();
            async move {
                let calls = (0..16).map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    async move {
                        let body = client
                            .bytes(Call::new(Method::GET, &url, "GET /v"))
                            .await
                            .unwrap();
                        String::from_utf8(body.to_vec()).unwrap()
                    }
                });
                futures::future::join_all(calls).await
            }
        };
        let h2 = answers(HttpClient::new(Duration::from_secs(5)).with_http2()).await;
        assert!(h2.iter().all(|a| a.starts_with("HTTP/2.0 ")), "{h2:?}");
        let ports: std::collections::HashSet<_> = h2.iter().map(|a| a.split(' ').nth(1)).collect();
        assert_eq!(
            ports.len(),
            1,
            "16 concurrent HTTP/2 calls, one connection: {h2:?}"
        );
        let h1 = answers(HttpClient::new(Duration::from_secs(5))).await;
        assert!(h1.iter().all(|a| a.starts_with("HTTP/1.1 ")), "{h1:?}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn test_client_retries_idempotent_calls_on_503() {
        let (url, hits) = flaky(2).await;
        let client = HttpClient::new(Duration::from_secs(5));
        let body = client
            .bytes(Call::new(Method::GET, &url, "GET /x"))
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn test_client_sends_non_idempotent_calls_once_and_parses_the_error() {
        let (url, hits) = flaky(2).await;
        let client = HttpClient::new(Duration::from_secs(5));
        let err = client
            .bytes(Call::new(Method::POST, &url, "POST /x"))
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(err.code(), Some("busy"));
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn test_client_gives_up_after_its_attempts() {
        let (url, hits) = flaky(100).await;
        let client = HttpClient::new(Duration::from_secs(5)).with_attempts(3);
        assert!(
            client
                .bytes(Call::new(Method::GET, &url, "GET /x"))
                .await
                .is_err()
        );
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }
}
