//! Chunked uploads, ranged reads and chunk collection against a fake master + volume server
//! (a few axum routes in this test binary; the real services are tested in `e2e/`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use common::api::filer::Entry;
use common::ids::FileId;
use common::security::{ApiKeys, FidKey, Secret, Security};
use http_body_util::BodyExt;
use kelp_filer::store::{MemoryStore, MetaStore};
use kelp_filer::{AppState, Config};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::TestFiler;

#[derive(Default)]
struct Fake {
    addr: Mutex<String>,
    needles: Mutex<HashMap<String, Bytes>>,
    next_key: AtomicUsize,
    writes: AtomicUsize,
    /// The n-th write (1-based) fails with a 500.
    fail_write: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    deletes: AtomicUsize,
    /// When set, needle calls need fid tokens signed with its keys (as a volume server with
    /// `--jwt-signing-key-file` and `--jwt-read-key-file`), and every call is checked for
    /// its cluster token.
    security: Option<Arc<Security>>,
    /// Calls that came without the cluster token of `security`.
    without_cluster_token: AtomicUsize,
    /// Needle calls refused for their fid token.
    refused: AtomicUsize,
}

type FakeState = Arc<Fake>;

impl Fake {
    fn note_cluster_token(&self, headers: &HeaderMap) {
        if let Some(sec) = &self.security
            && sec.check_cluster(headers).is_err()
        {
            self.without_cluster_token.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The volume server's fid token check of a needle call.
    fn check_token(&self, method: &Method, fid: &str, headers: &HeaderMap) -> Option<Response> {
        let sec = self.security.as_ref()?;
        let fid: FileId = fid.parse().expect("the fake assigns valid fids");
        let checked = if *method == Method::GET {
            sec.check_read_token(headers, &fid)
        } else {
            sec.check_write_token(headers, &fid)
        };
        checked.err().map(|e| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            e.into_response()
        })
    }
}

async fn assign(State(f): State<FakeState>, headers: HeaderMap) -> Json<serde_json::Value> {
    f.note_cluster_token(&headers);
    let key = f.next_key.fetch_add(1, Ordering::SeqCst) + 1;
    let addr = f.addr.lock().unwrap().clone();
    Json(json!({"fid": format!("1,{key:02x}0000abcd"), "url": addr, "publicUrl": addr, "count": 1}))
}

async fn lookup(State(f): State<FakeState>, headers: HeaderMap) -> Json<serde_json::Value> {
    f.note_cluster_token(&headers);
    let addr = f.addr.lock().unwrap().clone();
    Json(json!({"volumeOrFileId": "1", "locations": [{"url": addr, "publicUrl": addr}]}))
}

async fn needle(
    State(f): State<FakeState>,
    method: Method,
    Path(fid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    f.note_cluster_token(&headers);
    if let Some(refused) = f.check_token(&method, &fid, &headers) {
        return refused;
    }
    match method {
        Method::POST | Method::PUT => {
            let n = f.writes.fetch_add(1, Ordering::SeqCst) + 1;
            let now = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            f.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            f.in_flight.fetch_sub(1, Ordering::SeqCst);
            if f.fail_write.load(Ordering::SeqCst) == n {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "disk on fire", "code": "internal"})),
                )
                    .into_response();
            }
            let size = body.len();
            let etag = format!("{:08x}", crc32c::crc32c(&body));
            f.needles.lock().unwrap().insert(fid, body);
            (
                StatusCode::CREATED,
                Json(json!({"name": "", "size": size, "eTag": etag})),
            )
                .into_response()
        }
        Method::GET => match f.needles.lock().unwrap().get(&fid) {
            // Like a volume server: the ETag is the needle's CRC, quoted.
            Some(b) => (
                [(
                    axum::http::header::ETAG,
                    format!("\"{:08x}\"", crc32c::crc32c(b)),
                )],
                b.clone(),
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("needle {fid} not found"), "code": "not_found"})),
            )
                .into_response(),
        },
        Method::DELETE => {
            f.deletes.fetch_add(1, Ordering::SeqCst);
            match f.needles.lock().unwrap().remove(&fid) {
                Some(b) => (StatusCode::ACCEPTED, Json(json!({"size": b.len()}))).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": "gone", "code": "not_found"})),
                )
                    .into_response(),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

struct Cluster {
    fake: FakeState,
    filer: TestFiler,
    state: AppState,
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn cluster(collect: bool) -> Cluster {
    cluster_with(collect, None, None).await
}

/// A filer holding `security` over a fake holding `volume_security`.
async fn cluster_with(
    collect: bool,
    security: Option<Arc<Security>>,
    volume_security: Option<Arc<Security>>,
) -> Cluster {
    let fake = Arc::new(Fake {
        security: volume_security,
        ..Fake::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    *fake.addr.lock().unwrap() = addr.clone();
    let app = Router::new()
        .route("/dir/assign", any(assign))
        .route("/dir/lookup", get(lookup))
        .route("/{fid}", any(needle))
        .with_state(fake.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
            .unwrap();
    });
    let store = Arc::new(MemoryStore::new());
    let mut cfg = Config::for_test("data/unused", &addr);
    cfg.chunk_size_mb = 1;
    let state = AppState::new(&cfg, store.clone(), security.unwrap_or_default()).unwrap();
    if collect {
        tokio::spawn(state.filer.clone().collect_chunks(stop.clone()));
    }
    Cluster {
        fake,
        filer: TestFiler {
            router: kelp_filer::router(state.clone()),
            store,
        },
        state,
        stop,
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn test_chunked_upload_splits_uploads_in_parallel_and_reads_back() {
    let c = cluster(false).await;
    let data = content(5 * MIB + MIB / 2);
    let r = c
        .filer
        .call(Method::PUT, "/big/file.bin", Body::from(data.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.json(), json!({"name": "file.bin", "size": data.len()}));

    let e = c.filer.store.get("/big/file.bin").unwrap().unwrap();
    assert_eq!(e.size, data.len() as u64);
    let layout: Vec<(u64, u64)> = e.chunks.iter().map(|c| (c.offset, c.size)).collect();
    assert_eq!(
        layout,
        kelp_filer::chunks::split_chunks(data.len() as u64, MIB as u64)
    );
    assert_eq!(c.fake.needles.lock().unwrap().len(), 6);
    let max = c.fake.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&max), "max in-flight chunk writes {max}");

    let r = c
        .filer
        .call(Method::GET, "/big/file.bin", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-length"], data.len().to_string());
    assert!(r.body == data, "content differs");

    for (a, b) in [
        (0, 0),
        (MIB - 1, MIB),
        (MIB - 10, 3 * MIB + 5),
        (5 * MIB, data.len() - 1),
        (17, 17),
    ] {
        let r = c
            .filer
            .send(
                Request::get("/big/file.bin")
                    .header("range", format!("bytes={a}-{b}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers["content-range"],
            format!("bytes {a}-{b}/{}", data.len())
        );
        assert!(r.body[..] == data[a..=b], "range {a}-{b} differs");
    }
    let r = c
        .filer
        .send(
            Request::get("/big/file.bin")
                .header("range", "bytes=-100")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(r.body[..] == data[data.len() - 100..]);

    // Multipart uploads go through the same path.
    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
    body.extend_from_slice(&data[..MIB + 3]);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let r = c
        .filer
        .send(
            Request::post("/big/multi.png")
                .header("content-type", "multipart/form-data; boundary=B")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = c
        .filer
        .call(Method::GET, "/big/multi.png", Body::empty())
        .await;
    assert_eq!(r.headers["content-type"], "image/png");
    assert!(r.body[..] == data[..MIB + 3]);
    let r = c.filer.call(Method::GET, "/metrics", Body::empty()).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(text.contains("filer_chunks_uploaded_total 8"), "{text}");
    assert!(text.contains("filer_files_created_total 2"), "{text}");
}

#[tokio::test]
async fn test_chunked_overwrite_and_delete_collect_old_chunks() {
    let c = cluster(true).await;
    let r = c
        .filer
        .call(Method::PUT, "/f", Body::from(content(3 * MIB)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let old: Vec<String> = c
        .filer
        .store
        .get("/f")
        .unwrap()
        .unwrap()
        .chunks
        .into_iter()
        .map(|c| c.fid)
        .collect();
    assert_eq!(old.len(), 3);

    let small = content(10);
    let r = c
        .filer
        .call(Method::PUT, "/f", Body::from(small.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let new: Entry = c.filer.store.get("/f").unwrap().unwrap();
    assert_eq!(new.version, 2);
    let fake = c.fake.clone();
    let keep = new.chunks[0].fid.clone();
    testkit::eventually("old chunks deleted", || {
        let n = fake.needles.lock().unwrap();
        n.len() == 1 && n.contains_key(&keep)
    })
    .await;
    let r = c.filer.call(Method::GET, "/f", Body::empty()).await;
    assert!(r.body[..] == small[..]);

    let r = c.filer.call(Method::DELETE, "/f", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let fake = c.fake.clone();
    testkit::eventually("all chunks deleted", || {
        fake.needles.lock().unwrap().is_empty()
    })
    .await;
    let store = c.filer.store.clone();
    testkit::eventually("queue drained", || {
        store.pending_deletions(10).unwrap().is_empty()
    })
    .await;
    // An already-deleted needle (404 from the volume) counts as deleted.
    let mut b = kelp_filer::store::Batch::new();
    b.queue_chunks(&new, 0);
    c.filer.store.write(&b).unwrap();
    c.state.filer.collect_now();
    let store = c.filer.store.clone();
    testkit::eventually("404 dequeued", || {
        store.pending_deletions(10).unwrap().is_empty()
    })
    .await;
}

/// Credentials as a secured cluster holds them: fid token keys for writes and reads, the
/// cluster token, and one write API key.
pub(crate) const WRITE_KEY: &str = "write-key-0123456789";

fn secured() -> Arc<Security> {
    Arc::new(Security {
        write_key: Some(FidKey::new(b"signing-key-0123456789").unwrap()),
        read_key: Some(FidKey::new(b"read-signing-key-0123456789").unwrap()),
        cluster_token: Some(Secret::new("cluster-token-0123456789")),
        api_keys: Some(ApiKeys::parse(&format!("write {WRITE_KEY}")).unwrap()),
        ..Security::default()
    })
}

#[tokio::test]
async fn test_chunked_secured_filer_mints_fid_tokens_for_writes_reads_and_deletes() {
    let c = cluster_with(true, Some(secured()), Some(secured())).await;
    let data = content(2 * MIB + 5);
    let put = |body: Vec<u8>| {
        Request::put("/sec/file.bin")
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .body(Body::from(body))
            .unwrap()
    };
    let r = c.filer.send(put(data.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(c.fake.needles.lock().unwrap().len(), 3);
    let get = || {
        Request::get("/sec/file.bin")
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .body(Body::empty())
            .unwrap()
    };
    let r = c.filer.send(get()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body == data, "content differs");

    // Overwriting queues the old chunks; the collector deletes them with its own tokens.
    let r = c.filer.send(put(content(10))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let fake = c.fake.clone();
    testkit::eventually("old chunks deleted", || {
        fake.needles.lock().unwrap().len() == 1
    })
    .await;
    assert!(c.fake.deletes.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        c.fake.refused.load(Ordering::SeqCst),
        0,
        "a fid token was refused"
    );
    assert_eq!(
        c.fake.without_cluster_token.load(Ordering::SeqCst),
        0,
        "an internal call went without the cluster token"
    );
    // The client still needs its key.
    let r = c
        .filer
        .call(Method::GET, "/sec/file.bin", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn test_chunked_filer_without_the_signing_key_is_refused_by_secured_volumes() {
    // The volumes demand tokens this filer cannot mint: the upload fails and nothing is
    // committed (and the secured test above is not passing by accident).
    let c = cluster_with(false, None, Some(secured())).await;
    let r = c
        .filer
        .call(Method::PUT, "/sec/file.bin", Body::from(content(10)))
        .await;
    assert!(!r.status.is_success(), "{:?}", r.status);
    assert!(c.fake.refused.load(Ordering::SeqCst) >= 1);
    assert!(c.filer.store.get("/sec/file.bin").unwrap().is_none());
}

#[tokio::test]
async fn test_chunked_upload_failure_commits_nothing_and_collects_written_chunks() {
    let c = cluster(true).await;
    c.fake.fail_write.store(3, Ordering::SeqCst);
    let r = c
        .filer
        .call(Method::PUT, "/fail/me", Body::from(content(5 * MIB)))
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("disk on fire"));
    assert!(c.filer.store.get("/fail/me").unwrap().is_none());
    assert!(c.filer.store.get("/fail").unwrap().is_none());
    // Whatever was written before and while the failure was seen is deleted again.
    assert!(c.fake.writes.load(Ordering::SeqCst) <= 5);
    let fake = c.fake.clone();
    testkit::eventually("orphans deleted", || {
        fake.needles.lock().unwrap().is_empty()
    })
    .await;
    let r = c.filer.call(Method::GET, "/metrics", Body::empty()).await;
    assert!(String::from_utf8_lossy(&r.body).contains("filer_upload_errors_total 1"));
}

#[tokio::test]
async fn test_chunked_unreadable_chunk_is_an_error_not_short_content() {
    let c = cluster(false).await;
    let r = c
        .filer
        .call(Method::PUT, "/r", Body::from(content(4 * MIB)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let e = c.filer.store.get("/r").unwrap().unwrap();
    // The first chunk gone: a clean error naming the fid.
    c.fake.needles.lock().unwrap().remove(&e.chunks[0].fid);
    let r = c.filer.call(Method::GET, "/r", Body::empty()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains(&e.chunks[0].fid)
    );
    // A later chunk gone: the body is aborted after the status line.
    let r = c
        .filer
        .call(Method::PUT, "/r2", Body::from(content(4 * MIB)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let e = c.filer.store.get("/r2").unwrap().unwrap();
    c.fake.needles.lock().unwrap().remove(&e.chunks[3].fid);
    let resp = tower::ServiceExt::oneshot(
        c.filer.router.clone(),
        Request::get("/r2").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body().collect().await.is_err(),
        "short content served silently"
    );
}

async fn metric(c: &Cluster, name: &str) -> u64 {
    let r = c.filer.call(Method::GET, "/metrics", Body::empty()).await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_total ")))
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Issue 11 finding 9: a chunk whose ETag (the needle's CRC, from the volume server's
/// response headers) differs from the entry's recorded etag is a 500 naming the path and
/// fid, counted, and never served.
#[tokio::test]
async fn test_chunked_etag_mismatch_fails_the_read() {
    let c = cluster(false).await;
    let body = content(3 * MIB);
    let r = c
        .filer
        .call(Method::PUT, "/e", Body::from(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Matching ETags: read back whole, nothing counted.
    let r = c.filer.call(Method::GET, "/e", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), body.as_slice());
    assert_eq!(metric(&c, "filer_chunk_etag_mismatches").await, 0);

    // The entry records another etag for its first chunk (same fid, same size).
    let mut e: Entry = c.filer.store.get("/e").unwrap().unwrap();
    let fid = e.chunks[0].fid.clone();
    e.chunks[0].etag = "0badc0de".to_owned();
    let r = c
        .filer
        .json(Method::PUT, "/__meta/entry", json!({ "entry": e }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c.filer.call(Method::GET, "/e", Body::empty()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let msg = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("/e") && msg.contains(&fid) && msg.contains("etag"),
        "{msg}"
    );
    assert_eq!(metric(&c, "filer_chunk_etag_mismatches").await, 1);
    // A range inside the chunk is refused too.
    let r = c
        .filer
        .send(
            Request::get("/e")
                .header("range", "bytes=10-20")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(metric(&c, "filer_chunk_etag_mismatches").await, 2);

    // Same size, other bytes under a later chunk's fid: the body is aborted, never
    // completed with the wrong bytes.
    let r = c
        .filer
        .call(Method::PUT, "/f", Body::from(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let e = c.filer.store.get("/f").unwrap().unwrap();
    let last = e.chunks.last().unwrap();
    let swapped = Bytes::from(vec![7u8; usize::try_from(last.size).unwrap()]);
    c.fake
        .needles
        .lock()
        .unwrap()
        .insert(last.fid.clone(), swapped);
    let resp = tower::ServiceExt::oneshot(
        c.filer.router.clone(),
        Request::get("/f").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body().collect().await.is_err(),
        "mismatched bytes served silently"
    );
    assert_eq!(metric(&c, "filer_chunk_etag_mismatches").await, 3);
}
