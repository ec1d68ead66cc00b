//! Recovery tests (issue 11: recovery never cuts an acknowledged byte): lost, torn and
//! mismatched `.idx` rows, torn tails and corrupt regions of the `.dat`, I/O errors while
//! recovering, and a model of one flipped byte under a stale `.idx`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::api::master::Replication;

use crate::store::test_util::*;
use crate::store::{RecoveryReport, Volume, VolumeError, faults};

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
