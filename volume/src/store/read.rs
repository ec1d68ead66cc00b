//! The read path of a volume: reads by key and the scrub of every live needle.
//!
//! # Invariant
//! A needle is served only if the record the index points at was read whole, from the `.dat`
//! that location belongs to, its CRC-32C holds and its header names the key asked for. The
//! location and the file are taken together under the index's read lock (a compaction swaps
//! both under its write lock), so a read never looks up a location in one generation's file
//! and reads another's. A record that fails any check is answered `Corrupt` and counted in
//! `crc_failures` (a 500), never served and never turned into "not found"; a wrong cookie is
//! "not found". Only published needles are found: the syncer puts a key in the index only
//! after the `fdatasync` that covers it (see `super::syncer`; or after its append, for a write
//! that asked for no fsync), so nothing is read before it is durable. Reads take only read
//! locks and `pread`: they never wait for the appender or the syncer.

use common::sync::LockExt;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::VolumeError;
use super::needle::{self, Needle};
use super::volume::{Loc, Volume};

/// A needle read back, checksum verified.
#[derive(Debug, Clone)]
pub struct ReadNeedle {
    /// The needle.
    pub needle: Needle,
    /// Its checksum, served as ETag.
    pub checksum: u32,
}

impl Volume {
    /// Body size of the live needle `key`, if any (to decide whether a read is worth moving
    /// off the async runtime).
    pub fn needle_size(&self, key: u64) -> Option<u32> {
        self.shared.index.read_or_abort().get(&key).map(|l| l.size)
    }

    /// Verifies the checksum of every live needle (in offset order, so the disk is read
    /// sequentially) and returns the keys of those that fail. Each failure is logged and counted
    /// in `crc_failures`; a bad needle is never served (every read checks again).
    pub fn scrub(&self) -> Vec<u64> {
        let (mut locs, reader) = {
            let index = self.shared.index.read_or_abort();
            let locs: Vec<(u64, Loc)> = index.iter().map(|(k, l)| (*k, *l)).collect();
            (locs, self.shared.reader.read_or_abort().clone())
        };
        locs.sort_by_key(|(_, l)| l.offset);
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for (key, loc) in locs {
            buf.resize(needle::record_len(loc.size) as usize, 0);
            let ok = reader.read_exact_at(&mut buf, loc.offset).is_ok()
                && needle::decode(&buf).is_ok_and(|r| r.header.key == key && r.needle.is_some());
            if !ok {
                self.shared.metrics.crc_failures.inc();
                tracing::error!(
                    volume = self.id,
                    key = format_args!("{key:x}"),
                    offset = loc.offset,
                    "scrub found a corrupt needle; it will not be served"
                );
                bad.push(key);
            }
        }
        bad
    }

    /// Reads and verifies the needle `key`; a wrong cookie is "not found".
    pub fn read(&self, key: u64, cookie: u32) -> Result<ReadNeedle, VolumeError> {
        self.read_loc(key, cookie).map(|(n, _, _)| n)
    }

    /// [`Volume::read`], also answering where the record lies.
    pub(super) fn read_loc(
        &self,
        key: u64,
        cookie: u32,
    ) -> Result<(ReadNeedle, Loc, u64), VolumeError> {
        let (loc, reader, generation) = {
            let index = self.shared.index.read_or_abort();
            let generation = self.shared.generation.load(Ordering::Acquire);
            let loc = index
                .get(&key)
                .copied()
                .ok_or(VolumeError::NeedleNotFound {
                    volume: self.id,
                    key,
                })?;
            (loc, self.shared.reader.read_or_abort().clone(), generation)
        };
        let len = needle::record_len(loc.size);
        let mut buf = vec![0u8; len as usize];
        reader
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    self.shared.metrics.crc_failures.inc();
                    VolumeError::Corrupt {
                        volume: self.id,
                        what: format!(
                            "needle {key:x} at offset {} lies past the end of the dat",
                            loc.offset
                        ),
                    }
                } else {
                    VolumeError::Io {
                        volume: self.id,
                        op: "read needle",
                        source,
                    }
                }
            })?;
        let rec = needle::decode(&buf).map_err(|e| {
            self.shared.metrics.crc_failures.inc();
            VolumeError::Corrupt {
                volume: self.id,
                what: format!("needle {key:x} at offset {}: {e}", loc.offset),
            }
        })?;
        let Some(n) = rec.needle.filter(|_| rec.header.key == key) else {
            self.shared.metrics.crc_failures.inc();
            return Err(VolumeError::Corrupt {
                volume: self.id,
                what: format!(
                    "index points needle {key:x} at a record of key {:x}",
                    rec.header.key
                ),
            });
        };
        if n.cookie != cookie {
            return Err(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            });
        }
        self.shared.metrics.reads.inc();
        self.shared.metrics.read_bytes.inc_by(n.data.len() as u64);
        Ok((
            ReadNeedle {
                needle: n,
                checksum: rec.checksum,
            },
            loc,
            generation,
        ))
    }
}

#[cfg(test)]
mod tests;
