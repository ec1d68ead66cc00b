//! Group-commit tests (the appender and the syncer): writers share fsyncs, ENOSPC on either
//! file, a power cut keeps every acknowledged needle, and the checks only the appender can make
//! (a write's cookie, a deletion aimed at a record).

use std::sync::Arc;

use common::api::master::Replication;

use crate::store::needle::Needle;
use crate::store::test_util::*;
use crate::store::{RecoveryReport, Volume, VolumeError, faults};

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
