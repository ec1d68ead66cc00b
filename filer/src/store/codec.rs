//! On-disk encoding of the metadata store (shared by the RocksDB and in-memory stores).
//!
//! # Keys
//! - `e<dir>\0<name>`: the entry `<dir>/<name>` (`e/\0a` is `/a`, `e/a\0b` is `/a/b`). Paths
//!   never contain NUL, so the children of one directory are exactly the keys with the
//!   prefix `e<dir>\0`, and they sort by name (bytewise). The upper bound of that range is
//!   `e<dir>\x01`, which is never a key (every entry key has a NUL right after its dir).
//! - `g<fid>`: a chunk deletion waiting for the background collector.
//! - `c<fid>\0<path>`: the chunk `<fid>` is referenced by the entry at `<path>` (the chunk →
//!   owner index, value [`OWNER_VALUE`]). Fids never contain NUL (they parse as file ids), so
//!   the owners of one fid are exactly the keys with the prefix `c<fid>\0`. Written in the
//!   same batch as the entry that references the chunk; see [`super`] for why.
//! - `mformat`: the format marker ([`FORMAT`]). Format v1 had no `c` keys; opening a v1
//!   database builds them (one synced batch) and writes the v2 marker.
//!
//! # Values
//! `version u8 (=1) | crc32c(json) u32 little-endian | json`. The JSON is the wire `Entry`
//! (or `PendingDeletion`); a reader checks the version and the checksum and, for entries,
//! that the stored path matches the key.

use common::api::filer::Entry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::path;

/// Key prefix of entries.
pub const ENTRY: u8 = b'e';
/// Key prefix of queued chunk deletions.
pub const GC: u8 = b'g';
/// Key prefix of the chunk → owner index.
pub const OWNER: u8 = b'c';
/// Value of a chunk → owner index row (the key says everything).
pub const OWNER_VALUE: &[u8] = b"";
/// Key of the format marker.
pub const FORMAT_KEY: &[u8] = b"mformat";
/// The format this build writes and reads.
pub const FORMAT: &[u8] = b"kelp-filer-meta-v2";
/// The previous format (no chunk → owner index); upgraded on open.
pub const FORMAT_V1: &[u8] = b"kelp-filer-meta-v1";
/// Version byte of values.
const VALUE_V1: u8 = 1;

/// The key prefix of `dir`'s children.
pub fn dir_prefix(dir: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + 2);
    k.push(ENTRY);
    k.extend_from_slice(dir.as_bytes());
    k.push(0);
    k
}

/// The exclusive upper bound of `dir`'s children.
pub fn dir_upper(dir: &str) -> Vec<u8> {
    let mut k = dir_prefix(dir);
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// The key of `dir`'s child `name`.
pub fn child_key(dir: &str, name: &str) -> Vec<u8> {
    let mut k = dir_prefix(dir);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key of the entry at `path` (not the root).
pub fn entry_key(path: &str) -> Vec<u8> {
    let (dir, name) = path::split(path);
    child_key(dir, name)
}

/// The key of a queued deletion.
pub fn gc_key(fid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(fid.len() + 1);
    k.push(GC);
    k.extend_from_slice(fid.as_bytes());
    k
}

/// The key prefix of `fid`'s owner rows.
pub fn owners_prefix(fid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(fid.len() + 2);
    k.push(OWNER);
    k.extend_from_slice(fid.as_bytes());
    k.push(0);
    k
}

/// The exclusive upper bound of `fid`'s owner rows.
pub fn owners_upper(fid: &str) -> Vec<u8> {
    let mut k = owners_prefix(fid);
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// The key recording that the entry at `path` references chunk `fid`.
pub fn owner_key(fid: &str, path: &str) -> Vec<u8> {
    let mut k = owners_prefix(fid);
    k.extend_from_slice(path.as_bytes());
    k
}

/// The owner path of an owner row of `fid`.
pub fn owner_path(fid: &str, key: &[u8]) -> Result<String, StoreError> {
    let prefix = owners_prefix(fid);
    key.strip_prefix(prefix.as_slice())
        .and_then(|p| std::str::from_utf8(p).ok())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Corrupt {
            key: show_key(key),
            reason: format!("not an owner row of chunk {fid}"),
        })
}

/// A printable form of a key, for errors.
pub fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "\\0")
}

/// Encodes a value: version, checksum, JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Entries and deletions are plain data (strings, numbers, maps with string keys): their
    // serialization cannot fail.
    let json = serde_json::to_vec(value).expect("metadata values serialize to JSON");
    let mut out = Vec::with_capacity(json.len() + 5);
    out.push(VALUE_V1);
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Decodes a value, checking version and checksum.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: show_key(key),
        reason,
    };
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty value".to_owned()))?;
    if version != VALUE_V1 {
        return Err(corrupt(format!("unknown value version {version}")));
    }
    if rest.len() < 4 {
        return Err(corrupt("value shorter than its checksum".to_owned()));
    }
    let (crc, json) = rest.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32c::crc32c(json);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum {actual:08x} does not match stored {stored:08x}"
        )));
    }
    serde_json::from_slice(json).map_err(|e| corrupt(format!("bad JSON: {e}")))
}

/// Decodes an entry and checks that its path matches its key.
pub fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry, StoreError> {
    let entry: Entry = decode(key, bytes)?;
    if entry_key(&entry.full_path) != key {
        return Err(StoreError::Corrupt {
            key: show_key(key),
            reason: format!("stored path {:?} does not match the key", entry.full_path),
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PendingDeletion;
    use common::api::filer::Chunk;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            full_path: "/a/b".to_owned(),
            size: 3,
            chunks: vec![Chunk {
                fid: "3,01637037d6".to_owned(),
                offset: 0,
                size: 3,
                etag: "x".to_owned(),
            }],
            ..Entry::default()
        }
    }

    #[test]
    fn test_codec_round_trip() {
        let e = sample();
        let key = entry_key(&e.full_path);
        assert_eq!(decode_entry(&key, &encode(&e)).unwrap(), e);
        let d = PendingDeletion {
            fid: "1,0100000001".to_owned(),
            path: "/x".to_owned(),
            queued_ms: 5,
        };
        assert_eq!(decode::<PendingDeletion>(b"g", &encode(&d)).unwrap(), d);
    }

    #[test]
    fn test_codec_detects_every_flipped_byte() {
        let e = sample();
        let key = entry_key(&e.full_path);
        let bytes = encode(&e);
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(decode_entry(&key, &bad).is_err(), "flip at {i} undetected");
            }
        }
    }

    #[test]
    fn test_codec_detects_torn_value() {
        let e = sample();
        let key = entry_key(&e.full_path);
        let bytes = encode(&e);
        for n in 0..bytes.len() {
            assert!(
                decode_entry(&key, &bytes[..n]).is_err(),
                "torn at {n} undetected"
            );
        }
    }

    #[test]
    fn test_codec_rejects_entry_under_wrong_key() {
        let e = sample();
        assert!(decode_entry(&entry_key("/a/c"), &encode(&e)).is_err());
    }

    #[test]
    fn test_keys_isolate_sibling_prefixes() {
        // `/a`'s children never fall in `/ab`'s range and vice versa.
        let a = (dir_prefix("/a"), dir_upper("/a"));
        let ab_child = child_key("/ab", "x");
        assert!(!(ab_child >= a.0 && ab_child < a.1));
        let a_child = child_key("/a", "zzz");
        assert!(a_child >= a.0 && a_child < a.1);
        // The grandchildren of `/a` are not children of `/a`.
        let grand = entry_key("/a/b/c");
        assert!(!(grand >= a.0 && grand < a.1));
        assert_eq!(entry_key("/a"), b"e/\0a".to_vec());
    }

    #[test]
    fn test_owner_keys_isolate_fids_with_shared_prefixes() {
        let k = owner_key("1,01ab", "/x/y");
        assert_eq!(owner_path("1,01ab", &k).unwrap(), "/x/y");
        assert!(k >= owners_prefix("1,01ab") && k < owners_upper("1,01ab"));
        // `1,01ab`'s rows are not `1,01a`'s.
        assert!(!(k >= owners_prefix("1,01a") && k < owners_upper("1,01a")));
        assert!(owner_path("1,01a", &k).is_err());
    }

    proptest! {
        #[test]
        fn test_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_entry(b"e/\0a", &bytes);
            let _ = decode::<PendingDeletion>(b"g", &bytes);
        }
    }
}
