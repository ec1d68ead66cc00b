//! Credentials and the checks every service makes with them.
//!
//! Three kinds, each off unless its flag names a file (Kelp then says so at start-up):
//! - **Fid tokens** (`--jwt-signing-key-file`, `--jwt-read-key-file`): HS256 JWTs whose claims
//!   are `{fid, exp}`, as SeaweedFS mints them. The master hands one out with each assign (and
//!   with a `fileId` lookup when a read key is set); volume servers demand one, for that exact
//!   fid, on writes and deletes (and reads, with a read key), sent as
//!   `Authorization: BEARER <jwt>`. Services that write on their own (filer, broker, volume
//!   replication) hold the key and mint their own ([`FidKey::sign`]).
//! - **The cluster token** (`--cluster-token-file`): one shared secret every service sends
//!   in [`CLUSTER_TOKEN_HEADER`] on every internal call; control-plane routes (heartbeats,
//!   `/admin/*`, `/__meta/*`, replica forwards, the broker's admin routes) refuse requests
//!   without it. A shared token rather than mutual TLS because it works the same with and
//!   without TLS, in one Kubernetes Secret, and is rotated by replacing one file; TLS (when on)
//!   keeps it from being read off the wire, and `--tls-ca` also verifies peers.
//! - **API keys** (`--api-keys-file`): bearer keys with a `read` or `write` scope for the
//!   clients of the filer, broker and registry ([`ApiKeys`]). The cluster token is accepted
//!   wherever an API key is, with every scope.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::client::HttpClient;
use crate::http::{ApiError, ServeOptions};
use crate::ids::FileId;

/// The header carrying the cluster token on service-to-service calls.
pub const CLUSTER_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-kelp-cluster-token");

/// The security flags every service and the CLI share (each also read from `KELP_*`),
/// flattened into their clap configuration.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct SecurityFlags {
    /// File holding the HMAC key that signs fid tokens for writes and deletes (master, volume,
    /// filer, broker; the same key everywhere). Unset: volume writes need no token.
    #[arg(long, env = "KELP_JWT_SIGNING_KEY_FILE")]
    pub jwt_signing_key_file: Option<PathBuf>,
    /// File holding the HMAC key that signs fid tokens for reads. Unset: reads are open.
    #[arg(long, env = "KELP_JWT_READ_KEY_FILE")]
    pub jwt_read_key_file: Option<PathBuf>,
    /// Seconds a fid token is valid after it is minted.
    #[arg(long, env = "KELP_JWT_EXPIRES_SECS", default_value_t = 10)]
    pub jwt_expires_secs: u64,
    /// File holding the cluster token that service-to-service routes demand and every
    /// internal call sends. Unset: those routes are open.
    #[arg(long, env = "KELP_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// File of client API keys, one per line: `read <key>` or `write <key>` (`#` comments).
    /// Unset: the filer's, broker's and registry's client routes are open.
    #[arg(long, env = "KELP_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// This service's TLS certificate chain (PEM). With `--tls-key`, every listener speaks
    /// only TLS.
    #[arg(long, env = "KELP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "KELP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that internal calls trust, and that client certificates must chain to
    /// when presented. With it, internal calls use `https://`.
    #[arg(long, env = "KELP_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Requests a listener handles at once; beyond it a request is answered 503 `overloaded`
    /// with `Retry-After: 1` at once (load shedding), so a flood cannot grow memory.
    #[arg(long, env = "KELP_MAX_IN_FLIGHT", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// A connection must finish its TLS handshake, and each request its header, within this
    /// many milliseconds, or it is closed (slowloris).
    #[arg(long, env = "KELP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub header_read_timeout_ms: u64,
}

impl Default for SecurityFlags {
    fn default() -> Self {
        Self {
            jwt_signing_key_file: None,
            jwt_read_key_file: None,
            jwt_expires_secs: 10,
            cluster_token_file: None,
            api_keys_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            max_in_flight: 2048,
            header_read_timeout_ms: 10_000,
        }
    }
}

/// The credentials a service runs with, loaded from [`SecurityFlags`].
#[derive(Clone, Default)]
pub struct Security {
    /// Signs and verifies fid tokens for writes and deletes.
    pub write_key: Option<FidKey>,
    /// Signs and verifies fid tokens for reads.
    pub read_key: Option<FidKey>,
    /// How long minted fid tokens live.
    pub token_ttl: Duration,
    /// The shared cluster token.
    pub cluster_token: Option<Secret>,
    /// Client API keys.
    pub api_keys: Option<ApiKeys>,
    /// TLS files, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Requests handled at once before load shedding (`--max-in-flight`).
    pub max_in_flight: usize,
    /// The header-read and TLS-handshake timeout (`--header-read-timeout-ms`).
    pub header_read_timeout: Duration,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("write_key", &self.write_key.is_some())
            .field("read_key", &self.read_key.is_some())
            .field("token_ttl", &self.token_ttl)
            .field("cluster_token", &self.cluster_token.is_some())
            .field("api_keys", &self.api_keys.as_ref().map(ApiKeys::len))
            .field("tls", &self.tls)
            .field("max_in_flight", &self.max_in_flight)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

/// The TLS files of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), when this service serves TLS.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The CA internal calls trust (PEM).
    pub ca: Option<PathBuf>,
}

impl SecurityFlags {
    /// What a starting service does with its flags: [`SecurityFlags::load`], then
    /// [`Security::log_posture`] for `service`.
    pub fn load_for(&self, service: &str) -> anyhow::Result<Arc<Security>> {
        let security = self.load().context("load security files")?;
        security.log_posture(service);
        Ok(Arc::new(security))
    }

    /// Reads every named file. A file that cannot be read, an empty key or token, or a bad API
    /// key line is an error naming the file: a service never starts with less security than
    /// it was asked for.
    pub fn load(&self) -> anyhow::Result<Security> {
        let write_key = self
            .jwt_signing_key_file
            .as_deref()
            .map(FidKey::from_file)
            .transpose()?;
        let read_key = self
            .jwt_read_key_file
            .as_deref()
            .map(FidKey::from_file)
            .transpose()?;
        let cluster_token = self
            .cluster_token_file
            .as_deref()
            .map(Secret::from_file)
            .transpose()?;
        let api_keys = self
            .api_keys_file
            .as_deref()
            .map(ApiKeys::from_file)
            .transpose()?;
        let tls = (self.tls_cert.is_some() || self.tls_ca.is_some()).then(|| TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
        });
        Ok(Security {
            write_key,
            read_key,
            token_ttl: Duration::from_secs(self.jwt_expires_secs.max(1)),
            cluster_token,
            api_keys,
            tls,
            max_in_flight: usize::try_from(self.max_in_flight).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
        })
    }
}

impl Security {
    /// Makes `http` an internal client of this cluster: it sends the cluster token with every
    /// call and, with `--tls-ca`, speaks only TLS to peers that chain to that CA (presenting
    /// `--tls-cert` as its client certificate). Every service builds its clients through this.
    pub fn apply(&self, http: HttpClient) -> anyhow::Result<HttpClient> {
        let mut http = http;
        if let Some(token) = &self.cluster_token {
            let value = HeaderValue::from_bytes(token.expose())
                .context("the cluster token must be printable ASCII")?;
            http = http.with_default_header(CLUSTER_TOKEN_HEADER, value);
        }
        if let Some(TlsFiles { ca: Some(ca), .. }) = &self.tls {
            let identity = self.server_identity();
            http = http.with_tls(crate::tls::client_config(ca, identity)?);
        }
        Ok(http)
    }

    /// The TLS client configuration for a peer outside Kelp that serves HTTPS with a
    /// certificate chaining to `--tls-ca` (etcd, for the filer's shared metadata store):
    /// trusts that CA and presents `--tls-cert` when set. `None` without `--tls-ca`. Unlike
    /// [`Security::apply`] it adds no cluster token: that secret is for Kelp's services only.
    pub fn client_tls(&self) -> anyhow::Result<Option<rustls::ClientConfig>> {
        match &self.tls {
            Some(TlsFiles { ca: Some(ca), .. }) => {
                Ok(Some(crate::tls::client_config(ca, self.server_identity())?))
            }
            _ => Ok(None),
        }
    }

    /// How this service serves HTTP: TLS with `--tls-cert`/`--tls-key` (no client certificate
    /// asked for: service-to-service routes authenticate with the cluster token, and users'
    /// clients need none), with `--header-read-timeout-ms` and `--max-in-flight` (the defaults
    /// of [`ServeOptions`] for a `Security::default()`).
    pub fn serve_options(&self, drain: Duration) -> anyhow::Result<ServeOptions> {
        let tls = match self.server_identity() {
            Some((cert, key)) => Some(crate::tls::server_config(cert, key, None)?),
            None => None,
        };
        let defaults = ServeOptions::default();
        Ok(ServeOptions {
            drain,
            tls,
            max_in_flight: if self.max_in_flight == 0 {
                defaults.max_in_flight
            } else {
                self.max_in_flight
            },
            header_read_timeout: if self.header_read_timeout.is_zero() {
                defaults.header_read_timeout
            } else {
                self.header_read_timeout
            },
        })
    }

    /// Whether this service serves TLS.
    pub fn serves_tls(&self) -> bool {
        self.server_identity().is_some()
    }

    fn server_identity(&self) -> Option<(&Path, &Path)> {
        match &self.tls {
            Some(TlsFiles {
                cert: Some(cert),
                key: Some(key),
                ..
            }) => Some((cert.as_path(), key.as_path())),
            _ => None,
        }
    }

    /// Logs, once at start-up, which protections are on, and warns for each that is off among
    /// those `service` uses (the volume server checks no API keys; the registry writes no
    /// blobs, so it needs no fid-token key).
    pub fn log_posture(&self, service: &str) {
        let uses_fid_tokens = service != "registry";
        let uses_api_keys = service != "volume";
        let off: Vec<&str> = [
            (
                uses_fid_tokens && self.write_key.is_none(),
                "fid tokens (--jwt-signing-key-file)",
            ),
            (
                self.cluster_token.is_none(),
                "cluster token (--cluster-token-file)",
            ),
            (
                uses_api_keys && self.api_keys.is_none(),
                "client API keys (--api-keys-file)",
            ),
            (
                self.tls.as_ref().is_none_or(|t| t.cert.is_none()),
                "TLS (--tls-cert/--tls-key)",
            ),
        ]
        .into_iter()
        .filter_map(|(is_off, what)| is_off.then_some(what))
        .collect();
        if off.is_empty() {
            tracing::info!(
                service,
                "security: tokens, cluster token, API keys and TLS on"
            );
        } else {
            tracing::warn!(
                service,
                off = %off.join(", "),
                "security: running without some protections; fine on loopback for development, not in production"
            );
        }
    }

    /// Checks the cluster token of a request, when one is configured.
    pub fn check_cluster(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.cluster_token else {
            return Ok(());
        };
        match headers.get(&CLUSTER_TOKEN_HEADER) {
            None => Err(ApiError::unauthorized(
                "cluster_token_required",
                "this route is for Kelp services: send the cluster token",
            )),
            Some(v) if token.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized(
                "bad_cluster_token",
                "the cluster token is not valid",
            )),
        }
    }

    /// Whether the request carries the valid cluster token.
    pub fn has_cluster_token(&self, headers: &HeaderMap) -> bool {
        self.cluster_token.as_ref().is_some_and(|t| {
            headers
                .get(&CLUSTER_TOKEN_HEADER)
                .is_some_and(|v| t.matches(v.as_bytes()))
        })
    }

    /// Checks a client request against the API keys (when configured): the cluster token or a
    /// key with `need` (a write key also reads).
    pub fn check_client(&self, headers: &HeaderMap, need: Scope) -> Result<(), ApiError> {
        let Some(keys) = &self.api_keys else {
            return Ok(());
        };
        if self.has_cluster_token(headers) {
            return Ok(());
        }
        let Some(presented) = api_key(headers) else {
            return Err(ApiError::unauthorized(
                "api_key_required",
                "send an API key as `Authorization: Bearer <key>` (or as the password of Basic auth)",
            ));
        };
        match keys.scope_of(&presented) {
            None => Err(ApiError::unauthorized(
                "bad_api_key",
                "the API key is not valid",
            )),
            Some(Scope::Read) if need == Scope::Write => Err(ApiError::forbidden(
                "read_only_api_key",
                "this API key may read, not write",
            )),
            Some(_) => Ok(()),
        }
    }

    /// Checks the fid token a volume request carries for a write or delete of `fid`, when a
    /// signing key is configured.
    pub fn check_write_token(&self, headers: &HeaderMap, fid: &FileId) -> Result<(), ApiError> {
        check_fid_token(self.write_key.as_ref(), headers, fid)
    }

    /// Checks the fid token a volume request carries for a read of `fid`, when a read key is
    /// configured.
    pub fn check_read_token(&self, headers: &HeaderMap, fid: &FileId) -> Result<(), ApiError> {
        check_fid_token(self.read_key.as_ref(), headers, fid)
    }

    /// A write token for `fid`, when a signing key is configured.
    pub fn write_token(&self, fid: &FileId) -> Option<String> {
        self.write_key.as_ref().map(|k| k.sign(fid, self.token_ttl))
    }

    /// A read token for `fid`, when a read key is configured.
    pub fn read_token(&self, fid: &FileId) -> Option<String> {
        self.read_key.as_ref().map(|k| k.sign(fid, self.token_ttl))
    }
}

fn check_fid_token(
    key: Option<&FidKey>,
    headers: &HeaderMap,
    fid: &FileId,
) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "token_required",
            format!("{fid} needs a token: send `Authorization: BEARER <jwt>` from the assign"),
        ));
    };
    key.verify(token, fid)
}

/// The credential of an `Authorization: Bearer <x>` header (the scheme in any case, as
/// SeaweedFS sends `BEARER`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|s| !s.is_empty())
}

/// The API key a client presented: a bearer token, or the password of HTTP Basic auth (how
/// Schema Registry clients send credentials: `basic.auth.user.info = <user>:<key>`).
pub fn api_key(headers: &HeaderMap) -> Option<String> {
    if let Some(b) = bearer(headers) {
        return Some(b.to_owned());
    }
    use base64::Engine as _;
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// A secret read from a file (surrounding whitespace trimmed), compared in constant time and
/// never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Reads a secret; an unreadable or empty file is an error naming it.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let raw = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let trimmed = raw.trim_ascii();
        anyhow::ensure!(
            trimmed.len() >= 16,
            "{} holds {} bytes; a key or token needs at least 16",
            path.display(),
            trimmed.len()
        );
        Ok(Self(trimmed.into()))
    }

    /// A secret from bytes (tests, generated tokens).
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(bytes.as_ref().into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The claims of a fid token, as SeaweedFS's `SeaweedFileIdClaims`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FidClaims {
    /// The one file id the token allows (`3,01637037d6`).
    pub fid: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// An HMAC key that mints and checks fid tokens (HS256, via `jsonwebtoken`).
#[derive(Clone)]
pub struct FidKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for FidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FidKey(..)")
    }
}

impl FidKey {
    /// A key from its secret bytes (refused when `jsonwebtoken` refuses it, e.g. empty).
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).context("make the signing key")?,
            decoding: DecodingKey::from_secret(secret).context("make the verifying key")?,
        })
    }

    /// Reads a key file (at least 16 bytes after trimming).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::new(Secret::from_file(path)?.expose())
            .with_context(|| format!("use {} as an HMAC key", path.display()))
    }

    /// A token for `fid`, valid for `ttl`.
    pub fn sign(&self, fid: &FileId, ttl: Duration) -> String {
        let claims = FidClaims {
            fid: fid.to_string(),
            exp: (crate::time::now_ms() / 1000).saturating_add(ttl.as_secs().max(1)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks that `token` is signed by this key, unexpired, and names exactly `fid`.
    pub fn verify(&self, token: &str, fid: &FileId) -> Result<(), ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data =
            jsonwebtoken::decode::<FidClaims>(token, &self.decoding, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized(
                        "token_expired",
                        format!("the token for {fid} expired"),
                    ),
                    _ => ApiError::unauthorized(
                        "bad_token",
                        format!("the token for {fid} is not valid: {e}"),
                    ),
                }
            })?;
        match data.claims.fid.parse::<FileId>() {
            Ok(claimed) if claimed == *fid => Ok(()),
            _ => Err(ApiError::forbidden(
                "token_for_another_fid",
                format!("the token names {}, not {fid}", data.claims.fid),
            )),
        }
    }
}

/// What a client credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// GET and HEAD.
    Read,
    /// Everything (a write key also reads).
    Write,
}

impl Scope {
    /// The scope a request with this method needs.
    pub fn for_method(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Self::Read
        } else {
            Self::Write
        }
    }
}

/// Client API keys with their scopes.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<HashMap<Vec<u8>, Scope>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// Parses the key file format: one `read <key>` or `write <key>` per line, blank lines and
    /// `#` comments ignored, keys at least 16 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (scope, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected `read <key>` or `write <key>`", n + 1))?;
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                other => {
                    return Err(format!(
                        "line {}: scope {other:?} is neither read nor write",
                        n + 1
                    ));
                }
            };
            let key = key.trim();
            if key.len() < 16 || key.contains(char::is_whitespace) {
                return Err(format!(
                    "line {}: a key is at least 16 characters without spaces",
                    n + 1
                ));
            }
            keys.insert(key.as_bytes().to_vec(), scope);
        }
        if keys.is_empty() {
            return Err("no keys".to_owned());
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// Reads and parses a key file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("parse {}: {e}", path.display()))
    }

    /// The scope of a presented key (checked against every key in constant time each).
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let mut found = None;
        for (key, scope) in self.keys.iter() {
            if constant_time_eq(key, presented.as_bytes()) {
                found = Some(*scope);
            }
        }
        found
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Paths any client may reach without a credential: liveness, readiness, metrics and the API
/// document.
pub fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
}

/// Middleware (`axum::middleware::from_fn_with_state`) for routes only Kelp services call:
/// the cluster token is required when one is configured.
pub async fn require_cluster(
    State(sec): State<Arc<Security>>,
    req: Request,
    next: Next,
) -> Response {
    match sec.check_cluster(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware for client routes: an API key with the method's scope (or the cluster token) is
/// required when API keys are configured; [`is_open_path`] paths are always open.
pub async fn require_client(
    State(sec): State<Arc<Security>>,
    req: Request,
    next: Next,
) -> Response {
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    match sec.check_client(req.headers(), Scope::for_method(req.method())) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

pub mod dev {
    //! Generated credentials for development clusters, compose files and tests: a fid-token
    //! signing key, a read key, a cluster token and client API keys, each a random 256-bit
    //! value in hex, written with mode 0600.

    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    use anyhow::Context;
    use rand::RngCore;

    /// The files [`generate`] wrote, and the two client keys (for the CLI and tests).
    #[derive(Debug, Clone)]
    pub struct DevSecrets {
        /// `jwt-signing.key`: for `--jwt-signing-key-file`.
        pub jwt_signing_key: PathBuf,
        /// `jwt-read.key`: for `--jwt-read-key-file`.
        pub jwt_read_key: PathBuf,
        /// `cluster.token`: for `--cluster-token-file`.
        pub cluster_token: PathBuf,
        /// `api-keys`: for `--api-keys-file` (one write key, one read key).
        pub api_keys: PathBuf,
        /// `write.api-key`: the client key with the write scope (for `--api-key-file`).
        pub write_api_key: PathBuf,
        /// `read.api-key`: the client key with the read scope.
        pub read_api_key: PathBuf,
    }

    fn random_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn write_secret(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(0o600);
        if force {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut f = opts.open(path).with_context(|| {
            format!(
                "create {} (it may exist: use --force to replace it)",
                path.display()
            )
        })?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", path.display()))
    }

    /// Writes fresh credentials into `out` (created if missing). Existing files are refused
    /// unless `force`.
    pub fn generate(out: &Path, force: bool) -> anyhow::Result<DevSecrets> {
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        let s = DevSecrets {
            jwt_signing_key: out.join("jwt-signing.key"),
            jwt_read_key: out.join("jwt-read.key"),
            cluster_token: out.join("cluster.token"),
            api_keys: out.join("api-keys"),
            write_api_key: out.join("write.api-key"),
            read_api_key: out.join("read.api-key"),
        };
        let (write_key, read_key) = (random_hex(), random_hex());
        write_secret(&s.jwt_signing_key, &random_hex(), force)?;
        write_secret(&s.jwt_read_key, &random_hex(), force)?;
        write_secret(&s.cluster_token, &random_hex(), force)?;
        write_secret(
            &s.api_keys,
            &format!(
                "# client API keys: `write <key>` or `read <key>`, one per line\nwrite {write_key}\nread {read_key}\n"
            ),
            force,
        )?;
        write_secret(&s.write_api_key, &write_key, force)?;
        write_secret(&s.read_api_key, &read_key, force)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
