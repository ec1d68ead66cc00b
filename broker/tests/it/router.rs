//! Bad input through the real router: every rejection is a 4xx JSON error.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::api::broker::{BATCH_CONTENT_TYPE, BatchRecord, TopicInfo, encode_batch};
use common::http::ErrorBody;
use http_body_util::BodyExt;
use kelp_broker::http::router;
use tower::ServiceExt;

use crate::helpers::{broker, cfg};

async fn app() -> Router {
    let (b, _store) = broker(2, cfg()).await;
    router(Arc::clone(&b), Arc::default())
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = ct {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

async fn expect_error(
    app: &Router,
    method: &str,
    uri: &str,
    ct: Option<&str>,
    body: &[u8],
    status: StatusCode,
) -> ErrorBody {
    let (got, bytes) = call(app, method, uri, ct, body.to_vec()).await;
    assert_eq!(
        got,
        status,
        "{method} {uri}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not a JSON error ({e})"))
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn test_router_rejects_bad_input_with_json_errors() {
    let app = app().await;
    let bad = StatusCode::BAD_REQUEST;
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        b"{not json",
        bad,
    )
    .await;
    assert_eq!(e.code, "bad_json");
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        br#"{"records":[]}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        br#"{"records":[{"key":"k"}]}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        br#"{"records":[{"value_b64":"!!"}]}"#,
        bad,
    )
    .await;
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        br#"{"records":[{"value":"x","partition":9}]}"#,
        bad,
    )
    .await;
    assert_eq!(e.code, "unknown_partition");
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        br#"{"records":[{"value":"x","partition":-1}]}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish?acks=maybe",
        JSON,
        br#"{"records":[{"value":"x"}]}"#,
        bad,
    )
    .await;
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        Some(BATCH_CONTENT_TYPE),
        b"KPB1\xff\xff\xff\xff",
        bad,
    )
    .await;
    assert_eq!(e.code, "bad_batch");
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/no/publish",
        JSON,
        br#"{"records":[{"value":"x"}]}"#,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(e.error.contains("ns/no"), "{}", e.error);
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/b%20d/publish",
        JSON,
        br#"{"records":[{"value":"x"}]}"#,
        bad,
    )
    .await;
    assert_eq!(e.code, "bad_name");
    expect_error(
        &app,
        "POST",
        "/topics/ns/..",
        JSON,
        br#"{"partitions":1}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/new",
        JSON,
        br#"{"partitions":0}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/new",
        JSON,
        br#"{"partitions":"x"}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "POST",
        "/topics/ns/t",
        JSON,
        br#"{"partitions":3}"#,
        StatusCode::CONFLICT,
    )
    .await;
    expect_error(
        &app,
        "GET",
        "/topics/ns/missing",
        None,
        b"",
        StatusCode::NOT_FOUND,
    )
    .await;

    let rec = "/topics/ns/t/partitions";
    for q in [
        "offset=-1",
        "offset=abc",
        "offset=0&limit=-3",
        "",
        "offset=0&isolation=dirty",
        "offset=99999999999999999999999",
    ] {
        expect_error(&app, "GET", &format!("{rec}/0/records?{q}"), None, b"", bad).await;
    }
    expect_error(
        &app,
        "GET",
        &format!("{rec}/x/records?offset=0"),
        None,
        b"",
        bad,
    )
    .await;
    expect_error(
        &app,
        "GET",
        &format!("{rec}/-1/records?offset=0"),
        None,
        b"",
        bad,
    )
    .await;
    expect_error(
        &app,
        "GET",
        &format!("{rec}/7/records?offset=0"),
        None,
        b"",
        StatusCode::NOT_FOUND,
    )
    .await;
    let e = expect_error(
        &app,
        "GET",
        &format!("{rec}/0/records?offset=5"),
        None,
        b"",
        StatusCode::RANGE_NOT_SATISFIABLE,
    )
    .await;
    assert_eq!(
        e.detail,
        Some(serde_json::json!({"log_start_offset": 0, "log_end_offset": 0}))
    );

    expect_error(
        &app,
        "PUT",
        "/groups/g/offsets",
        JSON,
        br#"{"topic":"ns/t","partition":0,"offset":-5}"#,
        bad,
    )
    .await;
    expect_error(
        &app,
        "PUT",
        "/groups/g/offsets",
        JSON,
        br#"{"topic":"nst","partition":0,"offset":5}"#,
        bad,
    )
    .await;
    expect_error(&app, "GET", "/groups/g/offsets", None, b"", bad).await;
    expect_error(&app, "GET", "/nope", None, b"", StatusCode::NOT_FOUND).await;
    expect_error(
        &app,
        "DELETE",
        "/topics",
        None,
        b"",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

#[tokio::test]
async fn test_router_publish_json_and_binary_then_fetch() {
    let app = app().await;
    let (s, body) = call(
        &app,
        "POST",
        "/topics/ns/new",
        JSON,
        br#"{"partitions":1}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let info: TopicInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(info.partitions.len(), 1);
    let (s, _) = call(
        &app,
        "POST",
        "/topics/ns/new",
        JSON,
        br#"{"partitions":1}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, body) = call(
        &app,
        "POST",
        "/topics/ns/new/publish",
        JSON,
        br#"{"records":[{"key":"k","value":"hello","headers":{"a":"b"}},{"value_b64":"AP8="}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"offsets":[{"partition":0,"offset":0},{"partition":0,"offset":1}]})
    );

    let mut batch = Vec::new();
    encode_batch(
        &[BatchRecord {
            partition: Some(0),
            key: None,
            value: b"bin",
            headers: vec![],
        }],
        &mut batch,
    );
    let (s, body) = call(
        &app,
        "POST",
        "/topics/ns/new/publish?acks=buffered",
        Some(BATCH_CONTENT_TYPE),
        batch,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let (s, body) = call(&app, "POST", "/admin/flush", None, Vec::new()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (s, body) = call(
        &app,
        "GET",
        "/topics/ns/new/partitions/0/records?offset=0",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["next_offset"], 3);
    assert_eq!(v["durable_offset"], 3);
    assert_eq!(v["log_end_offset"], 3);
    assert_eq!(v["records"][0]["key"], "k");
    assert_eq!(v["records"][0]["value"], "hello");
    assert_eq!(v["records"][0]["headers"], serde_json::json!({"a":"b"}));
    assert_eq!(v["records"][1]["value"], serde_json::Value::Null);
    assert_eq!(v["records"][1]["value_b64"], "AP8=");
    assert_eq!(v["records"][2]["value"], "bin");

    let (s, body) = call(&app, "GET", "/topics", None, Vec::new()).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["topics"].as_array().unwrap().len(), 2);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _) = call(&app, "GET", path, None, Vec::new()).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (_, body) = call(&app, "GET", "/metrics", None, Vec::new()).await;
    let text = String::from_utf8(body).unwrap();
    for m in [
        "kelp_broker_flushes_total",
        "kelp_broker_flush_duration_seconds",
        "kelp_broker_buffered_bytes",
        "kelp_broker_durable_lag_records",
    ] {
        assert!(text.contains(m), "{m} missing from metrics");
    }
}

#[tokio::test]
async fn test_router_record_too_large_is_413() {
    let c = kelp_broker::Config {
        max_record_bytes: 64,
        max_batch_bytes: 1024,
        ..cfg()
    };
    let (b, _store) = broker(1, c).await;
    let app = router(b, Arc::default());
    let body = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(100));
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        body.as_bytes(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(e.code, "payload_too_large");
    let body = format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(5 << 20));
    expect_error(
        &app,
        "POST",
        "/topics/ns/t/publish",
        JSON,
        body.as_bytes(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
}

#[tokio::test]
async fn test_router_partition_limit_is_409() {
    let c = kelp_broker::Config {
        max_partitions: 5,
        ..cfg()
    };
    // The helper's broker already holds topic ns/t with 2 partitions.
    let (b, _store) = broker(2, c).await;
    let app = router(b, Arc::default());
    let (st, body) = call(
        &app,
        "POST",
        "/topics/ns/three",
        JSON,
        br#"{"partitions":3}"#.to_vec(),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let e = expect_error(
        &app,
        "POST",
        "/topics/ns/one-more",
        JSON,
        br#"{"partitions":1}"#,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(e.code, "partition_limit");
}
