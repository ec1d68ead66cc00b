//! Online vacuum: space given back, every live blob intact, also under SIGKILLs.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::volume::{BlobClient, WriteOptions};
use common::ids::FileId;
use e2e::volume::vacuum;
use e2e::{Cluster, ClusterOptions};
use futures::StreamExt;
use rand::Rng;

/// Uploads `n` random blobs of 2–4 KiB, 64 at a time.
async fn upload(client: &BlobClient, n: usize) -> HashMap<FileId, Bytes> {
    futures::stream::iter(0..n)
        .map(|_| async {
            let len = rand::rng().random_range(2048..4096);
            let data = e2e::volume::random(len);
            let w = client
                .upload(
                    &AssignQuery::default(),
                    data.clone(),
                    &WriteOptions::default(),
                )
                .await
                .expect("upload a blob");
            (w.fid, data)
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Deletes 70% of `blobs`; returns the deleted fids.
async fn delete_most(client: &BlobClient, blobs: &HashMap<FileId, Bytes>) -> Vec<FileId> {
    let doomed: Vec<FileId> = blobs
        .keys()
        .enumerate()
        .filter(|(i, _)| i % 10 < 7)
        .map(|(_, f)| *f)
        .collect();
    futures::stream::iter(doomed.clone())
        .map(|fid| async move { client.delete(&fid).await.expect("delete a blob") })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    doomed
}

fn dat_bytes(c: &Cluster) -> u64 {
    std::fs::read_dir(c.volumes[0].dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

async fn verify(c: &Cluster, blobs: &HashMap<FileId, Bytes>, deleted: &[FileId]) {
    let url = c.volumes[0].url();
    let http = e2e::http_client();
    let live: Vec<(&FileId, &Bytes)> = blobs.iter().filter(|(f, _)| !deleted.contains(f)).collect();
    futures::stream::iter(live)
        .map(|(fid, data)| {
            let (http, url) = (&http, &url);
            async move {
                let r = http.get(format!("{url}/{fid}")).send().await.unwrap();
                assert_eq!(r.status(), 200, "{fid}");
                assert_eq!(&r.bytes().await.unwrap(), data, "{fid} differs");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for fid in deleted.iter().step_by(7) {
        let r = http.get(format!("{url}/{fid}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "deleted {fid} is back");
    }
}

#[tokio::test]
async fn given_70_percent_deleted_when_vacuumed_should_give_space_back_and_keep_every_live_blob() {
    let c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs = upload(&client, 10_000).await;
    let deleted = delete_most(&client, &blobs).await;
    let live_bytes: u64 = blobs
        .iter()
        .filter(|(f, _)| !deleted.contains(f))
        .map(|(_, d)| d.len() as u64)
        .sum();
    let before = dat_bytes(&c);
    let r = vacuum(&c.volumes[0].url()).await.unwrap();
    assert!(!r.compacted.is_empty(), "{r:?}");
    let after = dat_bytes(&c);
    assert!(
        after <= live_bytes + live_bytes / 10,
        "after vacuum the .dat files hold {after} bytes for {live_bytes} live bytes (before: {before})"
    );
    verify(&c, &blobs, &deleted).await;
}

#[tokio::test]
async fn given_sigkills_during_vacuum_when_restarted_and_vacuumed_again_should_lose_nothing() {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs = upload(&client, 3000).await;
    let deleted = delete_most(&client, &blobs).await;
    for _ in 0..3 {
        let url = c.volumes[0].url();
        let run = tokio::spawn(async move { vacuum(&url).await });
        // A kill at a random moment of the vacuum (or after it): any moment must be safe.
        let ms = rand::rng().random_range(0..150);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        c.volumes[0].kill();
        let _ = run.await;
        c.volumes[0].start().await.unwrap();
        verify(&c, &blobs, &deleted).await;
    }
    let live_bytes: u64 = blobs
        .iter()
        .filter(|(f, _)| !deleted.contains(f))
        .map(|(_, d)| d.len() as u64)
        .sum();
    vacuum(&c.volumes[0].url()).await.unwrap();
    assert!(dat_bytes(&c) <= live_bytes + live_bytes / 10);
    verify(&c, &blobs, &deleted).await;
}
