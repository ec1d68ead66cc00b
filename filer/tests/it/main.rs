//! The filer's integration tests: the router through `oneshot` with the in-memory store,
//! `run()` on `127.0.0.1:0` with RocksDB, span parentage, and two filers sharing one etcd.

mod chunked;
mod router;
mod run;
mod security;
mod shared;
mod spans;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use kelp_filer::store::MemoryStore;
use kelp_filer::{AppState, Config};
use tower::ServiceExt;

/// A router and the in-memory store behind it.
pub struct TestFiler {
    /// The filer's router.
    pub router: Router,
    /// Its store, for white-box checks.
    pub store: Arc<MemoryStore>,
}

/// A router over a fresh in-memory store; the master address is unreachable, so only
/// metadata operations and empty files work.
pub fn filer() -> TestFiler {
    let store = Arc::new(MemoryStore::new());
    let cfg = Config::for_test("data/unused", "127.0.0.1:1");
    let state = AppState::new(&cfg, store.clone(), Arc::default()).unwrap();
    TestFiler {
        router: kelp_filer::router(state),
        store,
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl TestFiler {
    /// Sends a request through the router.
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends a request with a raw body.
    pub async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Resp {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    /// Sends a JSON body.
    pub async fn json(&self, method: Method, uri: &str, value: serde_json::Value) -> Resp {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap(),
        )
        .await
    }
}
