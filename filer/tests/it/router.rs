//! Router tests through `oneshot` with the in-memory store.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::api::filer::{Entry, ListResponse, SeaweedListing};
use kelp_filer::store::MetaStore;
use serde_json::json;

use crate::{TestFiler, filer};

fn chunk(fid: &str, offset: u64, size: u64) -> serde_json::Value {
    json!({"fid": fid, "offset": offset, "size": size, "etag": "e"})
}

async fn put_entry(f: &TestFiler, entry: serde_json::Value) -> crate::Resp {
    f.json(Method::PUT, "/__meta/entry", json!({ "entry": entry }))
        .await
}

async fn put_file_entry(f: &TestFiler, path: &str) -> Entry {
    let r = put_entry(f, json!({"full_path": path})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn test_router_health_ready_metrics() {
    let f = filer();
    let r = f.call(Method::GET, "/healthz", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f.call(Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ready");
    put_file_entry(&f, "/m").await;
    let r = f.call(Method::GET, "/metrics", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for name in [
        "filer_files_created",
        "filer_bytes_written",
        "filer_chunks_uploaded",
        "filer_upload_errors",
        "filer_chunk_deletions_pending",
        "filer_chunk_deletions_failed",
        "filer_rocksdb_write_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    assert!(
        text.contains("filer_rocksdb_write_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn test_router_rejects_bad_paths() {
    let f = filer();
    let long_name = format!("/{}", "n".repeat(256));
    let long_path = "/abcdefgh".repeat(520);
    for bad in [
        "a/b", "", "/a//b", "/a/", "/a/..", "/a/./b", "/..", "/a\u{0}b", &long_name, &long_path,
    ] {
        let r = put_entry(&f, json!({ "full_path": bad })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {:?}", r.body);
        assert_eq!(r.code(), "bad_path", "{bad:?}");
    }
    for uri in [
        "/__meta/entry?path=relative",
        "/__meta/entry?path=%2Fa%2F%2Fb",
        "/__meta/entry?path=%2Fa%2F..",
        "/__meta/entry?path=%2Fa%00b",
    ] {
        let r = f.call(Method::GET, uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(r.code(), "bad_path");
    }
    for uri in ["/a//b", "/a/../b", "/a/./b", "/a%00b", "/%zz", "/%ff"] {
        let r = f.call(Method::PUT, uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "PUT {uri}: {:?}", r.body);
        assert_eq!(r.code(), "bad_path", "PUT {uri}");
        let r = f.call(Method::GET, uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "GET {uri}");
        let r = f.call(Method::DELETE, uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "DELETE {uri}");
    }
    // The root can be listed but not written, moved or deleted.
    let r = put_entry(&f, json!({"full_path": "/", "is_dir": true})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .call(
            Method::DELETE,
            "/__meta/entry?path=%2F&recursive=true",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f.call(Method::PUT, "/", Body::from("x")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // No writes happened.
    assert!(
        f.store
            .list("/", &kelp_filer::store::ListOpts::first(10))
            .unwrap()
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn test_router_meta_entry_round_trip_creates_parents() {
    let f = filer();
    let entry = json!({
        "full_path": "/topics/ns/t/p0000/00000000000000000000.seg",
        "mode": 420,
        "mtime_ms": 1234,
        "size": 10,
        "mime": "application/x-kelp-segment",
        "chunks": [chunk("3,01637037d6", 0, 10)],
        "extended": {"offset_min": "0", "offset_max": "6", "trace_id": "abc"},
        "version": 99
    });
    let r = put_entry(&f, entry.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let stored: Entry = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(stored.version, 1, "the filer assigns versions");
    assert_eq!(stored.chunks[0].fid, "3,01637037d6");
    assert_eq!(stored.extended["trace_id"], "abc");

    let r = f
        .call(
            Method::GET,
            "/__meta/entry?path=%2Ftopics%2Fns%2Ft%2Fp0000%2F00000000000000000000.seg",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let got: Entry = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(got, stored);
    for parent in [
        "/topics",
        "/topics/ns",
        "/topics/ns/t",
        "/topics/ns/t/p0000",
    ] {
        let e = f
            .store
            .get(parent)
            .unwrap()
            .unwrap_or_else(|| panic!("{parent} missing"));
        assert!(e.is_dir, "{parent}");
    }
    // The root answers as a directory.
    let r = f
        .call(Method::GET, "/__meta/entry?path=%2F", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["is_dir"], true);

    // Replacing bumps the version; size defaults to the chunks' end.
    let r = put_entry(&f, json!({"full_path": "/topics/ns/t/p0000/00000000000000000000.seg", "chunks": [chunk("3,01637037d6", 0, 10), chunk("3,02637037d6", 10, 5)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(r.json()["size"], 15);
}

#[tokio::test]
async fn test_router_conflicts_are_409() {
    let f = filer();
    put_file_entry(&f, "/f").await;
    // A file cannot be a parent.
    let r = put_entry(&f, json!({"full_path": "/f/x"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "not_a_directory");
    // A directory cannot replace a file, nor a file a directory.
    let r = put_entry(&f, json!({"full_path": "/f", "is_dir": true})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    put_file_entry(&f, "/d/inner").await;
    let r = put_entry(&f, json!({"full_path": "/d"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "is_a_directory");
    // Uploading a file over a directory, or under a file.
    let r = f.call(Method::PUT, "/d", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "is_a_directory");
    let r = f.call(Method::POST, "/f/y", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "not_a_directory");
    // Non-recursive delete of a non-empty directory.
    let r = f.call(Method::DELETE, "/d", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "dir_not_empty");
    let r = f
        .call(Method::DELETE, "/__meta/entry?path=%2Fd", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Rename onto an existing path.
    let r = f.call(Method::POST, "/f?mv.from=/d", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "already_exists");
    // Rename into itself.
    let r = f
        .call(Method::POST, "/d/inner2/x?mv.from=/d", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A directory with chunks is malformed; so are overlapping chunks.
    let r = put_entry(
        &f,
        json!({"full_path": "/bad", "is_dir": true, "chunks": [chunk("1,0100000001", 0, 1)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_entry");
    let r = put_entry(&f, json!({"full_path": "/bad", "chunks": [chunk("1,0100000001", 0, 4), chunk("1,0200000001", 2, 4)]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_entry");
    let r = put_entry(
        &f,
        json!({"full_path": "/bad", "size": 2, "chunks": [chunk("1,0100000001", 0, 4)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn test_router_parent_fence_refuses_writes_under_a_stale_token() {
    let f = filer();
    let dir = |epoch: &str| json!({"entry": {"full_path": "/t/p0000", "is_dir": true, "extended": {"owner_epoch": epoch}}});
    let seg = |name: &str, epoch: &str| {
        json!({"entry": {"full_path": format!("/t/p0000/{name}")}, "expect": "absent",
               "parent_expect": {"key": "owner_epoch", "value": epoch}})
    };
    let r = f.json(Method::PUT, "/__meta/entry", dir("1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = f.json(Method::PUT, "/__meta/entry", seg("a", "1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Another owner takes the directory over: the old token no longer writes below it.
    let r = f.json(Method::PUT, "/__meta/entry", dir("2")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = f.json(Method::PUT, "/__meta/entry", seg("b", "1")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.code(), "fenced");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("owner_epoch=2")
    );
    let r = f
        .call(Method::GET, "/__meta/entry?path=/t/p0000/b", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was written");
    let r = f.json(Method::PUT, "/__meta/entry", seg("b", "2")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // A parent that does not exist holds no token.
    let r = f.json(Method::PUT, "/__meta/entry", json!({"entry": {"full_path": "/u/x"}, "parent_expect": {"key": "owner_epoch", "value": "1"}})).await;
    assert_eq!(r.code(), "fenced");
}

#[tokio::test]
async fn test_router_preconditions_are_412() {
    let f = filer();
    let body = |expect: serde_json::Value| json!({"entry": {"full_path": "/p"}, "expect": expect});
    let r = f
        .json(Method::PUT, "/__meta/entry", body(json!({"version": 1})))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.code(), "precondition_failed");
    let r = f
        .json(Method::PUT, "/__meta/entry", body(json!("absent")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["version"], 1);
    let r = f
        .json(Method::PUT, "/__meta/entry", body(json!("absent")))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = f
        .json(Method::PUT, "/__meta/entry", body(json!({"version": 7})))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = f
        .json(Method::PUT, "/__meta/entry", body(json!({"version": 1})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 2);
    // Concurrent writers expecting the same version: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let router = f.router.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"entry": {"full_path": "/p", "extended": {"w": i.to_string()}}, "expect": {"version": 2}});
            let req = Request::builder()
                .method(Method::PUT)
                .uri("/__meta/entry")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap().status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(f.store.get("/p").unwrap().unwrap().version, 3);
}

#[tokio::test]
async fn test_router_lists_and_pages() {
    let f = filer();
    for i in 0..25 {
        put_file_entry(&f, &format!("/dir/f{i:02}")).await;
    }
    put_file_entry(&f, "/dirx/other").await;

    let list = |q: &str| {
        let uri = format!("/__meta/list?{q}");
        let f = &f;
        async move {
            let r = f.call(Method::GET, &uri, Body::empty()).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {:?}", r.body);
            let l: ListResponse = serde_json::from_slice(&r.body).unwrap();
            let names: Vec<String> = l
                .entries
                .iter()
                .map(|e| e.full_path.rsplit('/').next().unwrap().to_owned())
                .collect();
            (names, l.has_more)
        }
    };
    let (names, more) = list("dir=%2Fdir&limit=3").await;
    assert_eq!(names, ["f00", "f01", "f02"]);
    assert!(more);
    let (names, _) = list("dir=%2Fdir&limit=3&start=f02").await;
    assert_eq!(names, ["f03", "f04", "f05"]);
    let (names, _) = list("dir=%2Fdir&limit=2&start=f02&inclusive=true").await;
    assert_eq!(names, ["f02", "f03"]);
    let (names, more) = list("dir=%2Fdir&limit=2&reverse=true").await;
    assert_eq!(names, ["f24", "f23"]);
    assert!(more);
    let (names, _) = list("dir=%2Fdir&limit=2&reverse=true&start=f10").await;
    assert_eq!(names, ["f09", "f08"]);
    let (names, more) = list("dir=%2Fdir").await;
    assert_eq!(names.len(), 25);
    assert!(!more);
    let (names, _) = list("dir=%2F").await;
    assert_eq!(names, ["dir", "dirx"]);
    // A missing directory lists as empty.
    let (names, more) = list("dir=%2Fnope").await;
    assert!(names.is_empty() && !more);
    let r = f
        .call(
            Method::GET,
            "/__meta/list?dir=%2Fdir&limit=0",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .call(
            Method::GET,
            "/__meta/list?dir=%2Fdir&limit=x",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .call(Method::GET, "/__meta/list?dir=%2Fdir%2Ff00", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .call(
            Method::GET,
            "/__meta/list?dir=%2Fdir&bogus=1",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The SeaweedFS-style listing pages with lastFileName.
    let mut seen = Vec::new();
    let mut last = String::new();
    loop {
        let uri = format!("/dir/?limit=10&lastFileName={last}");
        let r = f
            .send(
                Request::get(&uri)
                    .header("accept", "application/json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let l: SeaweedListing = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(l.path, "/dir");
        assert_eq!(l.limit, 10);
        seen.extend(l.entries.iter().flatten().map(|e| e.full_path.clone()));
        if !l.should_display_load_more {
            break;
        }
        last = l.last_file_name;
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[0], "/dir/f00");
    assert_eq!(seen[24], "/dir/f24");
    // Without the trailing slash, a directory path lists too; the root lists.
    let r = f.call(Method::GET, "/dir", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Entries"].as_array().unwrap().len(), 25);
    let r = f.call(Method::GET, "/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Entries"].as_array().unwrap().len(), 2);
    let r = f.call(Method::GET, "/?limit=1", Body::empty()).await;
    assert_eq!(r.json()["ShouldDisplayLoadMore"], true);
    assert_eq!(r.json()["LastFileName"], "dir");
    // A file path with a trailing slash is not a directory.
    let r = f.call(Method::GET, "/dir/f00/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// The file API answers in SeaweedFS's shapes (issue 17); Kelp's own stays on `/__meta/`.
#[tokio::test]
async fn test_router_file_api_speaks_seaweedfs_shapes() {
    let f = filer();
    let r = put_entry(
        &f,
        json!({"full_path": "/sw/a.bin", "mime": "text/plain", "size": 10, "mtime_ms": 1500,
               "chunks": [chunk("3,01637037d6", 0, 4), chunk("4,02637037d6", 4, 6)],
               "extended": {"k": "v"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = f.call(Method::POST, "/sw/empty", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = put_entry(&f, json!({"full_path": "/sw/sub", "is_dir": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = f.call(Method::GET, "/sw/?limit=1", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let l = r.json();
    assert_eq!(l["Path"], "/sw");
    assert_eq!(l["Limit"], 1);
    assert_eq!(l["LastFileName"], "a.bin");
    assert_eq!(l["ShouldDisplayLoadMore"], true);
    assert_eq!(l["EmptyFolder"], false);
    let e = &l["Entries"][0];
    assert_eq!(e["FullPath"], "/sw/a.bin");
    assert_eq!(e["FileSize"], 10);
    assert_eq!(e["Mime"], "text/plain");
    assert_eq!(e["Mode"], 0o644);
    assert_eq!(e["Mtime"], "1970-01-01T00:00:01.5Z");
    assert_eq!(e["Extended"]["k"], "dg==");
    assert_eq!(e["chunks"][0]["file_id"], "3,01637037d6");
    assert!(e["chunks"][0].get("offset").is_none());
    assert_eq!(e["chunks"][1]["offset"], 4);
    assert_eq!(e["chunks"][1]["size"], 6);
    assert_eq!(e["chunks"][1]["e_tag"], "e");
    assert_eq!(e["chunks"][1]["fid"]["volume_id"], 4);
    // Directories carry Go's os.ModeDir bit; the root's Path is "".
    let r = f
        .call(Method::GET, "/sw/?lastFileName=empty", Body::empty())
        .await;
    let d = &r.json()["Entries"][0];
    assert_eq!(d["FullPath"], "/sw/sub");
    assert_eq!(d["Mode"], (1u64 << 31) | 0o755);
    assert!(d.get("chunks").is_none());
    let r = f.call(Method::GET, "/", Body::empty()).await;
    assert_eq!(r.json()["Path"], "");
    // An empty page: Entries null, EmptyFolder, LastFileName kept.
    let r = f
        .call(Method::GET, "/sw/?lastFileName=zzz", Body::empty())
        .await;
    assert_eq!(r.json()["Entries"], serde_json::Value::Null);
    assert_eq!(r.json()["EmptyFolder"], true);
    assert_eq!(r.json()["LastFileName"], "zzz");
    // ?metadata=true: the entry instead of the content; ?pretty indents.
    let r = f
        .call(
            Method::GET,
            "/sw/a.bin?metadata=true&pretty=y",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with(b"{\n  \""), "{:?}", r.body);
    assert_eq!(r.json()["FullPath"], "/sw/a.bin");
    assert_eq!(r.json()["chunks"].as_array().unwrap().len(), 2);
    let r = f
        .call(Method::GET, "/sw/sub?metadata=true", Body::empty())
        .await;
    assert_eq!(r.json()["Mode"], (1u64 << 31) | 0o755);
    let r = f
        .call(Method::GET, "/sw/a.bin/?metadata=true", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Kelp's shape is unchanged on /__meta/.
    let r = f
        .call(
            Method::GET,
            "/__meta/entry?path=%2Fsw%2Fa.bin",
            Body::empty(),
        )
        .await;
    assert_eq!(r.json()["full_path"], "/sw/a.bin");
    assert_eq!(r.json()["chunks"][1]["fid"], "4,02637037d6");
}

#[tokio::test]
async fn test_router_missing_things_are_404() {
    let f = filer();
    for (method, uri) in [
        (Method::GET, "/__meta/entry?path=%2Fmissing"),
        (Method::DELETE, "/__meta/entry?path=%2Fmissing"),
        (Method::GET, "/missing"),
        (Method::HEAD, "/missing"),
        (Method::GET, "/missing/"),
        (Method::DELETE, "/missing"),
        (Method::POST, "/dst?mv.from=/missing"),
    ] {
        let r = f.call(method.clone(), uri, Body::empty()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
        if method != Method::HEAD {
            assert_eq!(r.code(), "not_found");
        }
    }
    let r = f.call(Method::PATCH, "/__meta/list", Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn test_router_malformed_requests_are_400() {
    let f = filer();
    let send = |body: &'static str, ct: Option<&'static str>| {
        let mut b = Request::builder().method(Method::PUT).uri("/__meta/entry");
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        f.send(b.body(Body::from(body)).unwrap())
    };
    for (body, ct) in [
        ("{", Some("application/json")),
        ("[]", Some("application/json")),
        ("{\"entry\": {}}", Some("application/json")),
        ("{\"entry\": {\"full_path\": 5}}", Some("application/json")),
        (
            "{\"entry\": {\"full_path\": \"/x\"}, \"extra\": 1}",
            Some("application/json"),
        ),
        (
            "{\"entry\": {\"full_path\": \"/x\"}, \"expect\": \"sometimes\"}",
            Some("application/json"),
        ),
        ("{\"entry\": {\"full_path\": \"/x\"}}", None),
        ("\u{0}\u{1}", Some("application/json")),
    ] {
        let r = send(body, ct).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {:?}", r.body);
        assert!(!r.code().is_empty());
    }
    let r = f.call(Method::GET, "/__meta/entry", Body::empty()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_query");
    let r = f
        .call(Method::DELETE, "/x?recursive=maybe", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .send(
            Request::put("/up")
                .header("content-type", "multipart/form-data; boundary=XX")
                .body(Body::from("garbage"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
}

#[tokio::test]
async fn test_router_empty_file_upload_read_head_range_delete() {
    let f = filer();
    let r = f
        .send(
            Request::put("/docs/empty.txt")
                .header("content-type", "text/plain")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // As SeaweedFS answers an empty upload: `size` is omitted when 0.
    assert_eq!(r.json(), json!({"name": "empty.txt"}));
    let e = f.store.get("/docs/empty.txt").unwrap().unwrap();
    assert!(e.chunks.is_empty());
    assert_eq!(e.mime, "text/plain");
    assert!(f.store.get("/docs").unwrap().unwrap().is_dir);

    let r = f.call(Method::GET, "/docs/empty.txt", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["content-length"], "0");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert!(r.headers.contains_key("etag"));
    let r = f.call(Method::HEAD, "/docs/empty.txt", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .send(
            Request::get("/docs/empty.txt")
                .header("range", "bytes=0-")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers["content-range"], "bytes */0");

    // Overwrite bumps the version.
    let r = f.call(Method::POST, "/docs/empty.txt", Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(f.store.get("/docs/empty.txt").unwrap().unwrap().version, 2);

    // Multipart into a directory path takes the part's file name.
    let body = "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.bin\"\r\nContent-Type: application/x-test\r\n\r\n\r\n--XX--\r\n";
    let r = f
        .send(
            Request::post("/docs/")
                .header("content-type", "multipart/form-data; boundary=XX")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.json()["name"], "m.bin");
    assert_eq!(
        f.store.get("/docs/m.bin").unwrap().unwrap().mime,
        "application/x-test"
    );
    // A raw body cannot target a directory path.
    let r = f.call(Method::PUT, "/docs/", Body::empty()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = f
        .call(Method::DELETE, "/docs/empty.txt", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.call(Method::GET, "/docs/empty.txt", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .call(Method::DELETE, "/docs?recursive=true", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(f.store.get("/docs/m.bin").unwrap().is_none());
}

#[tokio::test]
async fn test_router_rename_moves_subtrees() {
    let f = filer();
    put_file_entry(&f, "/a/b/c").await;
    put_file_entry(&f, "/a/d").await;
    put_file_entry(&f, "/ab/keep").await;
    let r = f.call(Method::POST, "/x/y?mv.from=/a", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["full_path"], "/x/y");
    assert!(f.store.get("/a").unwrap().is_none());
    assert!(f.store.get("/a/b/c").unwrap().is_none());
    assert!(f.store.get("/x").unwrap().unwrap().is_dir);
    assert!(f.store.get("/x/y/b/c").unwrap().is_some());
    assert!(f.store.get("/x/y/d").unwrap().is_some());
    assert!(f.store.get("/ab/keep").unwrap().is_some());
    // A file rename.
    let r = f
        .call(Method::POST, "/renamed?mv.from=/x/y/d", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(f.store.get("/renamed").unwrap().is_some());
    assert!(f.store.get("/x/y/d").unwrap().is_none());
    // No chunks were queued for deletion by renames.
    assert!(f.store.pending_deletions(10).unwrap().is_empty());
}

#[tokio::test]
async fn test_router_orphaned_chunks_are_queued_in_the_same_write() {
    let f = filer();
    let r = put_entry(&f, json!({"full_path": "/g/f", "chunks": [chunk("1,0100000001", 0, 4), chunk("1,0200000001", 4, 4)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    // Replace keeping one chunk: only the dropped one is queued.
    let r = put_entry(
        &f,
        json!({"full_path": "/g/f", "chunks": [chunk("1,0100000001", 0, 4)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let pending: Vec<String> = f
        .store
        .pending_deletions(10)
        .unwrap()
        .into_iter()
        .map(|d| d.fid)
        .collect();
    assert_eq!(pending, ["1,0200000001"]);
    let r = f
        .call(
            Method::DELETE,
            "/__meta/entry?path=%2Fg&recursive=true",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let pending: Vec<String> = f
        .store
        .pending_deletions(10)
        .unwrap()
        .into_iter()
        .map(|d| d.fid)
        .collect();
    assert_eq!(pending, ["1,0100000001", "1,0200000001"]);
}

#[tokio::test]
async fn test_router_reads_with_unreachable_volumes_fail_cleanly() {
    let f = filer();
    put_entry(&f, json!({"full_path": "/r", "mime": "text/plain", "chunks": [chunk("1,0100000001", 0, 4), chunk("1,0200000001", 4, 4)]})).await;
    // HEAD and unsatisfiable ranges need no chunk.
    let r = f.call(Method::HEAD, "/r", Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-length"], "8");
    assert_eq!(r.headers["accept-ranges"], "bytes");
    let r = f
        .send(
            Request::get("/r")
                .header("range", "bytes=8-")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers["content-range"], "bytes */8");
    // A chunk that cannot be read is an error naming its fid, never short content.
    let r = f
        .send(
            Request::get("/r")
                .header("range", "bytes=5-6")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.code(), "chunk_unavailable");
    assert!(r.json()["error"].as_str().unwrap().contains("1,0200000001"));
    // A malformed fid is refused when the entry is written (it could never be read)...
    let r = put_entry(
        &f,
        json!({"full_path": "/bad-fid", "chunks": [chunk("nonsense", 0, 1)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "bad_entry");
    assert!(r.json()["error"].as_str().unwrap().contains("nonsense"));
    // ...and one already in the store is a 500 naming it.
    let mut batch = kelp_filer::store::Batch::new();
    batch.put(Entry {
        full_path: "/bad-fid".into(),
        size: 1,
        chunks: vec![serde_json::from_value(chunk("nonsense", 0, 1)).unwrap()],
        ..Entry::default()
    });
    f.store.write(&batch).unwrap();
    let r = f.call(Method::GET, "/bad-fid", Body::empty()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.json()["error"].as_str().unwrap().contains("nonsense"));
}

/// Found by scripts/api-fuzz.sh: an entry may not declare a file larger than the filer holds
/// (its holes would read as zeros, so a GET would stream up to 2^64 bytes).
#[tokio::test]
async fn test_router_put_entry_size_is_bounded() {
    let f = filer();
    let max = kelp_filer::Config::for_test("data/unused", "127.0.0.1:1").max_upload();
    let r = put_entry(&f, json!({"full_path": "/huge", "size": max + 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "bad_entry");
    let r = put_entry(&f, json!({"full_path": "/huge", "size": u64::MAX})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = put_entry(&f, json!({"full_path": "/big", "size": max})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn test_router_upload_without_master_writes_nothing() {
    let f = filer();
    let r = f
        .call(Method::PUT, "/u/file.bin", Body::from(vec![7u8; 1000]))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert!(f.store.get("/u/file.bin").unwrap().is_none());
    assert!(f.store.get("/u").unwrap().is_none());
    assert!(f.store.pending_deletions(10).unwrap().is_empty());
    let r = f.call(Method::GET, "/metrics", Body::empty()).await;
    assert!(String::from_utf8_lossy(&r.body).contains("filer_upload_errors_total 1"));
}

#[tokio::test]
async fn test_router_upload_over_the_limit_is_413() {
    let store = std::sync::Arc::new(kelp_filer::store::MemoryStore::new());
    let mut cfg = kelp_filer::Config::for_test("data/unused", "127.0.0.1:1");
    cfg.max_upload_mb = 1;
    let state = kelp_filer::AppState::new(&cfg, store.clone(), std::sync::Arc::default()).unwrap();
    let router = kelp_filer::router(state);
    let f = TestFiler { router, store };
    let r = f
        .call(Method::PUT, "/big", Body::from(vec![0u8; (1 << 20) + 1]))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    assert!(f.store.get("/big").unwrap().is_none());
}

fn pending(f: &TestFiler) -> Vec<String> {
    f.store
        .pending_deletions(100)
        .unwrap()
        .into_iter()
        .map(|d| d.fid)
        .collect()
}

const FX: &str = "1,0100000001";
const FY: &str = "1,0200000001";
const FZ: &str = "1,0300000001";

/// Issue 11 finding 8: two entries can never end up sharing a live chunk.
#[tokio::test]
async fn test_router_two_entries_cannot_share_a_chunk() {
    let f = filer();
    let r = put_entry(&f, json!({"full_path": "/a", "chunks": [chunk(FX, 0, 4)]})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = put_entry(&f, json!({"full_path": "/b", "chunks": [chunk(FY, 0, 4)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    // /b taking /a's chunk: 409 naming /a and the fid; /b unchanged.
    let r = put_entry(
        &f,
        json!({"full_path": "/b", "chunks": [chunk(FY, 0, 4), chunk(FX, 4, 4)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "chunk_in_use");
    let msg = r.json()["error"].as_str().unwrap().to_owned();
    assert!(msg.contains(FX) && msg.contains("/a"), "{msg}");
    assert_eq!(f.store.get("/b").unwrap().unwrap().chunks.len(), 1);
    // A new entry under a new directory: refused, and no parent was created either.
    let r = put_entry(
        &f,
        json!({"full_path": "/new/c", "chunks": [chunk(FX, 0, 4)]}),
    )
    .await;
    assert_eq!(r.code(), "chunk_in_use");
    assert!(f.store.get("/new").unwrap().is_none());
    // The owner re-committing its own chunk (the broker's idempotent commit) is allowed.
    let r = put_entry(&f, json!({"full_path": "/a", "chunks": [chunk(FX, 0, 4)]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["version"], 2);
    assert!(pending(&f).is_empty());
    // Deleting /b queues only /b's chunk; /a's stays live and owned.
    let r = f
        .call(Method::DELETE, "/__meta/entry?path=%2Fb", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(pending(&f), [FY]);
    assert_eq!(f.store.chunk_owners(FX).unwrap(), ["/a"]);
    // A chunk queued for deletion cannot be taken back.
    let r = put_entry(&f, json!({"full_path": "/b2", "chunks": [chunk(FY, 0, 4)]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "chunk_in_use");
    assert!(r.json()["error"].as_str().unwrap().contains("queued"));
}

/// Renames move ownership, replaces give chunks up, recursive deletes free everything.
#[tokio::test]
async fn test_router_chunk_owners_follow_rename_replace_and_recursive_delete() {
    let f = filer();
    let r = put_entry(
        &f,
        json!({"full_path": "/src/d/f", "chunks": [chunk(FX, 0, 4), chunk(FY, 4, 4)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .call(Method::POST, "/dst?mv.from=/src", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(f.store.chunk_owners(FX).unwrap(), ["/dst/d/f"]);
    assert!(pending(&f).is_empty());
    // The old path is free, but the chunk still is not.
    let r = put_entry(
        &f,
        json!({"full_path": "/src/d/f", "chunks": [chunk(FX, 0, 4)]}),
    )
    .await;
    assert_eq!(r.code(), "chunk_in_use");
    assert!(r.json()["error"].as_str().unwrap().contains("/dst/d/f"));
    // A file rename.
    let r = f
        .call(Method::POST, "/dst/g?mv.from=/dst/d/f", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(f.store.chunk_owners(FY).unwrap(), ["/dst/g"]);
    // Replace: FX given up (queued), FY kept, FZ taken.
    let r = put_entry(
        &f,
        json!({"full_path": "/dst/g", "chunks": [chunk(FY, 0, 4), chunk(FZ, 4, 4)]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(pending(&f), [FX]);
    assert!(f.store.chunk_owners(FX).unwrap().is_empty());
    assert_eq!(f.store.chunk_owners(FZ).unwrap(), ["/dst/g"]);
    // Recursive delete frees and queues the rest.
    let r = f
        .call(
            Method::DELETE,
            "/__meta/entry?path=%2Fdst&recursive=true",
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(pending(&f), [FX, FY, FZ]);
    for fid in [FX, FY, FZ] {
        assert!(f.store.chunk_owners(fid).unwrap().is_empty(), "{fid}");
    }
}
