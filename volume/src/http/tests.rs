//! Router tests through `oneshot`: the real handlers on a real store in a temp dir.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::client::HttpClient;
use common::http::ErrorBody;
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::api::master::Replication;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

fn state(dir: &std::path::Path) -> AppState {
    state_with_max_blob(dir, 1)
}

fn state_with_max_blob(dir: &std::path::Path, max_blob_mb: u64) -> AppState {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let store = Store::load(dir, metrics.clone()).unwrap();
    store.allocate(3, "", Replication::default()).unwrap();
    let http = HttpClient::new(Duration::from_secs(1)).with_attempts(1);
    let mut cfg = Config::for_test(dir.to_path_buf(), "127.0.0.1:1".into());
    cfg.max_blob_mb = max_blob_mb;
    AppState {
        volume: Arc::new(VolumeServer::with_client(
            Arc::new(store),
            Arc::new(cfg),
            "127.0.0.1:2".into(),
            metrics,
            http,
        )),
        registry: Arc::new(registry),
    }
}

async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, bytes::Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (
        status,
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn req(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap()
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body).unwrap().code
}

#[tokio::test]
async fn test_router_write_read_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, _, body) = send(&app, req("POST", "/3,01637037d6", "hello kelp")).await;
    assert_eq!(st, StatusCode::CREATED, "{body:?}");
    let up: common::api::volume::UploadResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(up.size, 10);

    let (st, h, body) = send(&app, req("GET", "/3,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], b"hello kelp");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", up.etag));

    let r = Request::get("/3,01637037d6")
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::NOT_MODIFIED);

    let r = Request::get("/3,01637037d6")
        .header("range", "bytes=6-")
        .body(Body::empty())
        .unwrap();
    let (st, h, body) = send(&app, r).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], b"kelp");
    assert_eq!(h["content-range"], "bytes 6-9/10");

    let r = Request::get("/3,01637037d6")
        .header("range", "bytes=50-")
        .body(Body::empty())
        .unwrap();
    let (st, h, body) = send(&app, r).await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], "bytes */10");
    // Found by scripts/api-fuzz.sh: the JSON error went out as the blob's Content-Type.
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(error_code(&body), "range_not_satisfiable");

    let (st, h, body) = send(&app, req("HEAD", "/3,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-length"], "10");
    assert!(body.is_empty());

    // Wrong cookie: not found, and it cannot delete either.
    let (st, _, body) = send(&app, req("GET", "/3,0100000000", Body::empty())).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "needle_not_found");
    assert_eq!(
        send(&app, req("DELETE", "/3,0100000000", Body::empty()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (st, _, body) = send(&app, req("DELETE", "/3,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["size"],
        10
    );
    assert_eq!(
        send(&app, req("GET", "/3,01637037d6", Body::empty()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn test_router_bad_input_gets_json_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    for bad in ["/3,xyz", "/nope", "/3,01", "/99999999999,01637037d6"] {
        let (st, _, body) = send(&app, req("GET", bad, Body::empty())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body), "bad_fid");
    }
    // A percent-escape that is not UTF-8 was axum's plain-text 400, not the JSON error.
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
        let (st, h, body) = send(&app, req(method, "/%FF,01637037d6", Body::empty())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(h["content-type"], "application/json", "{method}");
        if method != "HEAD" {
            assert_eq!(error_code(&body), "bad_fid", "{method}");
        }
    }
    let (st, _, body) = send(&app, req("POST", "/9,01637037d6", "x")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(err.error.contains("volume 9"), "{}", err.error);

    let big = vec![7u8; (1 << 20) + 1];
    let (st, _, body) = send(&app, req("POST", "/3,02637037d6", big)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");

    // `/a/b/c` is SeaweedFS's `/vid/fid/name` form with a bad volume id (it was a 404 before
    // the form was served); four segments match no route.
    let (st, _, body) = send(&app, req("GET", "/a/b/c", Body::empty())).await;
    assert_eq!(
        (st, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad_fid")
    );
    assert_eq!(
        send(&app, req("GET", "/a/b/c/d", Body::empty())).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, req("PATCH", "/3,01637037d6", Body::empty()))
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (st, _, _) = send(&app, req("POST", "/admin/volume?volumeId=x", Body::empty())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(
        &app,
        req(
            "POST",
            "/admin/volume?volumeId=4&replication=9",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(&app, req("POST", "/3,03637037d6?fsync=maybe", "x")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn test_router_multipart_upload_keeps_name_and_mime() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let body = "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nmultipart data\r\n--XX--\r\n";
    let r = Request::post("/3,05637037d6")
        .header("content-type", "multipart/form-data; boundary=XX")
        .body(Body::from(body))
        .unwrap();
    let (st, _, resp) = send(&app, r).await;
    assert_eq!(st, StatusCode::CREATED, "{resp:?}");
    let up: common::api::volume::UploadResponse = serde_json::from_slice(&resp).unwrap();
    assert_eq!((up.name.as_str(), up.size), ("a.txt", 14));
    let (st, h, data) = send(&app, req("GET", "/3,05637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&data[..], b"multipart data");
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["content-disposition"], "inline; filename=a.txt");
}

#[tokio::test]
async fn test_router_read_types_and_names_blobs_as_seaweedfs() {
    // pyseaweed (requests' `files=`) sends a part named after the file, without Content-Type:
    // SeaweedFS serves the type of the name's extension and the name.
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let body = "--XX\r\nContent-Disposition: form-data; name=\"page.html\"; filename=\"page.html\"\r\n\r\n<p>hi</p>\r\n--XX--\r\n";
    let r = Request::post("/3,06637037d6")
        .header("content-type", "multipart/form-data; boundary=XX")
        .body(Body::from(body))
        .unwrap();
    let (st, _, resp) = send(&app, r).await;
    assert_eq!(st, StatusCode::CREATED, "{resp:?}");
    for method in ["GET", "HEAD"] {
        let (st, h, _) = send(&app, req(method, "/3,06637037d6", Body::empty())).await;
        assert_eq!(st, StatusCode::OK, "{method}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{method}");
        assert_eq!(
            h["content-disposition"], "inline; filename=page.html",
            "{method}"
        );
    }
    let (_, h, _) = send(&app, req("GET", "/3,06637037d6?dl=true", Body::empty())).await;
    assert_eq!(h["content-disposition"], "attachment; filename=page.html");
    // Last-Modified, and If-Modified-Since at it or later: 304; earlier or malformed: 200.
    let lm = h["last-modified"].to_str().unwrap().to_owned();
    let lm_secs = content::parse_http_date(&lm).expect("an HTTP date");
    let conditional = |since: &str| {
        Request::get("/3,06637037d6")
            .header("if-modified-since", since)
            .body(Body::empty())
            .unwrap()
    };
    let (st, _, _) = send(&app, conditional(&lm)).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED, "{lm}");
    let earlier = content::http_date(lm_secs as u64 - 1).unwrap();
    let (st, _, _) = send(&app, conditional(&earlier)).await;
    assert_eq!(st, StatusCode::OK, "{earlier}");
    let (st, _, _) = send(&app, conditional("yesterday")).await;
    assert_eq!(st, StatusCode::OK);
    // A raw body without type or name: sniffed, and no Content-Disposition.
    let (st, _, _) = send(&app, req("POST", "/3,07637037d6", "plain words")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, h, _) = send(&app, req("GET", "/3,07637037d6", Body::empty())).await;
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert!(h.get("content-disposition").is_none(), "{h:?}");
    let (st, _, _) = send(&app, req("POST", "/3,08637037d6", vec![0u8, 1, 2])).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, h, _) = send(&app, req("GET", "/3,08637037d6", Body::empty())).await;
    assert_eq!(h["content-type"], "application/octet-stream");
}

#[tokio::test]
async fn test_router_replicated_write_fails_without_replica() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    s.volume
        .store()
        .allocate(4, "", "001".parse().unwrap())
        .unwrap();
    let app = router(s);
    // The master is unreachable, so the replica cannot be found: the write must not be acked.
    let (st, _, body) = send(&app, req("POST", "/4,01637037d6", "x")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "replica_unavailable");
}

#[tokio::test]
async fn test_router_allocate_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, _, _) = send(
        &app,
        req(
            "POST",
            "/admin/volume?volumeId=5&collection=pics&replication=000",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(std::fs::metadata(dir.path().join("pics_5.dat")).is_ok());
    assert!(std::fs::metadata(dir.path().join("pics_5.idx")).is_ok());
    let (st, _, body) = send(&app, req("GET", "/status", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    let status: common::api::volume::VolumeServerStatus = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.volumes.len(), 2);
    send(&app, req("POST", "/3,01637037d6", "x")).await;
    let (st, _, body) = send(&app, req("GET", "/metrics", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("kelp_volume_fdatasyncs_total 1"), "{text}");
}

#[tokio::test]
async fn test_openapi_matches_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let paths: Vec<&str> = routes().into_iter().map(|(p, _, _)| p).collect();
    // Volume 3 exists (see `state`); the probes write and delete an empty blob on it.
    let samples = [
        ("fid", "3,01637037d6"),
        ("vid", "3"),
        ("key", "01637037d6"),
        ("name", "a.txt"),
    ];
    if let Err(errors) = common::http::openapi::check_router(OPENAPI, &app, &paths, &samples).await
    {
        panic!("volume/src/http/openapi.json and the router disagree:\n{errors:#?}");
    }
}

#[tokio::test]
async fn test_router_disk_full_is_a_507_json_error_and_reads_keep_working() {
    // Issue 11: ENOSPC on a write is a 507 naming the file, nothing acknowledged is lost.
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let vol = s.volume.store().get(3).unwrap();
    let app = router(s);
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6", "before")).await;
    assert_eq!(st, StatusCode::CREATED);
    vol.faults().fail_writes(std::io::ErrorKind::StorageFull);
    let (st, headers, body) = send(&app, req("POST", "/3,02637037d6", "after")).await;
    assert_eq!(st, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(error_code(&body), "insufficient_storage");
    let (st, _, body) = send(&app, req("GET", "/3,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], b"before");
    let (st, _, _) = send(&app, req("GET", "/3,02637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    vol.faults().heal_writes();
    let (st, _, _) = send(&app, req("POST", "/3,02637037d6", "after")).await;
    assert_eq!(st, StatusCode::CREATED);
}

#[tokio::test]
async fn test_router_write_with_another_cookie_is_a_409_and_the_blob_is_kept() {
    // Issue 16: a write to an existing key with a different cookie is refused, as SeaweedFS
    // does; a delete with a wrong cookie is refused too (404, which does not reveal the key).
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6", "original")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, h, body) = send(&app, req("POST", "/3,0112345678", "forged")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(error_code(&body), "cookie_mismatch");
    let (st, _, body) = send(&app, req("PUT", "/3,0112345678", "forged")).await;
    assert_eq!(
        (st, error_code(&body).as_str()),
        (StatusCode::CONFLICT, "cookie_mismatch")
    );
    let (st, _, body) = send(&app, req("DELETE", "/3,0112345678", Body::empty())).await;
    assert_eq!(
        (st, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "needle_not_found")
    );
    let (st, _, body) = send(&app, req("GET", "/3,01637037d6", Body::empty())).await;
    assert_eq!((st, &body[..]), (StatusCode::OK, &b"original"[..]));
    // The real fid may rewrite itself.
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6", "rewritten")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, _, body) = send(&app, req("GET", "/3,01637037d6", Body::empty())).await;
    assert_eq!(&body[..], b"rewritten");
}

#[tokio::test]
async fn test_router_serves_seaweedfs_url_forms_and_batch_suffixes() {
    // Issue 17: SeaweedFS clients use `/vid/fid`, `/vid/fid/name.ext`, `/vid,fid.ext` and batch
    // fids `<fid>_N` (key + N, same cookie).
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6", "zero")).await;
    assert_eq!(st, StatusCode::CREATED);
    for url in [
        "/3,01637037d6",
        "/3,01637037d6.jpg",
        "/3/01637037d6",
        "/3/01637037d6.jpg",
        "/3/01637037d6/photo.jpg",
        "/3,01637037d6_0",
    ] {
        let (st, _, body) = send(&app, req("GET", url, Body::empty())).await;
        assert_eq!((st, &body[..]), (StatusCode::OK, &b"zero"[..]), "{url}");
    }
    // A batch of three from one assign: `_1` and `_2` are keys 0x02 and 0x03.
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6_1", "one")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _, _) = send(&app, req("PUT", "/3/01637037d6_2/two.txt", "two")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, _, body) = send(&app, req("GET", "/3,02637037d6", Body::empty())).await;
    assert_eq!(&body[..], b"one");
    let (_, _, body) = send(&app, req("GET", "/3/03637037d6.txt", Body::empty())).await;
    assert_eq!(&body[..], b"two");
    let (st, _, _) = send(&app, req("DELETE", "/3/01637037d6_2", Body::empty())).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _, _) = send(&app, req("GET", "/3,03637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for bad in [
        "/3,01637037d6_x",
        "/3/01637037d6_",
        "/x/01637037d6",
        "/3/3,01637037d6",
    ] {
        let (st, _, body) = send(&app, req("GET", bad, Body::empty())).await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "bad_fid"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn test_router_vacuum_compacts_above_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let blob = vec![9u8; 4000];
    for k in 1..=20u32 {
        let (st, _, _) = send(
            &app,
            req("POST", &format!("/3,{k:02x}637037d6"), blob.clone()),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    for k in 1..=15u32 {
        let (st, _, _) = send(
            &app,
            req("DELETE", &format!("/3,{k:02x}637037d6"), Body::empty()),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let (st, _, body) = send(
        &app,
        req("POST", "/admin/vacuum?garbageThreshold=0.9", Body::empty()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let r: common::api::volume::VacuumResponse = serde_json::from_slice(&body).unwrap();
    assert!(r.compacted.is_empty(), "{r:?}");
    let (st, _, body) = send(
        &app,
        req("POST", "/admin/vacuum?garbageThreshold=0.5", Body::empty()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let r: common::api::volume::VacuumResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(r.compacted.len(), 1, "{r:?}");
    assert_eq!(r.compacted[0].volume, 3);
    assert!(r.compacted[0].after * 3 < r.compacted[0].before, "{r:?}");
    for k in 1..=20u32 {
        let (st, _, body) = send(
            &app,
            req("GET", &format!("/3,{k:02x}637037d6"), Body::empty()),
        )
        .await;
        if k <= 15 {
            assert_eq!(st, StatusCode::NOT_FOUND);
        } else {
            assert_eq!((st, body.len()), (StatusCode::OK, 4000));
        }
    }
    for bad in ["garbageThreshold=2", "garbageThreshold=x", "nope=1"] {
        let (st, _, _) = send(
            &app,
            req("POST", &format!("/admin/vacuum?{bad}"), Body::empty()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn test_router_delete_volume_removes_its_files_and_its_report() {
    // Issue 17: the master's /col/delete deletes each volume of the collection here.
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let (st, _, _) = send(
        &app,
        req(
            "POST",
            "/admin/volume?volumeId=5&collection=pics",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send(&app, req("POST", "/5,01637037d6", "x")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _, body) = send(
        &app,
        req("DELETE", "/admin/volume?volumeId=5", Body::empty()),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body:?}");
    for f in ["pics_5.dat", "pics_5.idx"] {
        assert!(
            std::fs::metadata(dir.path().join(f)).is_err(),
            "{f} is left"
        );
    }
    let (_, _, body) = send(&app, req("GET", "/status", Body::empty())).await;
    let status: common::api::volume::VolumeServerStatus = serde_json::from_slice(&body).unwrap();
    let ids: Vec<u32> = status.volumes.iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![3], "only volume 3 is reported");
    let (st, _, body) = send(&app, req("GET", "/5,01637037d6", Body::empty())).await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::NOT_FOUND, "volume_not_found".into())
    );
    let (st, _, body) = send(
        &app,
        req("DELETE", "/admin/volume?volumeId=5", Body::empty()),
    )
    .await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::NOT_FOUND, "volume_not_found".into())
    );
    for bad in ["", "?volumeId=x", "?volume=3"] {
        let (st, _, _) = send(
            &app,
            req("DELETE", &format!("/admin/volume{bad}"), Body::empty()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    }
    // The volume id can be allocated afresh, empty.
    let (st, _, _) = send(
        &app,
        req(
            "POST",
            "/admin/volume?volumeId=5&collection=pics",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send(&app, req("GET", "/5,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_router_refuses_a_seaweedfs_chunk_manifest_upload() {
    // Issue 17: `?cm=true` would be stored as an opaque blob and served as its JSON; refused.
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let manifest = r#"{"chunks":[{"fid":"3,02637037d6","offset":0,"size":1}]}"#;
    for (method, uri) in [
        ("POST", "/3,01637037d6?cm=true"),
        ("PUT", "/3/01637037d6?cm=1"),
        ("POST", "/3/01637037d6/a.txt?cm=True"),
    ] {
        let (st, _, body) = send(&app, req(method, uri, manifest)).await;
        assert_eq!(
            (st, error_code(&body)),
            (StatusCode::BAD_REQUEST, "chunk_manifest_unsupported".into()),
            "{method} {uri}"
        );
    }
    let (st, _, _) = send(&app, req("GET", "/3,01637037d6", Body::empty())).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing was stored");
    let (st, _, _) = send(&app, req("POST", "/3,01637037d6?cm=false", "plain")).await;
    assert_eq!(st, StatusCode::CREATED, "cm=false is an ordinary upload");
}

#[tokio::test]
async fn test_heartbeat_reports_the_client_url_as_public_url() {
    // Issue 17: url (internal, what services use) and publicUrl (clients) as SeaweedFS has them.
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let beat = s.volume.heartbeat();
    assert_eq!(
        (beat.url.as_str(), beat.public_url.as_str()),
        ("127.0.0.1:2", "127.0.0.1:2")
    );
    let mut cfg = Config::for_test(dir.path().join("other"), "127.0.0.1:1".into());
    cfg.client_url = Some("localhost:18080".into());
    let server = VolumeServer::new(
        s.volume.store().clone(),
        Arc::new(cfg),
        "volume1:8080".into(),
        s.volume.metrics().clone(),
    );
    let beat = server.heartbeat();
    assert_eq!(beat.url, "volume1:8080");
    assert_eq!(beat.public_url, "localhost:18080");
    assert_eq!(beat.volumes.len(), 1);
}

#[tokio::test]
async fn test_router_range_of_a_big_blob_is_streamed_and_answers_like_a_whole_read() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state_with_max_blob(dir.path(), 16));
    let len = crate::service::RANGE_READ_MIN as usize + (3 << 20) + 5;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 1000) as u8).collect();
    let up = Request::post("/3,01637037d6?name=big.bin")
        .header("content-type", "application/x-big")
        .body(Body::from(data.clone()))
        .unwrap();
    assert_eq!(send(&app, up).await.0, StatusCode::CREATED);
    let (_, whole_h, _) = send(&app, req("HEAD", "/3,01637037d6", Body::empty())).await;
    let mut served = 0;
    for range in [
        "bytes=0-9",
        "bytes=4194300-4194310",
        "bytes=-5",
        "bytes=7340000-",
    ] {
        let r = Request::get("/3,01637037d6")
            .header("range", range)
            .body(Body::empty())
            .unwrap();
        let (st, h, body) = send(&app, r).await;
        assert_eq!(st, StatusCode::PARTIAL_CONTENT, "{range}");
        let cr = h["content-range"].to_str().unwrap();
        let (span, total) = cr.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
        assert_eq!(total, len.to_string(), "{range}");
        let (s, e) = span.split_once('-').unwrap();
        let (s, e): (usize, usize) = (s.parse().unwrap(), e.parse().unwrap());
        assert_eq!(&body[..], &data[s..=e], "{range}");
        assert_eq!(h["content-length"], (e - s + 1).to_string());
        for name in ["etag", "content-type", "accept-ranges"] {
            assert_eq!(h[name], whole_h[name], "{range}: {name}");
        }
        served += e - s + 1;
    }
    // Only the ranges were served past the HEAD's whole read (the streaming path, not a whole
    // read sliced).
    let (_, _, body) = send(&app, req("GET", "/metrics", Body::empty())).await;
    let text = String::from_utf8_lossy(&body);
    let read_bytes: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("kelp_volume_read_bytes_total "))
        .expect("the read_bytes counter")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(read_bytes, len + served);
    // Beyond the end: the whole-read path's 416.
    let r = Request::get("/3,01637037d6")
        .header("range", format!("bytes={len}-"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::RANGE_NOT_SATISFIABLE);
}
