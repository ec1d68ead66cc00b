//! `run()` on `127.0.0.1:0` with RocksDB: serves, stops on cancel, and keeps its data.

use std::time::Duration;

use bytes::Bytes;
use common::api::filer::{Entry, Expect, ListQuery};
use common::client::HttpClient;
use common::client::filer::FilerClient;
use kelp_filer::Config;
use tokio_util::sync::CancellationToken;

async fn start(
    dir: &std::path::Path,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cfg = Config::for_test(dir, "127.0.0.1:1");
    let token = CancellationToken::new();
    let handle = tokio::spawn(kelp_filer::run(cfg, listener, token.clone()));
    (addr, token, handle)
}

#[tokio::test]
async fn test_run_serves_and_data_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let http = HttpClient::new(Duration::from_secs(5));

    let (addr, token, handle) = start(tmp.path()).await;
    let client = FilerClient::new(http.clone(), &addr);
    let entry = Entry {
        full_path: "/topics/ns/t/p0000/00000000000000000000.seg".to_owned(),
        chunks: vec![common::api::filer::Chunk {
            fid: "3,01637037d6".to_owned(),
            offset: 0,
            size: 3,
            etag: "x".to_owned(),
        }],
        ..Entry::default()
    };
    let stored = client
        .put_entry(&entry, Some(Expect::Absent))
        .await
        .unwrap();
    assert_eq!(stored.version, 1);
    let err = client
        .put_entry(&entry, Some(Expect::Absent))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("precondition_failed"));
    let up = client.put_file("/docs/empty", Bytes::new()).await.unwrap();
    assert_eq!(up.size, 0);
    assert!(client.get_file("/docs/empty").await.unwrap().is_empty());
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(tmp.path().join("meta").join("CURRENT").is_file());

    let (addr, token, handle) = start(tmp.path()).await;
    let client = FilerClient::new(http, &addr);
    let got = client.get_entry(&entry.full_path).await.unwrap().unwrap();
    assert_eq!(got, stored);
    let list = client
        .list(&ListQuery {
            dir: "/topics/ns/t/p0000".to_owned(),
            start: None,
            inclusive: false,
            limit: Some(10),
            reverse: true,
        })
        .await
        .unwrap();
    assert_eq!(list.entries.len(), 1);
    let listing = client.list_dir("/docs", None, 10).await.unwrap();
    assert_eq!(listing.entries.len(), 1);
    client.delete("/docs", true).await.unwrap();
    assert!(client.get_entry("/docs/empty").await.unwrap().is_none());
    client.rename("/topics", "/moved").await.unwrap();
    assert!(
        client
            .get_entry("/moved/ns/t/p0000/00000000000000000000.seg")
            .await
            .unwrap()
            .is_some()
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn test_run_create_entry_creates_once_then_returns_the_existing_entry() {
    use common::client::filer::Created;
    let tmp = tempfile::tempdir().unwrap();
    let (addr, token, handle) = start(tmp.path()).await;
    let client = FilerClient::new(HttpClient::new(Duration::from_secs(5)), &addr);
    let mut entry = Entry {
        full_path: "/topics/ns/t/topic.conf".to_owned(),
        ..Entry::default()
    };
    entry.extended.insert("partitions".into(), "3".into());
    let Created::New(first) = client.create_entry(&entry).await.unwrap() else {
        panic!("the first create must create");
    };
    entry.extended.insert("partitions".into(), "9".into());
    // A second create (a retry, or a rival) gets the stored entry back, unchanged.
    assert_eq!(
        client.create_entry(&entry).await.unwrap(),
        Created::Exists(first.clone())
    );
    assert_eq!(first.extended["partitions"], "3");
    token.cancel();
    handle.await.unwrap().unwrap();
}

/// Issue 11 finding 8, with RocksDB (whose index check is not under a store-wide lock):
/// concurrent writers naming one new chunk for different paths; exactly one wins each race.
#[tokio::test]
async fn test_run_concurrent_claims_of_one_chunk_have_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let http = HttpClient::new(Duration::from_secs(5));
    let (addr, token, handle) = start(tmp.path()).await;
    let client = FilerClient::new(http, &addr);
    let mut races = Vec::new();
    for i in 0..40u32 {
        let fid = format!("3,{:02x}637037d6", i + 1);
        for side in ["a", "b"] {
            let client = client.clone();
            let entry = Entry {
                full_path: format!("/race/{side}{i}"),
                chunks: vec![common::api::filer::Chunk {
                    fid: fid.clone(),
                    offset: 0,
                    size: 3,
                    etag: "x".to_owned(),
                }],
                ..Entry::default()
            };
            races.push(tokio::spawn(async move {
                (i, client.put_entry(&entry, None).await)
            }));
        }
    }
    let mut wins = vec![0u32; 40];
    for r in races {
        let (i, result) = r.await.unwrap();
        match result {
            Ok(_) => wins[i as usize] += 1,
            Err(e) => assert_eq!(e.code(), Some("chunk_in_use"), "{e}"),
        }
    }
    assert!(wins.iter().all(|w| *w == 1), "winners per chunk: {wins:?}");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `run()` with `--store etcd`: two filers started on one etcd share the namespace, `/readyz`
/// follows etcd (503 once it is gone), and the data outlives both filers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_run_on_etcd_shares_the_namespace_and_readyz_follows_etcd() {
    let etcd = testkit::etcd::Etcd::start();
    let http = HttpClient::new(Duration::from_secs(5)).with_attempts(1);
    let mut filers = Vec::new();
    for _ in 0..2 {
        let tmp = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut cfg = Config::for_test(tmp.path(), "127.0.0.1:1");
        cfg.store = kelp_filer::config::StoreKind::Etcd;
        cfg.etcd_endpoints = vec![etcd.endpoint().to_owned()];
        let token = CancellationToken::new();
        let handle = tokio::spawn(kelp_filer::run(cfg, listener, token.clone()));
        filers.push((tmp, addr, token, handle));
    }
    let ready = |addr: String| {
        let http = http.clone();
        async move {
            http.send(common::client::Call::new(
                axum::http::Method::GET,
                format!("http://{addr}/readyz"),
                "GET /readyz",
            ))
            .await
            .map(|r| r.status())
            .unwrap_or_else(|e| e.status().unwrap_or(axum::http::StatusCode::BAD_GATEWAY))
        }
    };
    for (_, addr, _, _) in &filers {
        let addr = addr.clone();
        testkit::eventually_async("filer ready on etcd", Duration::from_secs(20), || {
            let ready = ready(addr.clone());
            async move { ready.await.is_success().then_some(()) }
        })
        .await;
    }
    let a = FilerClient::new(http.clone(), &filers[0].1);
    let b = FilerClient::new(http.clone(), &filers[1].1);
    let entry = Entry {
        full_path: "/shared/x".to_owned(),
        ..Entry::default()
    };
    a.put_entry(&entry, Some(Expect::Absent)).await.unwrap();
    let err = b.put_entry(&entry, Some(Expect::Absent)).await.unwrap_err();
    assert_eq!(err.code(), Some("precondition_failed"));
    let up = b.put_file("/shared/empty", Bytes::new()).await.unwrap();
    assert_eq!(up.size, 0);
    assert!(a.get_file("/shared/empty").await.unwrap().is_empty());
    drop(etcd);
    let status = ready(filers[0].1.clone()).await;
    assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    for (_, _, token, handle) in filers {
        token.cancel();
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
