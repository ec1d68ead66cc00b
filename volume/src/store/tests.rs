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

// ---- Issue 11: recovery never cuts an acknowledged byte -------------------------------------

/// Byte offset of needle `key`'s record in the `.dat` (found by its cookie and key).
fn offset_of(dir: &Path, key: u64) -> u64 {
    let mut header = 0xabcd_u32.to_be_bytes().to_vec();
    header.extend_from_slice(&key.to_be_bytes());
    let bytes = std::fs::read(dir.join("1.dat")).unwrap();
    let at = (SUPERBLOCK_LEN as usize..bytes.len())
        .step_by(8)
        .find(|&i| bytes[i..].starts_with(&header))
        .unwrap();
    at as u64
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

fn torn_copies(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".torn."))
        .collect()
}

/// The data length of needle `k` in these tests (varied, 50 to 749 bytes).
fn len_of(k: u64) -> usize {
    50 + (k as usize * 37) % 700
}

/// Writes needles 1..=n of varied sizes, acknowledged (fsynced).
async fn volume_with(dir: &Path, n: u64) -> Volume {
    let (v, _) = Volume::create(dir, 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=n {
        put(&v, &blob(k, len_of(k))).await;
    }
    v
}

fn assert_reads(v: &Volume, keys: impl IntoIterator<Item = u64>) {
    for k in keys {
        let got = v
            .read(k, 0xabcd)
            .unwrap_or_else(|e| panic!("needle {k}: {e}"));
        assert_eq!(got.needle.data, blob(k, len_of(k)).data, "needle {k}");
    }
}

#[tokio::test]
async fn test_recovery_skips_a_corrupt_body_after_a_stale_idx_and_keeps_later_needles() {
    let dir = tempfile::tempdir().unwrap();
    drop(volume_with(dir.path(), 30).await);
    let dat = dir.path().join("1.dat");
    let dat_len = std::fs::metadata(&dat).unwrap().len();
    // The idx's durable prefix ends at needle 10 (a power cut), and needle 15 has a flipped
    // byte in its body: every needle after it was acknowledged and must survive.
    set_len(&dir.path().join("1.idx"), 10 * 16);
    let at = offset_of(dir.path(), 15) + 16 + 4 + 3;
    let b = std::fs::read(&dat).unwrap()[at as usize];
    write_at(&dat, at, &[b ^ 0x20]);
    let (v, report) = open(dir.path());
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(report.corrupt_regions, 1);
    assert_eq!(report.needles_recovered, 19);
    assert!(torn_copies(dir.path()).is_empty());
    assert_eq!(
        std::fs::metadata(&dat).unwrap().len(),
        dat_len,
        "nothing cut"
    );
    assert_reads(&v, (1..=30).filter(|k| *k != 15));
    assert!(v.read(15, 0xabcd).is_err());
    // Writes continue after the last needle, and a second reopen finds everything again
    // without re-scanning the damage.
    put(&v, &blob(31, 10)).await;
    drop(v);
    let (v, report) = open(dir.path());
    assert_eq!(report.corrupt_regions, 0);
    assert_eq!(report.needles_recovered, 0);
    assert_reads(&v, (1..=30).filter(|k| *k != 15));
    assert!(v.read(31, 0xabcd).is_ok());
}

#[tokio::test]
async fn test_recovery_resyncs_past_a_garbage_header_at_any_aligned_offset() {
    let dir = tempfile::tempdir().unwrap();
    drop(volume_with(dir.path(), 20).await);
    let dat = dir.path().join("1.dat");
    // No idx at all, and needles 5 and 6 are overwritten by garbage from the middle of 5
    // (header included) to the middle of 6: the scan must find needle 7 by searching.
    set_len(&dir.path().join("1.idx"), 0);
    let from = offset_of(dir.path(), 5);
    let to = offset_of(dir.path(), 6) + 40;
    write_at(&dat, from, &vec![0xa5u8; (to - from) as usize]);
    let (v, report) = open(dir.path());
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(report.corrupt_regions, 1);
    assert_eq!(report.bytes_skipped, offset_of(dir.path(), 7) - from);
    assert_reads(&v, (1..=20).filter(|k| *k != 5 && *k != 6));
}

#[tokio::test]
async fn test_recovery_drops_idx_rows_that_do_not_match_their_needle_and_rescans() {
    for (field, byte) in [("key", 7usize), ("offset", 11), ("size", 15)] {
        let dir = tempfile::tempdir().unwrap();
        drop(volume_with(dir.path(), 20).await);
        let idx = dir.path().join("1.idx");
        // Flip one bit of row 8 (needle 9): the scan must not start inside a needle.
        let mut rows = std::fs::read(&idx).unwrap();
        rows[8 * 16 + byte] ^= 0x01;
        std::fs::write(&idx, &rows).unwrap();
        let (v, report) = open(dir.path());
        assert_eq!(report.idx_rows_dropped, 12, "{field}");
        assert_eq!(report.needles_recovered, 12, "{field}");
        assert_eq!(report.bytes_cut, 0, "{field}");
        assert_eq!(report.corrupt_regions, 0, "{field}");
        assert_reads(&v, 1..=20);
        drop(v);
        // The rebuilt idx is valid again.
        let (_, report) = open(dir.path());
        assert_eq!(report.idx_rows_dropped, 0, "{field}");
    }
}

#[tokio::test]
async fn test_recovery_copies_a_torn_tail_aside_before_cutting_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume_with(dir.path(), 5).await;
    let good_len = v.size();
    drop(v);
    let (rec, _) = blob(6, 1000).encode(1).unwrap();
    let torn = &rec[..rec.len() / 2 + 3];
    write_at(&dir.path().join("1.dat"), good_len, torn);
    let (v, report) = open(dir.path());
    assert_eq!(report.bytes_cut, torn.len() as u64);
    let copies = torn_copies(dir.path());
    assert_eq!(copies.len(), 1);
    assert_eq!(report.torn_copy.as_ref(), Some(&copies[0]));
    assert_eq!(std::fs::read(&copies[0]).unwrap(), torn);
    assert_eq!(v.size(), good_len);
    assert_reads(&v, 1..=5);
}

#[tokio::test]
async fn test_recovery_io_error_while_scanning_cuts_nothing_and_opens_read_only() {
    let dir = tempfile::tempdir().unwrap();
    drop(volume_with(dir.path(), 20).await);
    let dat = dir.path().join("1.dat");
    let idx = dir.path().join("1.idx");
    set_len(&idx, 5 * 16);
    let dat_len = std::fs::metadata(&dat).unwrap().len();
    let bad_sector = offset_of(dir.path(), 12) + 100;
    let faults = Arc::new(faults::Faults::default());
    faults.fail_reads_from(bad_sector);
    let m = metrics();
    let (v, report) = Volume::open_with(dir.path(), 1, "", m.clone(), faults).unwrap();
    assert!(report.io_error.is_some(), "{report:?}");
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(m.recovery_io_errors.get(), 1);
    assert_eq!(m.volumes_failed.get(), 1);
    assert!(v.failure().is_some());
    assert!(
        v.info().read_only,
        "reported read-only to the master and /status"
    );
    assert!(matches!(
        v.write(&blob(99, 10), true, u64::MAX).await,
        Err(VolumeError::Poisoned { .. })
    ));
    // Needles before the bad sector are served; nothing on disk changed.
    assert_reads(&v, 1..=11);
    drop(v);
    assert_eq!(std::fs::metadata(&dat).unwrap().len(), dat_len);
    assert_eq!(std::fs::metadata(&idx).unwrap().len(), 5 * 16);
    assert!(torn_copies(dir.path()).is_empty());
    // Once the disk reads again, every needle is back.
    let (v, report) = open(dir.path());
    assert_eq!(report.io_error, None);
    assert_reads(&v, 1..=20);
}

#[tokio::test]
async fn test_recovery_io_error_while_validating_the_idx_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    drop(volume_with(dir.path(), 20).await);
    let idx = dir.path().join("1.idx");
    let idx_len = std::fs::metadata(&idx).unwrap().len();
    let faults = Arc::new(faults::Faults::default());
    faults.fail_reads_from(offset_of(dir.path(), 8));
    let (v, report) = Volume::open_with(dir.path(), 1, "", metrics(), faults).unwrap();
    assert!(report.io_error.is_some());
    assert!(v.info().read_only);
    // The rows it could not check are kept (every read verifies the needle's CRC).
    assert_reads(&v, 1..=20);
    drop(v);
    assert_eq!(std::fs::metadata(&idx).unwrap().len(), idx_len);
}

#[tokio::test]
async fn test_store_enospc_fails_the_write_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume_with(dir.path(), 10).await;
    let size = v.size();
    v.faults().fail_writes(std::io::ErrorKind::StorageFull);
    let err = v
        .write(&blob(11, 100), true, u64::MAX)
        .await
        .unwrap()
        .done()
        .await
        .unwrap_err();
    assert!(matches!(err, VolumeError::DiskFull { .. }), "{err}");
    assert_eq!(v.size(), size);
    assert_reads(&v, 1..=10);
    v.faults().heal_writes();
    put(&v, &blob(12, len_of(12))).await;
    drop(v);
    let (v, report) = open(dir.path());
    assert_eq!(report, RecoveryReport::default());
    assert_reads(&v, (1..=10).chain([12]));
    assert!(v.read(11, 0xabcd).is_err());
}

/// Simulates a power cut: every byte written after the last successful fsync of each file is
/// dropped; every acknowledged needle must read back.
#[tokio::test]
async fn test_store_power_cut_keeps_every_acknowledged_needle() {
    for stale_idx in [None, Some(3 * 16 + 5), Some(usize::MAX)] {
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
        let v = Arc::new(v);
        v.faults().record_syncs();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let v = v.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10u64 {
                    let k = 1 + t * 10 + i;
                    put(&v, &blob(k, len_of(k))).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        v.delete(40, 0xabcd, true).await.unwrap();
        // Written but not synced (not acknowledged as durable): a power cut may drop it.
        v.write(&blob(1000, 500), false, u64::MAX)
            .await
            .unwrap()
            .done()
            .await
            .unwrap();
        let dat_synced = v.faults().last_synced(faults::SyncedFile::Dat).unwrap();
        let idx_synced = v.faults().last_synced(faults::SyncedFile::Idx).unwrap_or(0);
        assert!(
            dat_synced < v.size(),
            "the unsynced needle lies past the sync point"
        );
        drop(v);
        set_len(&dir.path().join("1.dat"), dat_synced);
        let idx = dir.path().join("1.idx");
        let idx_len = std::fs::metadata(&idx).unwrap().len();
        match stale_idx {
            // Only what was synced: here nothing, the idx is never synced by writes.
            None => set_len(&idx, idx_synced),
            // A stale idx cut mid-row.
            Some(n) if n != usize::MAX => set_len(&idx, n as u64),
            // The whole unsynced idx survived, including the row of the lost needle.
            Some(_) => assert_eq!(idx_len, 82 * 16),
        }
        let (v, report) = open(dir.path());
        assert_eq!(report.bytes_cut, 0, "{stale_idx:?}");
        assert_eq!(report.corrupt_regions, 0, "{stale_idx:?}");
        assert_reads(&v, (1..=80).filter(|k| *k != 40));
        assert!(v.read(40, 0xabcd).is_err(), "the acknowledged delete holds");
        assert!(v.read(1000, 0xabcd).is_err());
    }
}

#[tokio::test]
async fn test_store_flipped_replication_byte_quarantines_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::load(dir.path(), metrics()).unwrap();
        store.allocate(1, "", "001".parse().unwrap()).unwrap();
        store.allocate(2, "", "001".parse().unwrap()).unwrap();
    }
    // Regression for issue 11, finding 9: 001 must not silently become 000.
    let dat = dir.path().join("1.dat");
    let b = std::fs::read(&dat).unwrap()[1];
    write_at(&dat, 1, &[b ^ 0x01]);
    let store = Store::load(dir.path(), metrics()).unwrap();
    assert!(store.get(1).is_err());
    assert!(std::fs::metadata(dir.path().join("1.dat.corrupted")).is_ok());
    assert_eq!(store.get(2).unwrap().replication, "001".parse().unwrap());
}

#[tokio::test]
async fn test_store_old_superblock_without_checksum_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    drop(volume_with(dir.path(), 3).await);
    write_at(&dir.path().join("1.dat"), 4, &[0, 0, 0, 0]);
    let (v, report) = open(dir.path());
    assert!(report.unchecked_superblock);
    assert_reads(&v, 1..=3);
}

#[tokio::test]
async fn test_store_transient_open_error_is_reported_not_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::load(dir.path(), metrics()).unwrap();
        store.allocate(1, "", Replication::default()).unwrap();
        store.allocate(2, "", Replication::default()).unwrap();
    }
    // An idx that cannot be opened (here a directory: EISDIR, like EMFILE or EACCES not a
    // checksum failure) must not get the volume renamed.
    let idx = dir.path().join("1.idx");
    std::fs::remove_file(&idx).unwrap();
    std::fs::create_dir(&idx).unwrap();
    let m = metrics();
    let store = Store::load(dir.path(), m.clone()).unwrap();
    assert!(store.get(1).is_err());
    assert!(store.get(2).is_ok());
    assert_eq!(store.failed().len(), 1);
    assert_eq!(store.failed()[0].0, 1);
    assert_eq!(m.volumes_failed.get(), 1);
    assert!(std::fs::metadata(dir.path().join("1.dat")).is_ok());
    assert!(std::fs::metadata(dir.path().join("1.dat.corrupted")).is_err());
    assert!(matches!(
        store.allocate(1, "", Replication::default()),
        Err(VolumeError::Exists { .. })
    ));
    drop(store);
    std::fs::remove_dir(&idx).unwrap();
    let store = Store::load(dir.path(), metrics()).unwrap();
    assert!(store.get(1).is_ok());
}

#[tokio::test]
async fn test_store_enospc_on_the_idx_acknowledges_durable_needles_and_leaves_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume_with(dir.path(), 5).await;
    v.faults().fail_idx_writes(std::io::ErrorKind::StorageFull);
    for k in 6..=8 {
        put(&v, &blob(k, len_of(k))).await;
    }
    assert_reads(&v, 1..=8);
    v.faults().heal_writes();
    for k in 9..=10 {
        put(&v, &blob(k, len_of(k))).await;
    }
    drop(v);
    // The kept rows were written before the later ones: the idx is complete, in order.
    assert_eq!(
        std::fs::metadata(dir.path().join("1.idx")).unwrap().len(),
        10 * 16
    );
    let (v, report) = open(dir.path());
    assert_eq!(report, RecoveryReport::default());
    assert_reads(&v, 1..=10);
}

mod recovery_model {
    //! Model-based: any sequence of acknowledged writes, then a stale `.idx` (cut anywhere) and
    //! one flipped byte anywhere in one needle's record; after reopen every other needle reads
    //! back byte-identical and the damaged one is never served wrong.

    use proptest::prelude::*;

    use super::*;

    fn run(lens: &[usize], idx_keep: usize, victim: usize, flip_at: usize, bits: u8) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = lens.len() as u64;
        let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
        rt.block_on(async {
            for (i, len) in lens.iter().enumerate() {
                put(&v, &blob(i as u64 + 1, *len)).await;
            }
        });
        drop(v);
        let victim = victim as u64 % n + 1;
        let at = offset_of(dir.path(), victim);
        let (rec, _) = blob(victim, lens[victim as usize - 1]).encode(0).unwrap();
        let at = at + (flip_at % rec.len()) as u64;
        let dat = dir.path().join("1.dat");
        let b = std::fs::read(&dat).unwrap()[at as usize];
        write_at(&dat, at, &[b ^ bits]);
        let idx = dir.path().join("1.idx");
        let idx_len = std::fs::metadata(&idx).unwrap().len();
        set_len(&idx, idx_keep as u64 % (idx_len + 1));
        let dat_len = std::fs::metadata(&dat).unwrap().len();

        let (v, report) = open(dir.path());
        for k in 1..=n {
            let want = blob(k, lens[k as usize - 1]).data;
            match v.read(k, 0xabcd) {
                Ok(got) => assert_eq!(got.needle.data, want, "needle {k} served wrong"),
                Err(e) => assert_eq!(k, victim, "needle {k} lost: {e}; {report:?}"),
            }
        }
        // Only a damaged last needle can be cut (it is then a torn tail), and a copy is kept.
        if report.bytes_cut > 0 {
            assert_eq!(victim, n, "{report:?}");
            assert!(report.torn_copy.is_some());
        } else {
            assert_eq!(std::fs::metadata(&dat).unwrap().len(), dat_len);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn test_recovery_model_one_flip_and_a_stale_idx_lose_only_the_damaged_needle(
            lens in proptest::collection::vec(0usize..600, 2..24),
            idx_keep in any::<usize>(),
            victim in any::<usize>(),
            flip_at in any::<usize>(),
            bits in 1u8..,
        ) {
            run(&lens, idx_keep, victim, flip_at, bits);
        }
    }
}

#[tokio::test]
async fn test_store_allocate_creates_files_outside_the_store_lock() {
    // Issue 11, finding 4: the creation's fsyncs must not block reads and heartbeats.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::load(dir.path(), metrics()).unwrap();
    store.allocate(1, "", Replication::default()).unwrap();
    let v = store
        .allocate_with(2, "", Replication::default(), || {
            assert!(
                store.volumes.try_write().is_ok(),
                "the volumes lock is held during creation"
            );
            assert!(store.get(1).is_ok());
            assert_eq!(store.infos().len(), 1);
            Volume::create(dir.path(), 2, "", Replication::default(), metrics())
        })
        .unwrap();
    assert_eq!(v.id, 2);
    assert_eq!(store.infos().len(), 2);
    // Idempotent; a different replication for the same id is a conflict.
    assert!(store.allocate(2, "", Replication::default()).is_ok());
    assert!(matches!(
        store.allocate(2, "", "001".parse().unwrap()),
        Err(VolumeError::Exists { .. })
    ));
}

fn with_cookie(mut n: Needle, cookie: u32) -> Needle {
    n.cookie = cookie;
    n
}

#[tokio::test]
async fn test_store_write_with_another_cookie_is_refused_and_changes_nothing() {
    // Issue 16: anyone could replace a blob by writing its key under another cookie.
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    put(&v, &blob(5, 100)).await;
    let end = v.size();
    let err = v
        .write(&with_cookie(blob(5, 10), 0x1234), true, u64::MAX)
        .await
        .unwrap()
        .done()
        .await
        .unwrap_err();
    assert!(
        matches!(err, VolumeError::CookieMismatch { key: 5, .. }),
        "{err}"
    );
    assert_eq!(v.size(), end, "a refused write appends nothing");
    assert_eq!(v.read(5, 0xabcd).unwrap().needle.data, blob(5, 100).data);
    // The same cookie may overwrite (a retried or replicated write of the same fid).
    put(&v, &blob(5, 30)).await;
    assert_eq!(v.read(5, 0xabcd).unwrap().needle.data.len(), 30);
    // Once deleted, the key may be written under any cookie.
    v.delete(5, 0xabcd, true).await.unwrap();
    put(&v, &with_cookie(blob(5, 7), 0x1234)).await;
    assert_eq!(v.read(5, 0x1234).unwrap().needle.data.len(), 7);
    // The cookie survives a reopen (recovery reads it from the needle headers).
    drop(v);
    let (v, _) = open(dir.path());
    let err = v
        .write(&blob(5, 10), true, u64::MAX)
        .await
        .unwrap()
        .done()
        .await
        .unwrap_err();
    assert!(matches!(err, VolumeError::CookieMismatch { .. }), "{err}");
}

#[tokio::test]
async fn test_store_conflicting_writes_in_one_batch_keep_the_first_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    // Queued back to back, so they share a batch or follow each other unpublished.
    let a = v.write(&blob(9, 10), true, u64::MAX).await.unwrap();
    let b = v
        .write(&with_cookie(blob(9, 20), 0x77), true, u64::MAX)
        .await
        .unwrap();
    a.done().await.unwrap();
    assert!(matches!(
        b.done().await,
        Err(VolumeError::CookieMismatch { .. })
    ));
    assert_eq!(v.read(9, 0xabcd).unwrap().needle.data.len(), 10);
}

#[tokio::test]
async fn test_store_delete_aimed_at_an_older_version_never_tombstones_a_newer_write() {
    // Issue 16: the deletion names the record it read; a newer record of the key (published
    // or still in flight) makes it a no-op.
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    put(&v, &blob(3, 10)).await;
    let old = v.offset_of(3).unwrap();
    put(&v, &blob(3, 20)).await;
    assert!(matches!(
        v.delete_at(3, 0xabcd, old).await,
        Err(VolumeError::NeedleNotFound { .. })
    ));
    assert_eq!(v.read(3, 0xabcd).unwrap().needle.data.len(), 20);

    // In flight: the newer write is appended (in an earlier batch) but not yet synced nor
    // published when the stale delete reaches the appender. The appender refuses it on its
    // own, without waiting for the held syncer; a timeout means it appended a tombstone.
    let cur = v.offset_of(3).unwrap();
    v.faults().close_sync_gate();
    let mut newer = v.write(&blob(3, 30), true, u64::MAX).await.unwrap();
    newer.appended().await;
    let stale = v.send_delete_at(3, 0xabcd, cur).await.unwrap();
    let stale = tokio::time::timeout(std::time::Duration::from_secs(10), stale).await;
    v.faults().open_sync_gate();
    newer.done().await.unwrap();
    assert!(
        matches!(stale, Ok(Ok(Err(VolumeError::NeedleNotFound { .. })))),
        "the stale delete was not refused by the appender: {stale:?}"
    );
    assert_eq!(v.read(3, 0xabcd).unwrap().needle.data.len(), 30);

    // Deleted, then rewritten under the same fid: a delete from before the deletion is stale.
    let before = v.offset_of(3).unwrap();
    v.delete(3, 0xabcd, true).await.unwrap();
    put(&v, &blob(3, 40)).await;
    assert!(v.delete_at(3, 0xabcd, before).await.is_err());
    assert_eq!(v.read(3, 0xabcd).unwrap().needle.data.len(), 40);
    // A wrong cookie cannot delete; the right one, aimed at the newest record, can.
    assert!(v.delete(3, 0x1111, true).await.is_err());
    assert_eq!(v.delete(3, 0xabcd, true).await.unwrap(), 40);
}

/// Writes `n` needles, deletes two in three and overwrites one in five of the rest; returns
/// the live data by key.
async fn garbage_volume(v: &Volume, n: u64) -> std::collections::BTreeMap<u64, Bytes> {
    let mut live = std::collections::BTreeMap::new();
    for k in 1..=n {
        let b = blob(k, 200 + (k as usize % 7) * 50);
        put(v, &b).await;
        live.insert(k, b.data);
    }
    for k in 1..=n {
        if !k.is_multiple_of(3) {
            v.delete(k, 0xabcd, true).await.unwrap();
            live.remove(&k);
        } else if k.is_multiple_of(5) {
            let b = blob(k + 1000, 90);
            let b = Needle { key: k, ..b };
            put(v, &b).await;
            live.insert(k, b.data);
        }
    }
    live
}

fn check_live(v: &Volume, live: &std::collections::BTreeMap<u64, Bytes>, n: u64) {
    for k in 1..=n + 1 {
        match live.get(&k) {
            Some(data) => assert_eq!(&v.read(k, 0xabcd).unwrap().needle.data, data, "key {k}"),
            None => assert!(
                matches!(v.read(k, 0xabcd), Err(VolumeError::NeedleNotFound { .. })),
                "key {k} should be gone"
            ),
        }
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cpd") || n.ends_with(".cpx") || n.ends_with(".cpc"))
        .collect()
}

#[tokio::test]
async fn test_vacuum_gives_space_back_and_keeps_every_live_needle() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    let live = garbage_volume(&v, 300).await;
    let live_bytes = v.size() - SUPERBLOCK_LEN - v.garbage();
    assert!(
        v.garbage() > v.size() / 2,
        "{} of {}",
        v.garbage(),
        v.size()
    );
    let v = Arc::new(v);
    let c = v.clone();
    let (before, after) = tokio::task::spawn_blocking(move || c.compact())
        .await
        .unwrap()
        .unwrap();
    assert!(before > after);
    assert_eq!(after, SUPERBLOCK_LEN + live_bytes);
    assert_eq!(v.size(), after);
    assert_eq!(v.garbage(), 0);
    assert_eq!(std::fs::metadata(v.dat_path()).unwrap().len(), after);
    assert!(leftovers(dir.path()).is_empty());
    check_live(&v, &live, 300);
    // Writes and deletes go on in the new files, and everything survives a reopen.
    let mut live = live;
    put(&v, &blob(5000, 77)).await;
    live.insert(5000, blob(5000, 77).data);
    let k = *live.keys().next().unwrap();
    v.delete(k, 0xabcd, true).await.unwrap();
    live.remove(&k);
    drop(v);
    let (v, report) = open(dir.path());
    assert_eq!(report, RecoveryReport::default());
    check_live(&v, &live, 300);
    assert_eq!(v.read(5000, 0xabcd).unwrap().needle.data.len(), 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_vacuum_is_online_writes_during_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    let mut live = garbage_volume(&v, 600).await;
    let v = Arc::new(v);
    let c = v.clone();
    let compaction = tokio::task::spawn_blocking(move || c.compact());
    // Writes, overwrites and deletes while the compaction runs; each acknowledged one must
    // hold after it (whichever phase it landed in).
    let mut k = 10_000u64;
    while !compaction.is_finished() || k < 10_050 {
        put(&v, &blob(k, 64)).await;
        live.insert(k, blob(k, 64).data);
        if k.is_multiple_of(2) {
            v.delete(k, 0xabcd, true).await.unwrap();
            live.remove(&k);
        }
        k += 1;
    }
    compaction.await.unwrap().unwrap();
    for (key, data) in &live {
        assert_eq!(
            &v.read(*key, 0xabcd).unwrap().needle.data,
            data,
            "key {key}"
        );
    }
    drop(v);
    let (v, _) = open(dir.path());
    for (key, data) in &live {
        assert_eq!(
            &v.read(*key, 0xabcd).unwrap().needle.data,
            data,
            "key {key}"
        );
    }
    for key in (10_000..k).filter(|k| k.is_multiple_of(2)) {
        assert!(v.read(key, 0xabcd).is_err(), "deleted {key} is back");
    }
}

#[tokio::test]
async fn test_vacuum_crash_at_any_step_leaves_the_old_or_the_new_volume_whole() {
    use super::vacuum::CRASH_STEPS;
    for step in CRASH_STEPS {
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
        let live = garbage_volume(&v, 120).await;
        let old_size = v.size();
        let new_size = SUPERBLOCK_LEN + (old_size - SUPERBLOCK_LEN - v.garbage());
        v.faults().crash_compaction_at(step);
        let v = Arc::new(v);
        let c = v.clone();
        let err = tokio::task::spawn_blocking(move || c.compact())
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{step}: {err}");
        drop(v);
        // The "process" died: reopen from the files alone.
        let (v, _) = open(dir.path());
        let committed = matches!(step, "marked" | "dat_renamed" | "renamed");
        let expect = if committed { new_size } else { old_size };
        assert_eq!(v.size(), expect, "step {step}");
        assert!(
            leftovers(dir.path()).is_empty(),
            "step {step}: {:?}",
            leftovers(dir.path())
        );
        check_live(&v, &live, 120);
        // And a vacuum after the restart finishes the job.
        let v = Arc::new(v);
        let c = v.clone();
        let (_, after) = tokio::task::spawn_blocking(move || c.compact())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after, new_size, "step {step}");
        check_live(&v, &live, 120);
    }
}

#[tokio::test]
async fn test_store_vacuum_compacts_only_above_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::load(dir.path(), metrics()).unwrap();
    let a = store.allocate(1, "", Replication::default()).unwrap();
    let b = store.allocate(2, "", Replication::default()).unwrap();
    garbage_volume(&a, 60).await;
    for k in 1..=60 {
        put(&b, &blob(k, 100)).await;
    }
    b.delete(1, 0xabcd, true).await.unwrap();
    let store = Arc::new(store);
    let s = store.clone();
    let done = tokio::task::spawn_blocking(move || s.vacuum(0.3))
        .await
        .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].0, 1);
    assert!(done[0].2 < done[0].1);
}
