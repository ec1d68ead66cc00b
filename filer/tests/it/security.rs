//! The filer's guards through the real router: API keys on the file API, the cluster token
//! on `/__meta/`, open probes, and everything open with security off.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::security::{ApiKeys, CLUSTER_TOKEN_HEADER, Secret, Security};
use kelp_filer::store::{MemoryStore, MetaStore};
use kelp_filer::{AppState, Config};
use serde_json::json;

use crate::{Resp, TestFiler};

const READ_KEY: &str = "read-key-0123456789";
const WRITE_KEY: &str = "write-key-0123456789";
const CLUSTER_TOKEN: &str = "cluster-token-0123456789";

/// A filer with API keys and a cluster token (its master unreachable: metadata and empty
/// files only).
fn secured_filer() -> TestFiler {
    let security = Security {
        cluster_token: Some(Secret::new(CLUSTER_TOKEN)),
        api_keys: Some(ApiKeys::parse(&format!("read {READ_KEY}\nwrite {WRITE_KEY}\n")).unwrap()),
        ..Security::default()
    };
    let store = Arc::new(MemoryStore::new());
    let cfg = Config::for_test("data/unused", "127.0.0.1:1");
    let state = AppState::new(&cfg, store.clone(), Arc::new(security)).unwrap();
    TestFiler {
        router: kelp_filer::router(state),
        store,
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Cluster(&'a str),
}

async fn send(f: &TestFiler, method: Method, uri: &str, body: &str, cred: Cred<'_>) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    match cred {
        Cred::None => {}
        Cred::Bearer(key) => req = req.header("authorization", format!("Bearer {key}")),
        Cred::Cluster(token) => req = req.header(CLUSTER_TOKEN_HEADER, token),
    }
    if body.starts_with('{') {
        req = req.header("content-type", "application/json");
    }
    f.send(req.body(Body::from(body.to_owned())).unwrap()).await
}

#[tokio::test]
async fn test_security_file_api_needs_an_api_key_of_the_right_scope() {
    let f = secured_filer();
    // No key, and an unknown key: 401 with a challenge.
    let r = send(&f, Method::PUT, "/docs/a.txt", "", Cred::None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.code(), "api_key_required");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = send(
        &f,
        Method::GET,
        "/docs/",
        "",
        Cred::Bearer("not-a-key-0123456789"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "bad_api_key");
    // A read key cannot write, delete or rename.
    for (method, uri) in [
        (Method::PUT, "/docs/a.txt"),
        (Method::POST, "/docs/a.txt"),
        (Method::DELETE, "/docs/a.txt"),
        (Method::POST, "/docs/b.txt?mv.from=/docs/a.txt"),
    ] {
        let r = send(&f, method.clone(), uri, "", Cred::Bearer(READ_KEY)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(r.code(), "read_only_api_key");
    }
    assert!(f.store.get("/docs/a.txt").unwrap().is_none());
    // A write key writes; read and write keys read.
    let r = send(&f, Method::PUT, "/docs/a.txt", "", Cred::Bearer(WRITE_KEY)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    for key in [READ_KEY, WRITE_KEY] {
        let r = send(&f, Method::GET, "/docs/a.txt", "", Cred::Bearer(key)).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = send(&f, Method::HEAD, "/docs/a.txt", "", Cred::Bearer(key)).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = send(&f, Method::GET, "/docs/?pretty=y", "", Cred::Bearer(key)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The cluster token passes as a key of every scope; a wrong one does not.
    let r = send(
        &f,
        Method::DELETE,
        "/docs/a.txt",
        "",
        Cred::Cluster(CLUSTER_TOKEN),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = send(
        &f,
        Method::GET,
        "/docs/",
        "",
        Cred::Cluster("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn test_security_meta_api_needs_the_cluster_token() {
    let f = secured_filer();
    let entry = json!({"entry": {"full_path": "/m/e"}}).to_string();
    // Neither no credential nor an API key (even a write key) opens the metadata API.
    for cred in [Cred::None, Cred::Bearer(WRITE_KEY)] {
        let r = send(&f, Method::PUT, "/__meta/entry", &entry, cred).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        assert_eq!(r.code(), "cluster_token_required");
        let r = send(&f, Method::GET, "/__meta/list?dir=/", "", cred).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = send(
        &f,
        Method::GET,
        "/__meta/entry?path=/m/e",
        "",
        Cred::Cluster("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "bad_cluster_token");
    assert!(f.store.get("/m/e").unwrap().is_none());
    // With the token: every metadata call works.
    let ok = Cred::Cluster(CLUSTER_TOKEN);
    let r = send(&f, Method::PUT, "/__meta/entry", &entry, ok).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = send(&f, Method::GET, "/__meta/entry?path=/m/e", "", ok).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&f, Method::GET, "/__meta/list?dir=/m", "", ok).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(1));
    let r = send(&f, Method::DELETE, "/__meta/entry?path=/m/e", "", ok).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn test_security_probes_metrics_and_the_document_stay_open() {
    let f = secured_filer();
    for uri in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = send(&f, Method::GET, uri, "", Cred::None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn test_security_off_leaves_every_route_open() {
    let f = crate::filer();
    let r = send(&f, Method::PUT, "/docs/a.txt", "", Cred::None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(&f, Method::GET, "/docs/a.txt", "", Cred::None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        &f,
        Method::GET,
        "/__meta/entry?path=/docs/a.txt",
        "",
        Cred::None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // A credential nobody asked for is ignored.
    let r = send(
        &f,
        Method::GET,
        "/docs/a.txt",
        "",
        Cred::Bearer("whatever-0123456789"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
