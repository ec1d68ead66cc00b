//! A registry router over an in-memory log, and a small client for it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use kelp_registry::store::mem::MemLog;
use kelp_registry::{AppState, Config, router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The registry's content type.
pub const CT: &str = "application/vnd.schemaregistry.v1+json";

/// A loaded registry over `log`.
pub struct Reg {
    /// The router.
    pub app: Router,
    /// Its log.
    pub log: Arc<MemLog>,
}

impl Reg {
    /// A registry over a fresh log.
    pub async fn new() -> Self {
        Self::over(Arc::new(MemLog::new())).await
    }

    /// A registry over `log`, loaded (the index rebuilt from it).
    pub async fn over(log: Arc<MemLog>) -> Self {
        let cfg = Config {
            max_body_bytes: 64 << 10,
            ..Config::default()
        };
        let state = AppState::new(cfg, log.clone(), Arc::default()).unwrap();
        state.registry.load(CancellationToken::new()).await;
        Self {
            app: router(state),
            log,
        }
    }

    /// Sends a request; returns the status and the JSON body (`null` when not JSON).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, uri, Some(CT), body.map(String::into_bytes))
            .await
    }

    /// Sends a request with a given content type and raw body.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type
            && body.is_some()
        {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Registers `schema` (of `schema_type`, Avro when `None`) under `subject`.
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "schema": schema });
        if let Some(t) = schema_type {
            body["schemaType"] = json!(t);
        }
        self.call(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(body),
        )
        .await
    }

    /// Registers and returns the id, failing the test otherwise.
    pub async fn register_ok(&self, subject: &str, schema: &str, schema_type: Option<&str>) -> u64 {
        let (s, b) = self.register(subject, schema, schema_type).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["id"].as_u64().unwrap()
    }
}

/// An Avro record `name` with `int` fields `fields`, and optional string fields with defaults.
pub fn avro_record(name: &str, fields: &[&str], with_default: &[&str]) -> String {
    let mut fs: Vec<Value> = fields
        .iter()
        .map(|f| json!({"name": f, "type": "int"}))
        .collect();
    fs.extend(
        with_default
            .iter()
            .map(|f| json!({"name": f, "type": "string", "default": ""})),
    );
    json!({"type": "record", "name": name, "fields": fs}).to_string()
}

/// Asserts a Confluent error body with `code`.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, code: u64) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error_code"].as_u64(), Some(code), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Waits (10 s at most) until the registry at `url` answers `/readyz` over a real socket.
pub async fn wait_ready(url: &str) {
    // reqwest is built without a default TLS provider: install Kelp's (ring).
    common::tls::install_default_provider();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reqwest::get(format!("{url}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "{url} never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
