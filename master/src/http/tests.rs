//! Router tests through `oneshot`: assign (replication, collections, count, full volumes), grow
//! (against fake volume servers on ephemeral ports) and heartbeats (register, update, a dead
//! server forgotten).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{Method, Request, StatusCode, header};
use common::client::HttpClient;
use common::client::volume::VolumeClient;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;
use crate::state::Sequencer;

/// A master over `dir` whose servers die after three `pulse`s.
pub(crate) fn state_with(dir: &std::path::Path, pulse: Duration, size_limit: u64) -> AppState {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let master = Master::new(
        Sequencer::load(dir).unwrap(),
        pulse,
        size_limit,
        common::api::master::Replication::default(),
        VolumeClient::new(HttpClient::new(Duration::from_secs(5)).with_attempts(1)),
        metrics,
    );
    AppState {
        master: Arc::new(master),
        registry: Arc::new(registry),
        addr: "127.0.0.1:1".into(),
    }
}

fn state(dir: &std::path::Path) -> AppState {
    state_with(dir, Duration::from_secs(60), 1 << 30)
}

/// Sends a request; answers the status, the JSON body (`Null` when not JSON) and the headers.
pub(crate) async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, headers)
}

fn vol(id: u32, collection: &str, replication: &str, size: u64) -> Value {
    json!({"id": id, "collection": collection, "replication": replication, "size": size,
        "file_count": 0, "delete_count": 0, "read_only": false, "max_file_key": 0})
}

async fn beat(app: &Router, url: &str, max_volumes: u32, volumes: Vec<Value>) -> StatusCode {
    let body =
        json!({"url": url, "public_url": url, "max_volumes": max_volumes, "volumes": volumes});
    send(app, Method::POST, "/heartbeat", Some(body)).await.0
}

/// A fake volume server on an ephemeral port recording the query of every allocation.
pub(crate) async fn fake_volume_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/admin/volume",
        axum::routing::post(move |RawQuery(q): RawQuery| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(q.unwrap_or_default());
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

fn vid_of(fid: &Value) -> u32 {
    fid.as_str()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn key_of(fid: &Value) -> u64 {
    let f: common::ids::FileId = fid.as_str().unwrap().parse().unwrap();
    f.key
}

#[tokio::test]
async fn test_openapi_matches_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let paths: Vec<&str> = routes().into_iter().map(|(p, _)| p).collect();
    if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &[]).await {
        panic!("master/src/http/openapi.json and the router disagree:\n{errors:#?}");
    }
}

#[tokio::test]
async fn test_assign_without_volume_servers_is_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, v, h) = send(&app, Method::GET, "/dir/assign", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["code"], "no_writable_volume");
    assert!(h.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn test_assign_rejects_bad_input_with_json_400() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    for (uri, code) in [
        ("/dir/assign?count=100001", "bad_count"),
        ("/dir/assign?collection=a%2Fb", "bad_collection"),
        ("/dir/assign?replication=9", "bad_replication"),
        ("/dir/assign?replication=003x", "bad_replication"),
        ("/dir/assign?count=abc", "bad_query"),
    ] {
        let (st, v, _) = send(&app, Method::GET, uri, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["code"], code, "{uri}: {v}");
    }
}

#[tokio::test]
async fn test_assign_uses_a_reported_volume_and_reserves_count_keys() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    assert_eq!(
        beat(&app, "a:1", 4, vec![vol(3, "", "000", 8)]).await,
        StatusCode::OK
    );
    let (st, first, _) = send(&app, Method::POST, "/dir/assign?count=5", None).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(vid_of(&first["fid"]), 3);
    assert_eq!(first["url"], "a:1");
    assert_eq!(first["publicUrl"], "a:1");
    assert_eq!(first["count"], 5);
    let (_, second, _) = send(&app, Method::GET, "/dir/assign", None).await;
    assert!(
        key_of(&second["fid"]) >= key_of(&first["fid"]) + 5,
        "keys of a count=5 assign reused: {first} then {second}"
    );
}

#[tokio::test]
async fn test_assign_grows_a_volume_in_the_asked_collection() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (server, calls) = fake_volume_server().await;
    beat(&app, &server, 4, vec![vol(1, "", "000", 8)]).await;
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?collection=pics", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let grown = vid_of(&v["fid"]);
    assert!(
        grown > 1,
        "the unnamed collection's volume 1 was used for pics"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![format!("volumeId={grown}&collection=pics&replication=000")]
    );
    // The grown volume is writable at once, before the server's next heartbeat.
    let (_, again, _) = send(&app, Method::GET, "/dir/assign?collection=pics", None).await;
    assert_eq!(vid_of(&again["fid"]), grown);
    assert_eq!(calls.lock().unwrap().len(), 1, "grew twice");
    let (st, l, _) = send(
        &app,
        Method::GET,
        &format!("/dir/lookup?volumeId={grown}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(l["locations"][0]["url"], server.as_str());
}

#[tokio::test]
async fn test_assign_replicated_grows_on_two_servers_and_needs_both() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, a_calls) = fake_volume_server().await;
    beat(&app, &a, 4, vec![]).await;
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?replication=001", None).await;
    assert_eq!(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "one server cannot hold 001: {v}"
    );
    assert!(a_calls.lock().unwrap().is_empty());
    let (b, b_calls) = fake_volume_server().await;
    beat(&app, &b, 4, vec![]).await;
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?replication=001", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let vid = vid_of(&v["fid"]);
    for calls in [&a_calls, &b_calls] {
        assert_eq!(
            *calls.lock().unwrap(),
            vec![format!("volumeId={vid}&collection=&replication=001")]
        );
    }
    let (_, l, _) = send(
        &app,
        Method::GET,
        &format!("/dir/lookup?volumeId={vid}"),
        None,
    )
    .await;
    assert_eq!(l["locations"].as_array().unwrap().len(), 2, "{l}");
}

#[tokio::test]
async fn test_assign_skips_full_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state_with(dir.path(), Duration::from_secs(60), 1000));
    let (server, calls) = fake_volume_server().await;
    beat(&app, &server, 4, vec![vol(1, "", "000", 1000)]).await;
    let (st, v, _) = send(&app, Method::GET, "/dir/assign", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_ne!(vid_of(&v["fid"]), 1, "full volume 1 was assigned to");
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn test_grow_failure_is_503_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    // Nothing listens there: the allocation fails.
    beat(&app, "127.0.0.1:1", 4, vec![]).await;
    let (st, v, h) = send(&app, Method::GET, "/dir/assign", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "grow_failed");
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:1"), "{v}");
    assert!(h.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn test_heartbeat_registers_updates_and_raises_counters() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, v, _) = send(
        &app,
        Method::POST,
        "/heartbeat",
        Some(json!({"url": "", "public_url": "", "max_volumes": 1, "volumes": []})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "bad_heartbeat");
    let (st, v, _) = send(&app, Method::POST, "/heartbeat", Some(json!({"url": 1}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    assert_eq!(
        beat(&app, "a:1", 4, vec![vol(7, "", "000", 8)]).await,
        StatusCode::OK
    );
    let (_, c, _) = send(&app, Method::GET, "/cluster/status", None).await;
    assert_eq!(c["alive_nodes"], 1);
    assert_eq!(c["IsLeader"], true);
    // The update replaces the server's volumes: 7 is gone, 8 is there.
    let mut v8 = vol(8, "", "000", 8);
    v8["max_file_key"] = json!(500_000);
    beat(&app, "a:1", 4, vec![v8]).await;
    let (st, _, _) = send(&app, Method::GET, "/dir/lookup?volumeId=7", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, l, _) = send(&app, Method::GET, "/dir/lookup?fileId=8,01637037d6", None).await;
    assert_eq!(st, StatusCode::OK, "{l}");
    assert_eq!(l["volumeOrFileId"], "8,01637037d6");
    let (_, s, _) = send(&app, Method::GET, "/dir/status", None).await;
    assert_eq!(s["max_volume_id"], 8);
    assert!(s["next_file_key"].as_u64().unwrap() > 500_000, "{s}");
    assert_eq!(s["nodes"][0]["volumes"][0]["id"], 8);
    let (_, a, _) = send(&app, Method::GET, "/dir/assign", None).await;
    assert!(
        key_of(&a["fid"]) > 500_000,
        "a reported key was reissued: {a}"
    );
}

#[tokio::test]
async fn test_heartbeat_dead_server_is_forgotten_for_lookup_and_assign() {
    let dir = tempfile::tempdir().unwrap();
    // Dead after 3 ms of silence.
    let app = router(state_with(dir.path(), Duration::from_millis(1), 1 << 30));
    beat(&app, "a:1", 4, vec![vol(1, "", "000", 8)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, _) = send(&app, Method::GET, "/dir/lookup?volumeId=1", None).await;
        if st == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a silent server was never declared dead"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (st, v, _) = send(&app, Method::GET, "/dir/assign", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let (_, c, _) = send(&app, Method::GET, "/cluster/status", None).await;
    assert_eq!(
        (c["alive_nodes"].as_u64(), c["known_nodes"].as_u64()),
        (Some(0), Some(1))
    );
    let (_, r, _) = send(&app, Method::GET, "/readyz", None).await;
    assert_eq!(r["alive_volume_servers"], 0);
    // A new beat brings it back.
    beat(&app, "a:1", 4, vec![vol(1, "", "000", 8)]).await;
    let (st, _, _) = send(&app, Method::GET, "/dir/lookup?volumeId=1", None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn test_lookup_rejects_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    for (uri, st, code) in [
        ("/dir/lookup", StatusCode::BAD_REQUEST, "missing_volume_id"),
        (
            "/dir/lookup?volumeId=abc",
            StatusCode::BAD_REQUEST,
            "bad_volume_id",
        ),
        ("/dir/lookup?fileId=zz", StatusCode::BAD_REQUEST, "bad_fid"),
        (
            "/dir/lookup?volumeId=9",
            StatusCode::NOT_FOUND,
            "volume_not_found",
        ),
    ] {
        let (got, v, _) = send(&app, Method::GET, uri, None).await;
        assert_eq!((got, v["code"].as_str()), (st, Some(code)), "{uri}: {v}");
    }
}
