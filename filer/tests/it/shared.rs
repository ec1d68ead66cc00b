//! Two filers on one etcd (issue 18): two real filer services (routers over their own
//! [`EtcdStore`]s, each with its own path locks) sharing one namespace on a real etcd, racing
//! on the same paths. They must behave like one filer: one winner per race, versions that never
//! repeat or go back, fencing that holds across filers, a chunk never owned twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::api::filer::Entry;
use http_body_util::BodyExt;
use kelp_filer::store::{EtcdLimits, EtcdStore, MetaStore};
use kelp_filer::{AppState, Config};
use serde_json::{Value, json};
use testkit::etcd::Etcd;
use tower::ServiceExt;

/// One filer service over its own store on the shared etcd.
#[derive(Clone)]
struct Filer {
    router: Router,
    store: Arc<EtcdStore>,
}

async fn filer(etcd: &Etcd, prefix: &str) -> Filer {
    let (endpoint, prefix) = (etcd.endpoint().to_owned(), prefix.to_owned());
    // Opening blocks on the store's own runtime: not from an async task.
    let store = tokio::task::spawn_blocking(move || {
        let http = common::client::HttpClient::new(Duration::from_secs(10)).with_attempts(1);
        let client = common::etcd::EtcdClient::new(&[endpoint], http).unwrap();
        EtcdStore::open(client, &prefix, EtcdLimits::default()).unwrap()
    })
    .await
    .unwrap();
    let store = Arc::new(store);
    let cfg = Config::for_test("data/unused", "127.0.0.1:1");
    let state = AppState::new(&cfg, store.clone(), Arc::default()).unwrap();
    Filer {
        router: kelp_filer::router(state),
        store,
    }
}

async fn two_filers(etcd: &Etcd) -> (Filer, Filer) {
    let a = filer(etcd, "/kelp/filer/shared/").await;
    let b = filer(etcd, "/kelp/filer/shared/").await;
    (a, b)
}

async fn put(f: &Filer, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/__meta/entry")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(f: &Filer, path: &str) -> Option<Entry> {
    let store = f.store.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || store.get(&path).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_two_filers_see_one_namespace() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    let (status, body) = put(&a, json!({"entry": {"full_path": "/s/d/f"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = get(&b, "/s/d/f")
        .await
        .expect("written through A, read through B");
    assert_eq!(seen.version, 1);
    assert!(
        get(&b, "/s/d").await.unwrap().is_dir,
        "parents created once, shared"
    );
    let (status, body) = put(
        &b,
        json!({"entry": {"full_path": "/s/d/f"}, "expect": {"version": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&a, "/s/d/f").await.unwrap().version, 2);
    // Another prefix on the same etcd is another namespace.
    let other = filer(&etcd, "/kelp/filer/other/").await;
    assert!(get(&other, "/s/d/f").await.is_none());
}

/// Both filers write the same path with `expect` = the version just read, 30 rounds: exactly
/// one wins each round (the other gets 412), and the version goes up by one per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_racing_expect_has_one_winner_per_round() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    let (status, _) = put(&a, json!({"entry": {"full_path": "/r/f"}})).await;
    assert_eq!(status, StatusCode::OK);
    for round in 1..=30u64 {
        let v = get(&a, "/r/f").await.unwrap().version;
        assert_eq!(v, round, "one version per round");
        let body = |who: &str| json!({"entry": {"full_path": "/r/f", "extended": {"by": who}}, "expect": {"version": v}});
        let (ra, rb) = tokio::join!(put(&a, body("a")), put(&b, body("b")));
        let statuses = [ra.0, rb.0];
        let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(wins, 1, "round {round}: {statuses:?} {} {}", ra.1, rb.1);
        let loser = if ra.0 == StatusCode::OK { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::PRECONDITION_FAILED, "{}", loser.1);
        assert_eq!(loser.1["code"], "precondition_failed");
        let winner = if ra.0 == StatusCode::OK { &ra.1 } else { &rb.1 };
        assert_eq!(winner["version"], v + 1);
        let stored = get(&b, "/r/f").await.unwrap();
        assert_eq!(stored.version, v + 1);
        assert_eq!(
            stored.extended["by"],
            if ra.0 == StatusCode::OK { "a" } else { "b" }
        );
    }
}

/// Both filers write the same path without a precondition, 25 times each at once: every write
/// succeeds (a lost race is re-decided on the new state), and the versions they were given are
/// exactly 1..=50: none repeated, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_racing_writes_get_distinct_increasing_versions() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let f = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            put(
                &f,
                json!({"entry": {"full_path": "/w/f", "extended": {"i": i.to_string()}}}),
            )
            .await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        versions.push(body["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=50).collect::<Vec<u64>>());
    assert_eq!(get(&a, "/w/f").await.unwrap().version, 50);
}

/// Filer A commits segments under owner epoch 1 while filer B takes the partition over (epoch
/// 2, with a version precondition). Once B's takeover is acknowledged, no commit under epoch 1
/// succeeds through either filer; and after A's first fenced commit, none of A's later ones does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_fencing_holds_across_filers() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    let dir = |epoch: &str, expect: Value| json!({"entry": {"full_path": "/t/p0000", "is_dir": true, "extended": {"owner_epoch": epoch}}, "expect": expect});
    let seg = |name: String, epoch: &str| {
        json!({"entry": {"full_path": format!("/t/p0000/{name}")}, "expect": "absent",
               "parent_expect": {"key": "owner_epoch", "value": epoch}})
    };
    let (status, body) = put(&a, dir("1", json!("absent"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = body["version"].as_u64().unwrap();
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..200 {
                let (status, body) = put(&a, seg(format!("s{i:04}"), "1")).await;
                results.push((i, status, body));
                if status != StatusCode::OK {
                    // Keep going a little after the first refusal: all must be refused.
                    if results.iter().filter(|r| r.1 != StatusCode::OK).count() > 10 {
                        break;
                    }
                }
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = put(&b, dir("2", json!({"version": v}))).await;
    assert_eq!(status, StatusCode::OK, "takeover: {body}");
    // After the takeover's answer, epoch 1 is fenced through both filers.
    for f in [&a, &b] {
        let (status, body) = put(f, seg("late".to_owned(), "1")).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
        assert_eq!(body["code"], "fenced");
    }
    let results = writer.await.unwrap();
    let first_refused = results
        .iter()
        .position(|r| r.1 != StatusCode::OK)
        .expect("A's writes under epoch 1 end up fenced");
    for (i, status, body) in &results[first_refused..] {
        assert_eq!(
            *status,
            StatusCode::PRECONDITION_FAILED,
            "segment {i}: {body}"
        );
        assert_eq!(body["code"], "fenced");
    }
    for (i, _, _) in &results[..first_refused] {
        assert!(get(&b, &format!("/t/p0000/s{i:04}")).await.is_some());
    }
    for (i, _, _) in &results[first_refused..] {
        assert!(
            get(&b, &format!("/t/p0000/s{i:04}")).await.is_none(),
            "fenced {i} not written"
        );
    }
    // Under the new epoch, commits go on.
    let (status, body) = put(&a, seg("new".to_owned(), "2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Linearizability, round by round: A commits under epoch e while B raises it to e+1, at
    // once. A segment acknowledged under e must be ordered before the raise in etcd's history
    // (its key's mod_revision below the directory's), never after it.
    let raw = common::etcd::EtcdClient::new(
        &[etcd.endpoint().to_owned()],
        common::client::HttpClient::new(Duration::from_secs(10)),
    )
    .unwrap();
    let rev = |path: String| {
        let raw = &raw;
        async move {
            let mut key = b"/kelp/filer/shared/".to_vec();
            key.extend(kelp_filer::store::codec::entry_key(&path));
            raw.get(key).await.unwrap().map_or(0, |kv| kv.mod_revision)
        }
    };
    let mut ordered_before = 0;
    for epoch in 2..40u64 {
        let v = get(&b, "/t/p0000").await.unwrap().version;
        let name = format!("r{epoch:03}");
        let next = (epoch + 1).to_string();
        let (ra, rb) = tokio::join!(
            put(&a, seg(name.clone(), &epoch.to_string())),
            put(&b, dir(&next, json!({"version": v})))
        );
        assert_eq!(rb.0, StatusCode::OK, "takeover {epoch}: {}", rb.1);
        let seg_rev = rev(format!("/t/p0000/{name}")).await;
        let dir_rev = rev("/t/p0000".to_owned()).await;
        if ra.0 == StatusCode::OK {
            assert!(
                seg_rev < dir_rev,
                "epoch {epoch}: segment committed after the takeover"
            );
            ordered_before += 1;
        } else {
            assert_eq!(ra.1["code"], "fenced", "{}", ra.1);
            assert_eq!(seg_rev, 0, "a fenced segment is not written");
        }
    }
    eprintln!("{ordered_before} of 38 racing commits landed before their takeover");
}

/// Both filers claim the same chunk for different paths at once, 20 times: exactly one claim
/// wins (the other is 409 `chunk_in_use`), and the chunk has exactly one owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_a_chunk_never_gets_two_owners() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    for round in 0..20 {
        let fid = format!("3,{:08x}01", round + 1);
        let body = |path: &str| {
            json!({"entry": {"full_path": path, "size": 1,
                   "chunks": [{"fid": fid, "offset": 0, "size": 1, "etag": "e"}]}})
        };
        let (pa, pb) = (format!("/c/a{round}"), format!("/c/b{round}"));
        let (ra, rb) = tokio::join!(put(&a, body(&pa)), put(&b, body(&pb)));
        let ok: Vec<&str> = [(&ra, pa.as_str()), (&rb, pb.as_str())]
            .iter()
            .filter(|(r, _)| r.0 == StatusCode::OK)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(ok.len(), 1, "round {round}: {} {}", ra.1, rb.1);
        let loser = if ra.0 == StatusCode::OK { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::CONFLICT, "{}", loser.1);
        assert_eq!(loser.1["code"], "chunk_in_use");
        let store = a.store.clone();
        let owners = tokio::task::spawn_blocking(move || store.chunk_owners(&fid).unwrap())
            .await
            .unwrap();
        assert_eq!(owners, [ok[0]]);
    }
    // A recursive delete racing with writes below it through the other filer never leaves a
    // child without its parent.
    let names: BTreeSet<String> = (0..5).map(|i| format!("/del/d{i}/f")).collect();
    for n in &names {
        let (status, _) = put(&a, json!({"entry": {"full_path": n}})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let del = async {
        let req = Request::builder()
            .method(Method::DELETE)
            .uri("/del?recursive=true")
            .body(Body::empty())
            .unwrap();
        a.router.clone().oneshot(req).await.unwrap().status()
    };
    let write = put(&b, json!({"entry": {"full_path": "/del/d9/late"}}));
    let (del, (wrote, _)) = tokio::join!(del, write);
    assert!(
        del.is_success() || del == StatusCode::SERVICE_UNAVAILABLE,
        "{del}"
    );
    if wrote == StatusCode::OK && get(&a, "/del/d9/late").await.is_some() {
        assert!(
            get(&a, "/del/d9").await.is_some(),
            "a child without its parent"
        );
        assert!(
            get(&a, "/del").await.is_some(),
            "a child without its grandparent"
        );
    }
}

/// A subtree over one etcd transaction: its rename is refused whole (409
/// `too_large_for_store`, nothing moved), its recursive delete goes through in guarded pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_shared_big_subtree_rename_refused_whole_delete_in_pieces() {
    let etcd = Etcd::start();
    let (a, b) = two_filers(&etcd).await;
    for i in 0..150 {
        let path = format!("/big/d{}/f{i:03}", i % 3);
        let (status, body) = put(&a, json!({"entry": {"full_path": path}})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let call = |f: &Filer, method: Method, uri: &str| {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let router = f.router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (status, body) = call(&b, Method::POST, "/moved?mv.from=/big").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("too_large_for_store"), "{body}");
    assert!(get(&a, "/moved").await.is_none());
    assert!(get(&a, "/big/d0/f000").await.is_some());
    let (status, body) = call(&b, Method::DELETE, "/big?recursive=true").await;
    assert!(status.is_success(), "{status}: {body}");
    assert!(get(&a, "/big").await.is_none());
    for i in [0, 77, 149] {
        assert!(get(&a, &format!("/big/d{}/f{i:03}", i % 3)).await.is_none());
    }
}
