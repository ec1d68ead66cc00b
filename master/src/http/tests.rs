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

/// A master over `dir` whose servers die after three `pulse`s, and its metrics registry.
pub(crate) fn test_master(
    dir: &std::path::Path,
    pulse: Duration,
    size_limit: u64,
) -> (Master, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let master = Master::new(
        Sequencer::load(dir).unwrap(),
        pulse,
        size_limit,
        common::api::master::Replication::default(),
        VolumeClient::new(HttpClient::new(Duration::from_secs(5)).with_attempts(1)),
        crate::vacuum::VacuumClient::new(HttpClient::new(Duration::from_secs(5)).with_attempts(1)),
        metrics,
    );
    (master, registry)
}

/// The routes' state over [`test_master`].
pub(crate) fn state_with(dir: &std::path::Path, pulse: Duration, size_limit: u64) -> AppState {
    let (master, registry) = test_master(dir, pulse, size_limit);
    AppState {
        master: Arc::new(master),
        registry: Arc::new(registry),
        garbage_threshold: 0.3,
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

/// A fake volume server on an ephemeral port recording the query of every allocation,
/// `write <fid>?<query>` for every blob write and `delete <query>` for every volume deletion.
pub(crate) async fn fake_volume_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let written = calls.clone();
    let deleted = calls.clone();
    let app = axum::Router::new()
        .route(
            "/admin/volume",
            axum::routing::post(move |RawQuery(q): RawQuery| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(q.unwrap_or_default());
                    axum::Json(json!({}))
                }
            })
            .delete(move |RawQuery(q): RawQuery| {
                let deleted = deleted.clone();
                async move {
                    // Volume 100 is already gone here, 101 is being vacuumed.
                    let q = q.unwrap_or_default();
                    deleted.lock().unwrap().push(format!("delete {q}"));
                    let (status, code) = match q.as_str() {
                        "volumeId=100" => (StatusCode::NOT_FOUND, "volume_not_found"),
                        "volumeId=101" => (StatusCode::CONFLICT, "vacuum_in_progress"),
                        _ => return StatusCode::NO_CONTENT.into_response(),
                    };
                    (status, axum::Json(json!({"error": code, "code": code}))).into_response()
                }
            }),
        )
        .route(
            "/{fid}",
            axum::routing::post(
                move |axum::extract::Path(fid): axum::extract::Path<String>,
                      RawQuery(q): RawQuery,
                      body: axum::body::Bytes| {
                    let written = written.clone();
                    async move {
                        // Volumes 100 and up are refused: 100 is not here, 101 is full for this file.
                        let vid: u32 = fid.split(',').next().unwrap().parse().unwrap();
                        if vid >= 100 {
                            let (status, code) = match vid {
                                100 => (StatusCode::NOT_FOUND, "volume_not_found"),
                                _ => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                            };
                            let body =
                                json!({"error": format!("volume {vid}: {code}"), "code": code});
                            return (status, axum::Json(body));
                        }
                        let q = q.unwrap_or_default();
                        written.lock().unwrap().push(format!("write {fid}?{q}"));
                        let name = q.strip_prefix("name=").unwrap_or_default().to_owned();
                        (
                            StatusCode::CREATED,
                            axum::Json(
                                json!({"name": name, "size": body.len(), "eTag": "0a0b0c0d"}),
                            ),
                        )
                    }
                },
            ),
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
    let paths: Vec<&str> = routes().into_iter().map(|(p, _, _)| p).collect();
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
    // As SeaweedFS answers: the volume id, also for a file id.
    assert_eq!(l["volumeOrFileId"], "8");
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

#[tokio::test]
async fn test_assign_count_zero_means_one_and_ttl_is_refused_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    beat(&app, "a:1", 4, vec![vol(1, "", "000", 8)]).await;
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?count=0", None).await;
    assert_eq!((st, v["count"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?ttl=", None).await;
    assert_eq!(st, StatusCode::OK, "an empty ttl is no ttl: {v}");
    let (st, v, _) = send(&app, Method::GET, "/dir/assign?ttl=3m", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "ttl_unsupported");
    assert!(v["error"].as_str().unwrap().contains("ttl \"3m\""), "{v}");
}

#[tokio::test]
async fn test_assign_accepts_seaweedfs_parameters_and_honours_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, a_calls) = fake_volume_server().await;
    let (b, _) = fake_volume_server().await;
    beat(&app, &a, 8, vec![]).await;
    beat(&app, &b, 8, vec![vol(1, "", "000", 8)]).await;
    // Kelp's one data center, rack and disk type, ignored options, and two volumes grown.
    let uri = format!(
        "/dir/assign?collection=c&dataCenter=DefaultDataCenter&rack=DefaultRack&diskType=hdd&preallocate=1024&memoryMapMaxSizeMb=0&writableVolumeCount=2&dataNode={a}"
    );
    let (st, v, _) = send(&app, Method::GET, &uri, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["url"], a.as_str(), "dataNode not honoured: {v}");
    assert_eq!(
        a_calls.lock().unwrap().len(),
        2,
        "writableVolumeCount=2 grew {:?}",
        a_calls.lock().unwrap()
    );
    // dataNode picks among existing volumes too.
    let (_, v, _) = send(
        &app,
        Method::GET,
        &format!("/dir/assign?dataNode={b}"),
        None,
    )
    .await;
    assert_eq!(
        (vid_of(&v["fid"]), v["url"].as_str()),
        (1, Some(b.as_str())),
        "{v}"
    );
    for (uri, code) in [
        ("/dir/assign?dataCenter=dc1", "unknown_data_center"),
        ("/dir/assign?rack=r9", "unknown_rack"),
        ("/dir/assign?diskType=ssd", "unsupported_disk_type"),
        (
            "/dir/assign?writableVolumeCount=1000",
            "bad_writable_volume_count",
        ),
        ("/dir/assign?unknownParameter=1", "bad_query"),
    ] {
        let (st, v, _) = send(&app, Method::GET, uri, None).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}: {v}"
        );
    }
    // A named server that is unknown: nothing to grow on.
    let (st, v, _) = send(
        &app,
        Method::GET,
        "/dir/assign?dataNode=nowhere:1&collection=z",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn test_lookup_honours_collection_and_pretty() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    beat(&app, "a:1", 4, vec![vol(2, "pics", "000", 8)]).await;
    let (st, _, _) = send(
        &app,
        Method::GET,
        "/dir/lookup?volumeId=2&collection=docs",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let req = Request::get("/dir/lookup?volumeId=2&collection=pics&read=yes&pretty=y")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("\n  \"volumeOrFileId\": \"2\""),
        "not pretty: {text}"
    );
}

#[tokio::test]
async fn test_vol_grow_grows_count_volumes_or_refuses_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, calls) = fake_volume_server().await;
    beat(&app, &a, 3, vec![]).await;
    let (st, v, _) = send(&app, Method::POST, "/vol/grow?count=2&collection=c2", None).await;
    assert_eq!(
        (st, v.clone()),
        (StatusCode::OK, json!({"count": 2})),
        "{v}"
    );
    let grown = calls.lock().unwrap().clone();
    assert_eq!(grown.len(), 2);
    assert!(
        grown.iter().all(|q| q.contains("collection=c2")),
        "{grown:?}"
    );
    let (st, v, _) = send(&app, Method::GET, "/vol/grow?count=2", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "one slot left: {v}");
    assert_eq!(v["code"], "not_enough_free_slots");
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "refused growth allocated anyway"
    );
    let (st, v, _) = send(&app, Method::GET, "/vol/grow?count=1&replication=001", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    for (uri, code) in [
        ("/vol/grow", "missing_count"),
        ("/vol/grow?count=0", "bad_count"),
        ("/vol/grow?count=abc", "bad_query"),
        ("/vol/grow?count=1&ttl=1d", "ttl_unsupported"),
    ] {
        let (st, v, _) = send(&app, Method::GET, uri, None).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}: {v}"
        );
    }
}

#[tokio::test]
async fn test_status_routes_answer_seaweedfs_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let mut v2 = vol(2, "", "001", 100);
    v2["file_count"] = json!(3);
    v2["deleted_bytes"] = json!(40);
    beat(
        &app,
        "a:1",
        8,
        vec![vol(1, "", "000", 8), v2.clone(), vol(4, "pics", "000", 8)],
    )
    .await;
    beat(&app, "b:1", 8, vec![v2]).await;
    let (st, s, _) = send(&app, Method::GET, "/dir/status", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(s["Version"].as_str().unwrap().starts_with("kelp "), "{s}");
    let t = &s["Topology"];
    assert_eq!(
        (t["Max"].as_u64(), t["Free"].as_u64()),
        (Some(16), Some(12)),
        "{t}"
    );
    let node = &t["DataCenters"][0]["Racks"][0]["DataNodes"][0];
    assert_eq!(t["DataCenters"][0]["Id"], "DefaultDataCenter");
    assert_eq!(t["DataCenters"][0]["Racks"][0]["Id"], "DefaultRack");
    assert_eq!(node["Url"], "a:1");
    assert_eq!(node["VolumeIds"], " 1-2 4");
    assert_eq!(node["Volumes"], 3);
    let layouts = t["Layouts"].as_array().unwrap();
    assert!(layouts.contains(&json!({"replication": "001", "ttl": "", "writables": [2], "collection": "", "diskType": "hdd"})), "{layouts:?}");
    assert_eq!(
        s["nodes"].as_array().unwrap().len(),
        2,
        "Kelp's own fields are kept"
    );
    assert_eq!(s["max_volume_id"], 4);

    let (st, v, _) = send(&app, Method::GET, "/vol/status", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["Version"].is_string());
    let servers = &v["Volumes"]["DataCenters"]["DefaultDataCenter"]["DefaultRack"];
    let a = servers["a:1"].as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["Id"], 1);
    assert_eq!(a[0]["ReplicaPlacement"], json!({}));
    assert_eq!(a[1]["ReplicaPlacement"], json!({"node": 1}));
    assert_eq!(a[1]["FileCount"], 3);
    assert_eq!(a[1]["DeletedByteCount"], 40, "as the heartbeat reported it");
    assert_eq!(a[0]["DeletedByteCount"], 0, "a heartbeat without it is 0");
    assert_eq!(a[2]["Collection"], "pics");
    assert_eq!(a[0]["Ttl"], json!({"Count": 0, "Unit": 0}));
    assert_eq!(
        (v["Volumes"]["Max"].as_u64(), v["Volumes"]["Free"].as_u64()),
        (Some(16), Some(12))
    );
}

fn multipart(part_name: &str, file_name: &str, data: &str) -> Body {
    Body::from(format!(
        "--XX\r\nContent-Disposition: form-data; name=\"{part_name}\"; filename=\"{file_name}\"\r\nContent-Type: text/plain\r\n\r\n{data}\r\n--XX--\r\n"
    ))
}

#[tokio::test]
async fn test_submit_assigns_writes_and_answers_seaweedfs_shape() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, calls) = fake_volume_server().await;
    beat(&app, &a, 4, vec![vol(1, "", "000", 8)]).await;
    let req = Request::post("/submit")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XX")
        .body(multipart("File", "f.txt", "hello"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let st = resp.status();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let fid = v["fid"].as_str().unwrap();
    assert_eq!(vid_of(&v["fid"]), 1);
    assert_eq!(v["fileName"], "f.txt");
    assert_eq!(v["fileUrl"], format!("{a}/{fid}"));
    assert_eq!(v["size"], 5);
    assert_eq!(v["eTag"], "0a0b0c0d");
    assert_eq!(
        *calls.lock().unwrap(),
        vec![format!("write {fid}?name=f.txt")]
    );

    let (st, v, _) = send(&app, Method::POST, "/submit", None).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_multipart")),
        "{v}"
    );
    let req = Request::post("/submit?ttl=1d")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XX")
        .body(multipart("file", "f.txt", "x"))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let req = Request::post("/submit")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XX")
        .body(Body::from(
            "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XX--\r\n",
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no file part");
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn test_submit_answers_503_when_the_volume_server_refuses_the_placement() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, _calls) = fake_volume_server().await;
    // The topology says `a` holds 100 (a heartbeat behind); 101 refuses the file as too large.
    beat(
        &app,
        &a,
        4,
        vec![vol(100, "gone", "000", 8), vol(101, "big", "000", 8)],
    )
    .await;
    for (collection, want) in [
        ("gone", (StatusCode::SERVICE_UNAVAILABLE, "upload_failed")),
        ("big", (StatusCode::PAYLOAD_TOO_LARGE, "too_large")),
    ] {
        let req = Request::post(format!("/submit?collection={collection}"))
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XX")
            .body(multipart("file", "f.txt", "hello"))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let st = resp.status();
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        let v: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!((st, v["code"].as_str().unwrap()), want, "{collection}: {v}");
        if st == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry.is_some(), "a 503 says when to retry");
            assert!(
                v["error"].as_str().unwrap().contains("volume_not_found"),
                "{v}"
            );
        }
    }
}

/// A fake volume server answering `POST /admin/vacuum` with one compacted volume, counting
/// calls and the most calls ever in flight at once.
async fn fake_vacuum_server(vid: u32) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/admin/vacuum",
        axum::routing::post(move |RawQuery(q): RawQuery| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(q.unwrap_or_default());
                axum::Json(json!({"compacted": [{"volume": vid, "before": 1000, "after": 300}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

#[tokio::test]
async fn test_vol_vacuum_asks_every_live_server_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, a_calls) = fake_vacuum_server(1).await;
    let (b, b_calls) = fake_vacuum_server(2).await;
    beat(&app, &a, 4, vec![vol(1, "", "000", 1000)]).await;
    beat(&app, &b, 4, vec![vol(2, "", "000", 1000)]).await;
    // Nothing listens there: its vacuum fails and is reported.
    beat(&app, "127.0.0.1:1", 4, vec![]).await;
    let (st, v, _) = send(&app, Method::POST, "/vol/vacuum?garbageThreshold=0.4", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(*a_calls.lock().unwrap(), vec!["garbageThreshold=0.4"]);
    assert_eq!(*b_calls.lock().unwrap(), vec!["garbageThreshold=0.4"]);
    let mut compacted = v["compacted"].as_array().unwrap().clone();
    compacted.sort_by_key(|c| c["volume"].as_u64());
    assert_eq!(
        compacted,
        vec![
            json!({"server": a, "volume": 1, "before": 1000, "after": 300}),
            json!({"server": b, "volume": 2, "before": 1000, "after": 300}),
        ]
    );
    assert_eq!(v["failed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failed"][0]["server"], "127.0.0.1:1");
    assert_eq!(v["garbageThreshold"], 0.4);
    assert!(v["Topology"].is_object() && v["Version"].is_string(), "{v}");
    // Default threshold; bad ones refused.
    let (st, v, _) = send(&app, Method::GET, "/vol/vacuum", None).await;
    assert_eq!(
        (st, v["garbageThreshold"].as_f64()),
        (StatusCode::OK, Some(0.3))
    );
    for uri in [
        "/vol/vacuum?garbageThreshold=1.5",
        "/vol/vacuum?garbageThreshold=-1",
        "/vol/vacuum?garbageThreshold=abc",
    ] {
        let (st, v, _) = send(&app, Method::GET, uri, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
    }
    assert_eq!(
        a_calls.lock().unwrap().len(),
        2,
        "a refused vacuum reached a server"
    );
}

#[tokio::test]
async fn test_vacuum_schedule_runs_rounds_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let app = router(st.clone());
    let (a, calls) = fake_vacuum_server(1).await;
    beat(&app, &a, 4, vec![]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(crate::vacuum::schedule(
        st.master.clone(),
        Duration::from_millis(10),
        0.5,
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the schedule never ran two rounds"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .all(|q| q == "garbageThreshold=0.5")
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the schedule did not stop when cancelled")
        .unwrap();
}

#[tokio::test]
async fn test_col_delete_deletes_every_copy_and_forgets_the_volumes() {
    // Issue 17: SeaweedFS's /col/delete.
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, a_calls) = fake_volume_server().await;
    let (b, b_calls) = fake_volume_server().await;
    let vols_a = vec![
        vol(1, "pics", "001", 8),
        vol(2, "pics", "000", 8),
        vol(3, "", "000", 8),
        vol(4, "docs", "000", 8),
    ];
    assert_eq!(beat(&app, &a, 10, vols_a).await, StatusCode::OK);
    assert_eq!(
        beat(&app, &b, 10, vec![vol(1, "pics", "001", 8)]).await,
        StatusCode::OK
    );
    let (st, body, _) = send(&app, Method::GET, "/col/delete?collection=pics", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let mut on_a: Vec<String> = a_calls.lock().unwrap().clone();
    on_a.sort();
    assert_eq!(on_a, vec!["delete volumeId=1", "delete volumeId=2"]);
    assert_eq!(*b_calls.lock().unwrap(), vec!["delete volumeId=1"]);
    for (vid, found) in [(1, false), (2, false), (3, true), (4, true)] {
        let (st, _, _) = send(
            &app,
            Method::GET,
            &format!("/dir/lookup?volumeId={vid}"),
            None,
        )
        .await;
        let want = if found {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(st, want, "volume {vid}");
    }
    // As SeaweedFS: a collection that does not exist (any more) is a 400.
    let (st, body, _) = send(&app, Method::POST, "/col/delete?collection=pics", None).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("collection_not_found"))
    );
    assert_eq!(body["error"], "collection pics does not exist");
    for (q, code) in [
        ("", "default_collection"),
        ("?collection=", "default_collection"),
        ("?collection=a/b", "bad_collection"),
        ("?collection=docs&nope=1", "bad_query"),
    ] {
        let (st, body, _) = send(&app, Method::POST, &format!("/col/delete{q}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
        if code != "bad_query" {
            assert_eq!(body["code"], code, "{q}");
        }
    }
    // The default collection's volume is still there after every refusal.
    let (st, _, _) = send(&app, Method::GET, "/dir/lookup?volumeId=3", None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn test_col_delete_counts_a_gone_copy_as_deleted_and_a_refused_one_as_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (a, _) = fake_volume_server().await;
    let vols = vec![
        vol(5, "busy", "000", 8),
        vol(100, "busy", "000", 8),
        vol(101, "busy", "000", 8),
    ];
    assert_eq!(beat(&app, &a, 10, vols).await, StatusCode::OK);
    let (st, body, headers) = send(&app, Method::POST, "/col/delete?collection=busy", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "collection_delete_failed");
    assert!(headers.contains_key(header::RETRY_AFTER));
    // 5 was deleted, 100 was already gone: both forgotten; 101 is still known, to retry.
    for (vid, found) in [(5, false), (100, false), (101, true)] {
        let (st, _, _) = send(
            &app,
            Method::GET,
            &format!("/dir/lookup?volumeId={vid}"),
            None,
        )
        .await;
        let want = if found {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(st, want, "volume {vid}");
    }
}

/// A standby redirects the leader's routes (307, same path and query, method kept), answers
/// 503 `no_leader` while none is elected, and serves heartbeats and its status itself.
#[tokio::test]
async fn test_follower_redirects_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (master, registry) = test_master(dir.path(), Duration::from_secs(60), 1 << 30);
    let leadership = Arc::new(crate::leader::Leadership::electing("127.0.0.1:2"));
    let master = Arc::new(master.with_leadership(leadership.clone()));
    let app = router(AppState {
        master: master.clone(),
        registry: Arc::new(registry),
        garbage_threshold: 0.3,
    });
    let (status, body, _) = send(&app, Method::POST, "/dir/assign?count=2", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "no_leader");
    leadership.set(crate::leader::Role::Follower {
        leader: Some("10.0.0.9:9333".into()),
    });
    for (method, uri) in [
        (Method::POST, "/dir/assign?count=2"),
        (Method::GET, "/dir/lookup?volumeId=3"),
        (Method::POST, "/vol/grow?count=1"),
        (Method::GET, "/dir/status"),
    ] {
        let (status, body, headers) = send(&app, method, uri, None).await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{uri}: {body}");
        assert_eq!(
            headers[header::LOCATION],
            format!("http://10.0.0.9:9333{uri}"),
            "{uri}"
        );
        assert_eq!(body["leader"], "10.0.0.9:9333");
    }
    assert_eq!(
        beat(&app, "127.0.0.1:8080", 8, vec![]).await,
        StatusCode::OK
    );
    let (status, c, _) = send(&app, Method::GET, "/cluster/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["IsLeader"], false);
    assert_eq!(c["Leader"], "10.0.0.9:9333");
    // Between terms the master refuses ids itself, whatever the route layer let through.
    let e = master
        .assign(&crate::service::AssignRequest {
            count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, crate::service::Error::NotLeader { leader: Some(ref l) } if l == "10.0.0.9:9333"),
        "{e}"
    );
}
