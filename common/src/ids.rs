//! File ids: `<volumeId>,<hex key><8 hex cookie>`.
//!
//! The key is a u64 written big-endian in hex with its leading zero bytes dropped; the cookie is
//! a random u32 that must match on read and delete, so ids cannot be guessed. Key 0 is never
//! issued (the master starts at 1), so a well-formed id always has more than 8 hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A volume id: the number before the comma of a file id.
pub type VolumeId = u32;

/// A parsed file id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// The volume that holds the needle.
    pub volume_id: VolumeId,
    /// The needle key, unique within the cluster.
    pub key: u64,
    /// The random cookie that must match on read and delete.
    pub cookie: u32,
}

/// Why a string is not a file id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileIdError {
    /// The comma between volume id and key is missing.
    #[error("file id {0:?} has no comma between volume id and key")]
    MissingComma(String),
    /// The volume id is not a decimal u32.
    #[error("file id {0:?} has a bad volume id")]
    BadVolumeId(String),
    /// The key and cookie part is not 9 to 24 hex digits.
    #[error("file id {0:?} needs 9 to 24 hex digits of key and cookie")]
    BadKeyCookie(String),
}

impl FileId {
    /// Builds a file id from its parts.
    pub fn new(volume_id: VolumeId, key: u64, cookie: u32) -> Self {
        Self {
            volume_id,
            key,
            cookie,
        }
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.to_be_bytes();
        let first = key.iter().position(|b| *b != 0).unwrap_or(key.len() - 1);
        write!(f, "{},", self.volume_id)?;
        for b in &key[first..] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "{:08x}", self.cookie)
    }
}

impl FromStr for FileId {
    type Err = FileIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (vid, rest) = s
            .split_once(',')
            .ok_or_else(|| FileIdError::MissingComma(s.to_owned()))?;
        if vid.is_empty() || !vid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FileIdError::BadVolumeId(s.to_owned()));
        }
        let volume_id = vid
            .parse::<u32>()
            .map_err(|_| FileIdError::BadVolumeId(s.to_owned()))?;
        let bad = || FileIdError::BadKeyCookie(s.to_owned());
        // A SeaweedFS-style delta suffix (`_1`) is not part of Kelp's ids.
        if rest.len() <= 8 || rest.len() > 24 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let (key_hex, cookie_hex) = rest.split_at(rest.len() - 8);
        let key = u64::from_str_radix(key_hex, 16).map_err(|_| bad())?;
        let cookie = u32::from_str_radix(cookie_hex, 16).map_err(|_| bad())?;
        Ok(Self {
            volume_id,
            key,
            cookie,
        })
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_file_id_matches_seaweedfs_example() {
        let fid: FileId = "3,01637037d6".parse().unwrap();
        assert_eq!(fid, FileId::new(3, 0x01, 0x637037d6));
        assert_eq!(fid.to_string(), "3,01637037d6");
    }

    #[test]
    fn test_file_id_rejects_malformed() {
        for bad in [
            "",
            "3",
            "3,",
            ",0163703",
            "x,01637037d6",
            "3,637037d6",
            "3,zz637037d6",
            "-1,01637037d6",
            "3,0000000000000000000000001",
            "99999999999,01637037d6",
        ] {
            assert!(bad.parse::<FileId>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn test_file_id_round_trips(vid: u32, key in 1u64.., cookie: u32) {
            let fid = FileId::new(vid, key, cookie);
            let text = fid.to_string();
            prop_assert_eq!(text.parse::<FileId>().unwrap(), fid);
        }

        #[test]
        fn test_file_id_parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<FileId>();
        }
    }
}
