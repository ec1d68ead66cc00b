//! Online compaction tests: space given back, writes during it kept, a crash at each step, and
//! the store's threshold.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::api::master::Replication;

use crate::store::needle::Needle;
use crate::store::test_util::*;
use crate::store::{RecoveryReport, SUPERBLOCK_LEN, Store, Volume, VolumeError};

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
    use crate::store::vacuum::CRASH_STEPS;
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
