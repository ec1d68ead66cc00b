//! Corrupted data on disk: a flipped byte in a `.dat` needle, a truncated `.dat`, a truncated
//! `.idx`. The volume server starts, reports what it found (metrics and logs) and never serves
//! a bad needle.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::Bytes;
use common::client::volume::BlobClient;
use common::ids::FileId;
use e2e::{Cluster, ClusterOptions};

async fn write(client: &BlobClient, n: usize) -> Vec<(FileId, Bytes)> {
    e2e::volume::upload_random(client, n, 3000).await
}

fn dat_and_idx(c: &Cluster) -> (PathBuf, PathBuf) {
    let dir = c.volumes[0].dir();
    (dir.join("1.dat"), dir.join("1.idx"))
}

async fn metric(c: &Cluster, name: &str) -> u64 {
    e2e::volume::metric(&c.volumes[0].url(), name).await
}

async fn status_of(c: &Cluster, fid: &FileId) -> (u16, String) {
    let r = e2e::get(format!("{}/{fid}", c.volumes[0].url()))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn given_a_flipped_byte_in_a_needle_should_never_serve_it() {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs = write(&client, 20).await;
    c.volumes[0].kill();
    // The flipped byte is reported as corruption (scrub, reads): a human must look at it.
    c.volumes[0].expect_errors("corrupt");
    let (dat, _) = dat_and_idx(&c);
    let bytes = std::fs::read(&dat).unwrap();
    let (bad_fid, bad_data) = &blobs[7];
    let at = bytes
        .windows(64)
        .position(|w| w == &bad_data[..64])
        .expect("needle data in the .dat")
        + 1000;
    let f = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    f.write_all_at(&[bytes[at] ^ 0x5a], at as u64).unwrap();
    drop(f);
    c.volumes[0].start().await.unwrap();
    // The start-up scrub reports it before anyone reads it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric(&c, "kelp_volume_crc_failures_total").await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the start-up scrub never reported the flipped byte"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = c.volumes[0].tail_log(50);
    assert!(
        log.lines()
            .any(|l| l.contains("scrub found a corrupt needle")
                && l.contains(&format!("{:x}", bad_fid.key))),
        "{log}"
    );
    let (status, body) = status_of(&c, bad_fid).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&bad_fid.to_string()),
        "the error names the file id: {body}"
    );
    for (fid, data) in blobs.iter().filter(|(f, _)| f != bad_fid) {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
}

#[tokio::test]
async fn given_a_truncated_dat_should_cut_the_torn_needle_and_keep_serving_the_rest() {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs = write(&client, 20).await;
    c.volumes[0].kill();
    let (dat, _) = dat_and_idx(&c);
    let len = std::fs::metadata(&dat).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dat)
        .unwrap()
        .set_len(len - 1500)
        .unwrap();
    c.volumes[0].start().await.unwrap();
    assert!(metric(&c, "kelp_volume_idx_rows_dropped_total").await >= 1);
    let (last, _) = blobs.last().unwrap();
    let (status, body) = status_of(&c, last).await;
    assert_eq!(
        status, 404,
        "a needle cut from the .dat is not served: {body}"
    );
    for (fid, data) in &blobs[..blobs.len() - 1] {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
    // The volume takes new writes after the cut.
    let more = write(&client, 3).await;
    for (fid, data) in &more {
        assert_eq!(&client.download(fid).await.unwrap(), data);
    }
}

#[tokio::test]
async fn given_a_truncated_idx_should_rebuild_it_from_the_dat() {
    let mut c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = c.blob_client();
    let blobs: HashMap<FileId, Bytes> = write(&client, 30).await.into_iter().collect();
    c.volumes[0].kill();
    let (_, idx) = dat_and_idx(&c);
    let len = std::fs::metadata(&idx).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len / 2 + 3)
        .unwrap();
    c.volumes[0].start().await.unwrap();
    assert!(metric(&c, "kelp_volume_needles_recovered_total").await >= 14);
    for (fid, data) in &blobs {
        assert_eq!(&client.download(fid).await.unwrap(), data, "{fid}");
    }
}
