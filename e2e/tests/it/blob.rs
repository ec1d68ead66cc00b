//! The blob store under real crashes: 1000 blobs survive a SIGKILLed volume server, deletes
//! stick, a SIGKILLed master never reissues a file id, and with replication 001 every blob
//! reads back from the survivor after one server is killed for good.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::volume::{BlobClient, WriteOptions};
use common::ids::FileId;
use e2e::{Cluster, ClusterOptions};
use rand::Rng;

fn random_blob(rng: &mut impl Rng) -> Bytes {
    // Mostly small, some up to 256 KiB, some empty.
    let len = match rng.random_range(0..10) {
        0 => 0,
        1..=6 => rng.random_range(1..4096),
        _ => rng.random_range(4096..256 * 1024),
    };
    let mut b = vec![0u8; len];
    rng.fill(&mut b[..]);
    Bytes::from(b)
}

/// Writes `n` random blobs, 16 at a time; returns fid → content.
async fn write_blobs(
    client: &BlobClient,
    n: usize,
    replication: Option<&str>,
) -> HashMap<FileId, Bytes> {
    let q = AssignQuery {
        replication: replication.map(str::to_owned),
        ..Default::default()
    };
    let mut rng = rand::rng();
    let blobs: Vec<Bytes> = (0..n).map(|_| random_blob(&mut rng)).collect();
    let opts = WriteOptions::default();
    let mut out = HashMap::new();
    for chunk in blobs.chunks(16) {
        let writes = chunk.iter().map(|b| client.upload(&q, b.clone(), &opts));
        for (b, w) in chunk.iter().zip(futures::future::join_all(writes).await) {
            let w = w.expect("acknowledged write");
            assert_eq!(w.size, b.len() as u64);
            assert!(
                out.insert(w.fid, b.clone()).is_none(),
                "fid {} handed out twice",
                w.fid
            );
        }
    }
    out
}

async fn assert_all_read_back(client: &BlobClient, blobs: &HashMap<FileId, Bytes>) {
    for (fid, want) in blobs {
        let got = client
            .download(fid)
            .await
            .unwrap_or_else(|e| panic!("read {fid}: {e}"));
        assert!(
            got == *want,
            "{fid}: read {} bytes that differ from the {} written",
            got.len(),
            want.len()
        );
    }
}

#[tokio::test]
async fn given_1000_blobs_when_volume_and_master_are_killed_should_lose_nothing_and_never_reissue_fids()
 {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let mut blobs = write_blobs(&client, 1000, None).await;

    // SIGKILL the volume server mid-life; everything acknowledged must come back.
    c.volumes[0].restart().await.unwrap();
    assert_all_read_back(&client, &blobs).await;
    let dat_files: Vec<_> = std::fs::read_dir(c.volumes[0].dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".dat") || n.ends_with(".idx"))
        .collect();
    assert!(
        dat_files.len() >= 2,
        "volume files under the data dir: {dat_files:?}"
    );

    // Delete 100; they 404 (also after another SIGKILL), the rest still read.
    let deleted: Vec<FileId> = blobs.keys().take(100).copied().collect();
    for fid in &deleted {
        client.delete(fid).await.unwrap();
    }
    c.volumes[0].restart().await.unwrap();
    for fid in &deleted {
        let err = client
            .download(fid)
            .await
            .expect_err("deleted blob still readable");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{fid}: {err}");
        blobs.remove(fid);
    }
    assert_all_read_back(&client, &blobs).await;

    // Graceful stop and start: same result.
    assert!(
        c.volumes[0].stop(Duration::from_secs(15)).await,
        "volume server exits 0 on SIGTERM"
    );
    c.volumes[0].start().await.unwrap();
    assert_all_read_back(&client, &blobs).await;

    // SIGKILL the master: fresh fids afterwards never collide with any handed out before.
    let before: HashSet<(u32, u64)> = blobs
        .keys()
        .chain(deleted.iter())
        .map(|f| (f.volume_id, f.key))
        .collect();
    c.master.restart().await.unwrap();
    c.wait_volumes_registered(1).await.unwrap();
    let fresh = write_blobs(&client, 200, None).await;
    for fid in fresh.keys() {
        assert!(
            !before.contains(&(fid.volume_id, fid.key)),
            "fid {fid} reissued after master restart"
        );
    }
    // And once more with SIGTERM.
    assert!(
        c.master.stop(Duration::from_secs(15)).await,
        "master exits 0 on SIGTERM"
    );
    c.master.start().await.unwrap();
    c.wait_volumes_registered(1).await.unwrap();
    let fresh2 = write_blobs(&client, 50, None).await;
    for fid in fresh2.keys() {
        assert!(
            !before.contains(&(fid.volume_id, fid.key)) && !fresh.contains_key(fid),
            "fid {fid} reissued"
        );
    }
    assert_all_read_back(&client, &fresh).await;
}

#[tokio::test]
async fn given_replication_001_when_one_volume_server_dies_for_good_should_read_everything_from_the_survivor()
 {
    let mut c = Cluster::start(ClusterOptions {
        volumes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = c.blob_client();
    let blobs = write_blobs(&client, 300, Some("001")).await;
    // Both servers hold every volume, needle for needle.
    let mut statuses = Vec::new();
    for v in &c.volumes {
        let s: serde_json::Value = e2e::get(format!("{}/status", v.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        statuses.push(s["Volumes"].clone());
    }
    assert_eq!(statuses[0], statuses[1], "replicas differ");
    assert!(statuses[0][0]["file_count"].as_u64().unwrap() >= 300);

    let mut dead = c.volumes.remove(0);
    let survivor = c.volumes[0].addr().to_string();
    dead.kill();
    assert_all_read_back(&client, &blobs).await;

    // With one copy gone, a 001 write is refused rather than acknowledged with one copy:
    // first by the survivor, whose forward to the dead replica fails...
    let fid = FileId::new(blobs.keys().next().unwrap().volume_id, 1 << 40, 7);
    let err = client
        .volumes
        .write(
            &survivor,
            &fid,
            Bytes::from_static(b"only one copy"),
            &WriteOptions::default(),
        )
        .await
        .expect_err("a 001 write with a dead replica must fail");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
    assert_eq!(err.code(), Some("replica_unavailable"), "{err}");
    // ...then by the master, once it sees the server dead: no volume can hold two copies.
    c.wait_volumes_registered(1).await.unwrap();
    let q = AssignQuery {
        replication: Some("001".into()),
        ..Default::default()
    };
    let err = client
        .upload(
            &q,
            Bytes::from_static(b"only one copy"),
            &WriteOptions::default(),
        )
        .await
        .expect_err("a 001 assign with one live server must fail");
    assert_eq!(err.code(), Some("no_writable_volume"), "{err}");
    // Unreplicated writes still work on the survivor.
    let single = write_blobs(&client, 10, None).await;
    assert_all_read_back(&client, &single).await;
    drop(dead);
}

#[tokio::test]
async fn given_a_running_service_when_a_second_one_uses_its_data_dir_should_refuse_to_start() {
    let c = Cluster::start(ClusterOptions::default()).await.unwrap();
    for (bin, dir) in [
        ("kelp-master", c.master.dir()),
        ("kelp-volume", c.volumes[0].dir()),
    ] {
        let out = std::process::Command::new(e2e::bin_dir().join(bin))
            .arg("--dir")
            .arg(dir)
            .args(["--port", "0"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} started on a locked data dir");
        assert!(
            stderr.contains("locked by another process"),
            "{bin}: {stderr}"
        );
    }
}
