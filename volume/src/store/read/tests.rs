//! Read-path tests: a wrong cookie, a flipped byte and the scrub.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::api::master::Replication;

use crate::store::test_util::*;
use crate::store::{SUPERBLOCK_LEN, Volume, VolumeError};

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
