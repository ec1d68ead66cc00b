//! Store tests: durability across reopen, recovery of torn and corrupt tails, lost `.idx`
//! rows, checksum failures on read, group commit.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::registry::Registry;

use super::needle::Needle;
use super::*;

fn metrics() -> Metrics {
    Metrics::new(&mut Registry::default())
}

fn blob(key: u64, len: usize) -> Needle {
    Needle {
        cookie: 0xabcd,
        key,
        data: Bytes::from(
            (0..len)
                .map(|i| (i as u64 * 31 + key) as u8)
                .collect::<Vec<u8>>(),
        ),
        ..Default::default()
    }
}

async fn put(v: &Volume, n: &Needle) {
    v.write(n, true, u64::MAX)
        .await
        .unwrap()
        .done()
        .await
        .unwrap();
}

fn open(dir: &Path) -> (Volume, RecoveryReport) {
    Volume::open(dir, 1, "", metrics()).unwrap()
}

#[tokio::test]
async fn test_store_write_read_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=50 {
        put(&v, &blob(k, k as usize * 13)).await;
    }
    assert_eq!(v.delete(7, 0xabcd, true).await.unwrap(), 7 * 13);
    drop(v);
    let (v, report) = open(dir.path());
    assert_eq!(report, RecoveryReport::default());
    for k in 1..=50 {
        if k == 7 {
            assert!(matches!(
                v.read(k, 0xabcd),
                Err(VolumeError::NeedleNotFound { .. })
            ));
        } else {
            assert_eq!(
                v.read(k, 0xabcd).unwrap().needle.data,
                blob(k, k as usize * 13).data
            );
        }
    }
    assert_eq!(v.info().file_count, 49);
    assert_eq!(v.info().max_file_key, 50);
}

#[tokio::test]
async fn test_store_wrong_cookie_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    put(&v, &blob(1, 10)).await;
    assert!(matches!(
        v.read(1, 0x1234),
        Err(VolumeError::NeedleNotFound { .. })
    ));
    assert!(v.delete(1, 0x1234, true).await.is_err());
    assert!(v.read(1, 0xabcd).is_ok());
}

#[tokio::test]
async fn test_store_lost_idx_rows_are_rebuilt_from_dat() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=20 {
        put(&v, &blob(k, 100)).await;
    }
    v.delete(3, 0xabcd, true).await.unwrap();
    drop(v);
    // Lose the last 6 idx rows (as if they never reached the disk) and tear another one.
    let idx = dir.path().join("1.idx");
    let len = std::fs::metadata(&idx).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len - 6 * 16 - 5)
        .unwrap();
    let (v, report) = open(dir.path());
    assert_eq!(report.needles_recovered, 7);
    assert_eq!(report.bytes_cut, 0);
    for k in 1..=20 {
        assert_eq!(v.read(k, 0xabcd).is_ok(), k != 3, "key {k}");
    }
}

#[tokio::test]
async fn test_store_torn_dat_tail_is_cut_and_writes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=5 {
        put(&v, &blob(k, 1000)).await;
    }
    let good_len = v.size();
    drop(v);
    // Half a needle appended after the last acknowledged one (a crash mid-append).
    let (rec, _) = blob(6, 1000).encode(1).unwrap();
    let dat = OpenOptions::new()
        .write(true)
        .open(dir.path().join("1.dat"))
        .unwrap();
    dat.write_all_at(&rec[..rec.len() / 2], good_len).unwrap();
    drop(dat);
    let (v, report) = open(dir.path());
    assert_eq!(report.bytes_cut, rec.len() as u64 / 2);
    assert_eq!(v.size(), good_len);
    assert!(v.read(6, 0xabcd).is_err());
    put(&v, &blob(7, 10)).await;
    drop(v);
    let (v, report) = open(dir.path());
    assert_eq!(report, RecoveryReport::default());
    assert!(v.read(7, 0xabcd).is_ok());
    assert!(v.read(5, 0xabcd).is_ok());
}

#[tokio::test]
async fn test_store_flipped_byte_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    put(&v, &blob(1, 500)).await;
    put(&v, &blob(2, 500)).await;
    // Flip a data byte of needle 1 behind the server's back.
    let dat = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("1.dat"))
        .unwrap();
    let mut b = [0u8; 1];
    dat.read_exact_at(&mut b, SUPERBLOCK_LEN + 40).unwrap();
    dat.write_all_at(&[b[0] ^ 0xff], SUPERBLOCK_LEN + 40)
        .unwrap();
    assert!(matches!(
        v.read(1, 0xabcd),
        Err(VolumeError::Corrupt { .. })
    ));
    assert!(v.read(2, 0xabcd).is_ok());
    drop(v);
    let (v, _) = open(dir.path());
    assert!(matches!(
        v.read(1, 0xabcd),
        Err(VolumeError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn test_store_truncated_dat_drops_rows_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=10 {
        put(&v, &blob(k, 200)).await;
    }
    let size = v.size();
    drop(v);
    OpenOptions::new()
        .write(true)
        .open(dir.path().join("1.dat"))
        .unwrap()
        .set_len(size - 300)
        .unwrap();
    let (v, report) = open(dir.path());
    assert!(report.idx_rows_dropped >= 1);
    assert!(v.read(10, 0xabcd).is_err());
    assert!(v.read(1, 0xabcd).is_ok());
}

#[tokio::test]
async fn test_store_concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), m.clone()).unwrap();
    let v = Arc::new(v);
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                put(&v, &blob(1 + t * 100 + i, 64)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let writes = m.writes.get();
    let syncs = m.fdatasyncs.get();
    assert_eq!(writes, 640);
    assert!(
        syncs < writes,
        "group commit: {syncs} syncs for {writes} writes"
    );
}

#[tokio::test]
async fn test_store_load_quarantines_unreadable_volume() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::load(dir.path(), metrics()).unwrap();
        store.allocate(1, "", Replication::default()).unwrap();
        store.allocate(2, "pics", Replication::default()).unwrap();
    }
    std::fs::write(dir.path().join("1.dat"), b"bad").unwrap();
    let store = Store::load(dir.path(), metrics()).unwrap();
    assert!(store.get(1).is_err());
    assert_eq!(store.get(2).unwrap().collection, "pics");
    assert!(std::fs::metadata(dir.path().join("1.dat.corrupted")).is_ok());
}

#[tokio::test]
async fn test_store_scrub_reports_exactly_the_corrupt_needles() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=10 {
        put(&v, &blob(k, 300)).await;
    }
    assert!(v.scrub().is_empty());
    // Find needle 4 by its header (cookie, key) and flip a byte of its data.
    let mut header = 0xabcd_u32.to_be_bytes().to_vec();
    header.extend_from_slice(&4u64.to_be_bytes());
    let bytes = std::fs::read(dir.path().join("1.dat")).unwrap();
    let at = bytes.windows(12).position(|w| w == &header[..]).unwrap() + 16 + 4 + 100;
    let dat = OpenOptions::new()
        .write(true)
        .open(dir.path().join("1.dat"))
        .unwrap();
    dat.write_all_at(&[bytes[at] ^ 1], at as u64).unwrap();
    assert_eq!(v.scrub(), vec![4]);
}
