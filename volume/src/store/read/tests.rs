//! Read-path tests: a wrong cookie, a flipped byte and the scrub.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::api::master::Replication;

use crate::store::test_util::*;
use crate::store::{SUPERBLOCK_LEN, Volume, VolumeError};

/// Inverts the byte at `at` of the file at `path`, behind the server's back.
fn flip_byte(path: &std::path::Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
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
async fn test_store_flipped_byte_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    put(&v, &blob(1, 500)).await;
    put(&v, &blob(2, 500)).await;
    // Flip a data byte of needle 1 behind the server's back.
    flip_byte(&dir.path().join("1.dat"), SUPERBLOCK_LEN + 40);
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

#[tokio::test]
async fn test_store_read_range_keeps_only_the_range_and_verifies_the_whole_record() {
    use crate::store::read::RANGE_CHUNK;
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = Volume::create(dir.path(), 1, "", Replication::default(), metrics()).unwrap();
    let mut n = blob(1, 2 * RANGE_CHUNK + 777);
    n.name = Some("big.bin".into());
    n.mime = Some("application/x-test".into());
    n.last_modified = Some(1_700_000_000);
    put(&v, &n).await;
    let whole = v.read(1, 0xabcd).unwrap();
    let total = n.data.len() as u64;
    // Ranges inside a chunk, across chunk boundaries, the first and the last byte.
    let chunk = RANGE_CHUNK as u64;
    for (start, end) in [
        (0, 0),
        (10, 99),
        (chunk - 20, chunk + 20),
        (chunk - 4, 2 * chunk + 10),
        (total - 1, total - 1),
        (0, total - 1),
    ] {
        let part = v
            .read_range(1, 0xabcd, |t| {
                assert_eq!(t, total);
                Some((start, end))
            })
            .unwrap()
            .expect("a satisfiable range of a sound needle");
        assert_eq!(
            part.needle.data,
            n.data.slice(start as usize..=end as usize),
            "{start}-{end}"
        );
        assert_eq!((part.start, part.total), (start, total));
        assert_eq!(part.checksum, whole.checksum);
        assert_eq!(part.head, n.data.slice(..512));
        assert_eq!(
            (
                part.needle.name,
                part.needle.mime,
                part.needle.last_modified
            ),
            (n.name.clone(), n.mime.clone(), n.last_modified)
        );
    }
    // A declined or impossible range, or a wrong cookie.
    assert!(v.read_range(1, 0xabcd, |_| None).unwrap().is_none());
    assert!(v.read_range(1, 0xabcd, |t| Some((t, t))).unwrap().is_none());
    assert!(matches!(
        v.read_range(1, 0x1234, |_| Some((0, 0))),
        Err(VolumeError::NeedleNotFound { .. })
    ));

    // A flipped byte far from the range: the range is not served.
    let at = offset_of(dir.path(), 1) + 16 + 4 + 2 * chunk;
    flip_byte(&dir.path().join("1.dat"), at);
    assert!(matches!(
        v.read_range(1, 0xabcd, |_| Some((0, 9))),
        Err(VolumeError::Corrupt { .. })
    ));
}
