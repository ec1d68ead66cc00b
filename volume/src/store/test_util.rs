//! Helpers the store's tests share: needles of known content, volumes written with them, and
//! edits of a volume's files behind its back.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use common::api::master::Replication;
use prometheus_client::registry::Registry;

use super::needle::Needle;
use super::{RecoveryReport, SUPERBLOCK_LEN, Volume};
use crate::metrics::Metrics;

pub(super) fn metrics() -> Metrics {
    Metrics::new(&mut Registry::default())
}

pub(super) fn blob(key: u64, len: usize) -> Needle {
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

pub(super) async fn put(v: &Volume, n: &Needle) {
    v.write(n, true, u64::MAX)
        .await
        .unwrap()
        .done()
        .await
        .unwrap();
}

pub(super) fn open(dir: &Path) -> (Volume, RecoveryReport) {
    Volume::open(dir, 1, "", metrics()).unwrap()
}

/// Byte offset of needle `key`'s record in the `.dat` (found by its cookie and key).
pub(super) fn offset_of(dir: &Path, key: u64) -> u64 {
    let mut header = 0xabcd_u32.to_be_bytes().to_vec();
    header.extend_from_slice(&key.to_be_bytes());
    let bytes = std::fs::read(dir.join("1.dat")).unwrap();
    let at = (SUPERBLOCK_LEN as usize..bytes.len())
        .step_by(8)
        .find(|&i| bytes[i..].starts_with(&header))
        .unwrap();
    at as u64
}

pub(super) fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

pub(super) fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

pub(super) fn torn_copies(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".torn."))
        .collect()
}

/// The data length of needle `k` in these tests (varied, 50 to 749 bytes).
pub(super) fn len_of(k: u64) -> usize {
    50 + (k as usize * 37) % 700
}

/// Writes needles 1..=n of varied sizes, acknowledged (fsynced).
pub(super) async fn volume_with(dir: &Path, n: u64) -> Volume {
    let (v, _) = Volume::create(dir, 1, "", Replication::default(), metrics()).unwrap();
    for k in 1..=n {
        put(&v, &blob(k, len_of(k))).await;
    }
    v
}

pub(super) fn assert_reads(v: &Volume, keys: impl IntoIterator<Item = u64>) {
    for k in keys {
        let got = v
            .read(k, 0xabcd)
            .unwrap_or_else(|e| panic!("needle {k}: {e}"));
        assert_eq!(got.needle.data, blob(k, len_of(k)).data, "needle {k}");
    }
}
