//! Durability faults beyond SIGKILL (issue 11), with the real `kelp-volume` binary:
//! - a stale `.idx` plus a corrupt record in the `.dat`: every acknowledged needle after the
//!   damage still reads back after a restart, and nothing is cut;
//! - a replicated delete whose replica is down and then back: the retried delete reaches the
//!   replica, both copies answer 404;
//! - a replicated write keeps its MIME type and last-modified on the replica: same ETag and
//!   Content-Type on both copies;
//! - a full disk (a 1 MiB tmpfs): writes get a 507 JSON error, every acknowledged blob reads
//!   back, before and after a restart (skipped with a message where mounting is not allowed).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::api::master::AssignQuery;
use common::client::volume::WriteOptions;
use e2e::volume::{metric, random, upload_random};
use e2e::{Cluster, ClusterOptions, ServiceHandle};

#[tokio::test]
async fn given_a_stale_idx_and_a_corrupt_record_when_restarted_should_serve_every_needle_after_the_damage()
 {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs = upload_random(&client, 30, 2000).await;
    c.volumes[0].kill();
    // The damaged region is reported as corruption at start-up.
    c.volumes[0].expect_errors("corrupt");
    let dir = c.volumes[0].dir().to_path_buf();
    let (dat, idx) = (dir.join("1.dat"), dir.join("1.idx"));
    // As after a power cut: the idx's durable prefix ends at the 5th needle...
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(5 * 16)
        .unwrap();
    // ...and a sector of the 12th needle's data went bad.
    let bytes = std::fs::read(&dat).unwrap();
    let (bad_fid, bad_data) = &blobs[11];
    let at = bytes
        .windows(64)
        .position(|w| w == &bad_data[..64])
        .expect("needle data in the .dat")
        + 500;
    let f = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    f.write_all_at(&[bytes[at] ^ 0x5a], at as u64).unwrap();
    drop(f);
    let dat_len = bytes.len() as u64;
    c.volumes[0].start().await.unwrap();
    let url = c.volumes[0].url();
    assert_eq!(metric(&url, "kelp_volume_corrupt_regions_total").await, 1);
    assert_eq!(metric(&url, "kelp_volume_bytes_cut_total").await, 0);
    assert_eq!(
        std::fs::metadata(&dat).unwrap().len(),
        dat_len,
        "nothing cut"
    );
    for (fid, data) in blobs.iter().filter(|(f, _)| f != bad_fid) {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
    let r = e2e::get(format!("{url}/{bad_fid}")).await.unwrap();
    assert!(r.status().is_client_error() || r.status().is_server_error());
    let log = c.volumes[0].tail_log(100);
    assert!(
        log.contains("corrupt region in the dat is followed by valid needles"),
        "{log}"
    );
}

async fn replicated_fid(c: &Cluster) -> (String, String, String) {
    let q = AssignQuery {
        replication: Some("001".into()),
        ..Default::default()
    };
    let a = c.blob_client().master.assign(&q).await.unwrap();
    let urls: Vec<String> = c.volumes.iter().map(|v| v.addr().to_string()).collect();
    let primary = a.url.clone();
    let replica = urls.into_iter().find(|u| *u != primary).unwrap();
    (a.fid, primary, replica)
}

#[tokio::test]
async fn given_replication_001_when_the_replica_is_down_during_a_delete_should_converge_on_retry() {
    let mut c = Cluster::start(ClusterOptions {
        volumes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let (fid, primary, replica) = replicated_fid(&c).await;
    let http = e2e::http_client();
    let r = http
        .post(format!("http://{primary}/{fid}"))
        .body("doomed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let ri = c
        .volumes
        .iter()
        .position(|v| v.addr().to_string() == replica)
        .unwrap();
    c.volumes[ri].kill();
    let r = http
        .delete(format!("http://{primary}/{fid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "a replica delete that failed is not acknowledged"
    );
    // The replica comes back; the client retries the delete on the primary, where the
    // needle is already tombstoned: the retry must still reach the replica.
    c.volumes[ri].start().await.unwrap();
    c.wait_volumes_registered(2).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .delete(format!("http://{primary}/{fid}"))
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            break;
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(
            std::time::Instant::now() < deadline,
            "delete never converged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for server in [&primary, &replica] {
        let r = http
            .get(format!("http://{server}/{fid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{server} still serves a deleted blob");
    }
    // A delete of a needle gone everywhere is a consistent 404.
    let r = http
        .delete(format!("http://{primary}/{fid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn given_replication_001_should_serve_the_same_etag_and_content_type_from_both_copies() {
    let c = Cluster::start(ClusterOptions {
        volumes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let (fid, primary, replica) = replicated_fid(&c).await;
    let http = e2e::http_client();
    let r = http
        .post(format!("http://{primary}/{fid}?name=a.json"))
        .header("content-type", "application/json")
        .body("{\"k\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut seen = Vec::new();
    for server in [&primary, &replica] {
        let r = http
            .get(format!("http://{server}/{fid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        seen.push((
            h["etag"].to_str().unwrap().to_owned(),
            h["content-type"].to_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(seen[0], seen[1], "primary and replica differ");
    assert_eq!(seen[0].1, "application/json");
}

/// A tmpfs mounted at a path, unmounted when dropped (after the service using it is).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn given_a_full_disk_should_answer_507_and_keep_every_acknowledged_blob() {
    let c = Cluster::start(ClusterOptions {
        volumes: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = c.root().join("volume-tmpfs");
    let Some(tmpfs) = Tmpfs::mount(&dir, "1m") else {
        return;
    };
    let mut v = ServiceHandle::new(
        c.root(),
        "volume-tmpfs",
        "kelp-volume",
        vec![
            "--master".into(),
            c.master.addr().to_string(),
            "--heartbeat-interval-ms".into(),
            "200".into(),
        ],
    );
    v.start().await.unwrap();
    c.wait_volumes_registered(1).await.unwrap();
    let client = c.blob_client();
    let mut acked = Vec::new();
    let mut full = None;
    for _ in 0..100 {
        let b = random(64 << 10);
        match client
            .upload(&AssignQuery::default(), b.clone(), &WriteOptions::default())
            .await
        {
            Ok(w) => acked.push((w.fid, b)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("a 1 MiB disk fills up");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(507), "{err}");
    assert_eq!(err.code(), Some("insufficient_storage"), "{err}");
    assert!(!acked.is_empty());
    // Reads keep working on the full disk...
    for (fid, data) in &acked {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
    // ...and every acknowledged blob survives a crash and a restart once the disk has room
    // again (the start-up itself writes a little: the address file).
    v.kill();
    let grown = Command::new("mount")
        .args(["-o", "remount,size=4m"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(grown.success());
    v.start().await.unwrap();
    for (fid, data) in &acked {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
    v.kill();
    drop(v);
    drop(tmpfs);
}
