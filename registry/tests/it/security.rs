//! The registry's guard through the real router: API keys as bearer tokens or as the password
//! of Basic auth (how Confluent clients send them), Confluent-shaped 401/403 bodies, open
//! probes, everything open with security off, and a follower forwarding a client's write to a
//! secured writer with the cluster token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::security::{ApiKeys, CLUSTER_TOKEN_HEADER, Secret, Security, SecurityFlags};
use http_body_util::BodyExt;
use kelp_registry::leader::Leadership;
use kelp_registry::store::mem::MemLog;
use kelp_registry::{AppState, Config, router, run_with_log};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::helpers::{CT, assert_error, avro_record};

const READ_KEY: &str = "read-key-0123456789";
const WRITE_KEY: &str = "write-key-0123456789";
const CLUSTER_TOKEN: &str = "cluster-token-0123456789";

fn security() -> Arc<Security> {
    Arc::new(Security {
        cluster_token: Some(Secret::new(CLUSTER_TOKEN)),
        api_keys: Some(ApiKeys::parse(&format!("read {READ_KEY}\nwrite {WRITE_KEY}")).unwrap()),
        ..Security::default()
    })
}

async fn secured_app() -> Router {
    let state = AppState::new(Config::default(), Arc::new(MemLog::new()), security()).unwrap();
    state.registry.load(CancellationToken::new()).await;
    router(state)
}

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    /// Basic auth with this `user:key`, as `basic.auth.user.info`.
    Basic(&'a str),
    Cluster(&'a str),
}

/// Sends a request; returns the status, the `WWW-Authenticate` header and the JSON body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    cred: Cred<'_>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    match cred {
        Cred::None => {}
        Cred::Bearer(key) => req = req.header(header::AUTHORIZATION, format!("Bearer {key}")),
        Cred::Basic(user_info) => {
            let encoded = base64(user_info.as_bytes());
            req = req.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        Cred::Cluster(token) => req = req.header(CLUSTER_TOKEN_HEADER, token),
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, CT);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        challenge,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Standard base64 with padding (the registry crate has no base64 dependency of its own).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn schema() -> Value {
    json!({"schema": avro_record("R", &["a"], &[])})
}

#[test]
fn test_security_base64_encodes_as_the_standard() {
    assert_eq!(base64(b"user:key"), "dXNlcjprZXk=");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[tokio::test]
async fn test_security_api_keys_guard_reads_and_writes_with_confluent_errors() {
    let app = secured_app().await;
    // No credential, and a key that is not one: Confluent's 40101 with a Basic challenge.
    for cred in [
        Cred::None,
        Cred::Bearer("not-a-key-0123456789"),
        Cred::Basic("app:not-a-key-0123456789"),
    ] {
        let (s, challenge, b) = call(&app, Method::GET, "/subjects", None, cred).await;
        assert_error(s, &b, 401, 40101);
        assert_eq!(
            challenge.as_deref(),
            Some("Basic realm=\"kelp-registry\""),
            "{cred:?}"
        );
        let (s, _, b) = call(
            &app,
            Method::POST,
            "/subjects/s/versions",
            Some(schema()),
            cred,
        )
        .await;
        assert_error(s, &b, 401, 40101);
    }
    // A read key cannot register, delete or change the config: 40301.
    let read = Cred::Basic("reader:read-key-0123456789");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/subjects/s/versions",
        Some(schema()),
        read,
    )
    .await;
    assert_error(s, &b, 403, 40301);
    let (s, _, b) = call(
        &app,
        Method::PUT,
        "/config",
        Some(json!({"compatibility": "NONE"})),
        read,
    )
    .await;
    assert_error(s, &b, 403, 40301);
    // A write key registers, as Basic auth (Confluent's clients) or as a bearer token.
    let write = Cred::Basic("writer:write-key-0123456789");
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/subjects/s/versions",
        Some(schema()),
        write,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_u64().unwrap();
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/subjects/t/versions",
        Some(json!({"schema": "\"int\""})),
        Cred::Bearer(WRITE_KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // A read key reads, and may POST the lookups and compatibility checks clients make.
    for cred in [read, Cred::Bearer(READ_KEY), write] {
        let (s, _, b) = call(&app, Method::GET, &format!("/schemas/ids/{id}"), None, cred).await;
        assert_eq!(s, StatusCode::OK, "{cred:?}: {b}");
        let (s, _, b) = call(&app, Method::POST, "/subjects/s", Some(schema()), cred).await;
        assert_eq!(s, StatusCode::OK, "{cred:?}: {b}");
        let (s, _, b) = call(
            &app,
            Method::POST,
            "/compatibility/subjects/s/versions/latest",
            Some(schema()),
            cred,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{cred:?}: {b}");
    }
    // The cluster token passes as a key of every scope; a wrong token does not.
    let (s, _, b) = call(
        &app,
        Method::DELETE,
        "/subjects/t",
        None,
        Cred::Cluster(CLUSTER_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = call(
        &app,
        Method::GET,
        "/subjects",
        None,
        Cred::Cluster("wrong-token-0123456789"),
    )
    .await;
    assert_error(s, &b, 401, 40101);
}

#[tokio::test]
async fn test_security_probes_metrics_and_the_document_stay_open() {
    let app = secured_app().await;
    for uri in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (s, _, _) = call(&app, Method::GET, uri, None, Cred::None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn test_security_off_leaves_every_route_open() {
    let state = AppState::new(Config::default(), Arc::new(MemLog::new()), Arc::default()).unwrap();
    state.registry.load(CancellationToken::new()).await;
    let app = router(state);
    let (s, _, b) = call(
        &app,
        Method::POST,
        "/subjects/s/versions",
        Some(schema()),
        Cred::None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, _) = call(
        &app,
        Method::GET,
        "/subjects",
        None,
        Cred::Basic("u:whatever-0123456789"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn test_security_follower_forwards_a_clients_write_with_the_cluster_token() {
    // A secured writer on a socket, loading its credentials from its flags.
    // Removed when dropped, also when the test panics.
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let token_file = tmp.join("cluster-token");
    std::fs::write(&token_file, CLUSTER_TOKEN).unwrap();
    let keys_file = tmp.join("api-keys");
    std::fs::write(&keys_file, format!("read {READ_KEY}\nwrite {WRITE_KEY}\n")).unwrap();
    let flags = SecurityFlags {
        cluster_token_file: Some(token_file),
        api_keys_file: Some(keys_file),
        ..SecurityFlags::default()
    };
    let log = Arc::new(MemLog::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let writer_url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(run_with_log(
        Config {
            security: flags.clone(),
            ..Config::default()
        },
        log.clone(),
        listener,
        stop.clone(),
    ));
    crate::helpers::wait_ready(&writer_url).await;
    // The writer refuses a client without a key, in Confluent's shape.
    let resp = reqwest::get(format!("{writer_url}/subjects"))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error_code"], 40101, "{b}");

    // A follower with the same credentials: the client's key is checked there, and the write
    // reaches the writer with the cluster token (not the client's key).
    let state = AppState::with_leadership(
        Config::default(),
        log.clone(),
        Arc::new(Leadership::following("http://follower", &writer_url)),
        Arc::new(flags.load().unwrap()),
    )
    .unwrap();
    state.registry.load(CancellationToken::new()).await;
    let follower = router(state);
    let read = Cred::Basic("reader:read-key-0123456789");
    let (s, _, b) = call(
        &follower,
        Method::POST,
        "/subjects/s/versions",
        Some(schema()),
        read,
    )
    .await;
    assert_error(s, &b, 403, 40301);
    assert!(log.records().is_empty());
    let write = Cred::Basic("writer:write-key-0123456789");
    let (s, _, b) = call(
        &follower,
        Method::POST,
        "/subjects/s/versions",
        Some(schema()),
        write,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(log.records().len(), 1);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
