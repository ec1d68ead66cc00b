//! Store tests: durability across reopen, loading a data directory (quarantine of a volume
//! that fails its checksum, a failure to open that is not), and allocation.

use super::test_util::*;
use super::*;

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
async fn test_volume_info_reports_the_bytes_a_vacuum_would_give_back() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=4 {
        put(&v, &blob(k, 1000)).await;
    }
    assert_eq!(v.info().deleted_bytes, 0, "every byte is live");
    v.delete(2, 0xabcd, true).await.unwrap();
    // Overwriting key 3 leaves its first record behind too.
    put(&v, &blob(3, 500)).await;
    let info = v.info();
    assert_eq!(info.deleted_bytes, v.garbage());
    assert!(
        info.deleted_bytes >= 2000,
        "two 1000-byte records (and a tombstone) are garbage: {}",
        info.deleted_bytes
    );
    // Reopening (the index rebuilt from disk) reports the same.
    drop(v);
    let (v, _) = open(dir.path());
    assert_eq!(v.info().deleted_bytes, info.deleted_bytes);
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

#[test]
fn test_store_delete_volume_refuses_during_a_vacuum_and_blocks_later_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::load(dir.path(), metrics()).unwrap();
    let v = store.allocate(7, "c", Replication::default()).unwrap();
    {
        let _vacuum = v.shared.compacting.lock().unwrap();
        assert!(matches!(
            store.delete_volume(7),
            Err(VolumeError::VacuumInProgress { volume: 7 })
        ));
    }
    assert!(store.get(7).is_ok(), "a refused delete keeps the volume");
    store.delete_volume(7).unwrap();
    assert!(store.get(7).is_err());
    assert!(std::fs::metadata(dir.path().join("c_7.dat")).is_err());
    // A vacuum that picked the volume before the delete must not recreate its files.
    assert!(matches!(
        v.compact(),
        Err(VolumeError::VolumeNotFound { volume: 7 })
    ));
    assert!(std::fs::metadata(dir.path().join("c_7.dat")).is_err());
}
