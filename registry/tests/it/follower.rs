//! Two registries on one log: the writer serves on a socket, a follower forwards its writes
//! there, answers with the writer's answer (errors included) and reads its own writes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use kelp_registry::leader::Leadership;
use kelp_registry::store::mem::MemLog;
use kelp_registry::{AppState, Config, router, run_with_log};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Reg, assert_error, avro_record};

#[tokio::test]
async fn test_follower_forwards_writes_and_reads_its_own_writes() {
    let log = Arc::new(MemLog::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let writer_url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(run_with_log(
        Config::default(),
        log.clone(),
        listener,
        stop.clone(),
    ));
    let state = AppState::with_leadership(
        Config::default(),
        log.clone(),
        Arc::new(Leadership::following("http://follower", &writer_url)),
        Arc::default(),
    )
    .unwrap();
    state.registry.load(CancellationToken::new()).await;
    let follower = Reg {
        app: router(state),
        log: log.clone(),
    };
    // The writer becomes ready once it has replayed the (empty) log.
    crate::helpers::wait_ready(&writer_url).await;

    let id = follower
        .register_ok("s", &avro_record("R", &["a"], &[]), None)
        .await;
    // Read back at once from the follower, and from the log.
    let (s, b) = follower
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(log.records().len(), 1);
    // The writer's errors come back as they are.
    let (s, b) = follower
        .register("s", &avro_record("R", &["a", "b"], &[]), None)
        .await;
    assert_error(s, &b, 409, 409);
    let (s, b) = follower.register("s", "{\"type\":\"nope\"}", None).await;
    assert_error(s, &b, 422, 42201);
    let (s, b) = follower
        .call(
            Method::PUT,
            "/config/s",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"compatibility": "NONE"})));
    let (_, b) = follower.call(Method::GET, "/config/s", None).await;
    assert_eq!(b, json!({"compatibilityLevel": "NONE"}));
    let (s, b) = follower.call(Method::DELETE, "/subjects/s", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!([1])));
    let (s, b) = follower
        .call(Method::GET, "/subjects/s/versions", None)
        .await;
    assert_error(s, &b, 404, 40401);

    // Without a reachable writer, a write is a 503 naming the forwarding failure.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (s, b) = follower.register("t", "\"int\"", None).await;
    assert_error(s, &b, 503, 50003);
    // Reads still work on the follower.
    let (s, _) = follower
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn test_instance_without_the_lease_refuses_writes_with_50004() {
    let log = Arc::new(MemLog::new());
    let state = AppState::with_leadership(
        Config::default(),
        log.clone(),
        Arc::new(Leadership::contender("http://me")),
        Arc::default(),
    )
    .unwrap();
    state.registry.load(CancellationToken::new()).await;
    let r = Reg {
        app: router(state),
        log,
    };
    let (s, b) = r.register("s", "\"int\"", None).await;
    assert_error(s, &b, 503, 50004);
    let (s, _) = r.call(Method::GET, "/subjects", None).await;
    assert_eq!(s, StatusCode::OK);
}
