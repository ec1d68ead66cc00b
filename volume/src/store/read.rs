//! The read path of a volume: reads by key, ranged reads of big needles, and the scrub of
//! every live needle.
//!
//! # Invariant
//! A needle is served only if the record the index points at was read whole, from the `.dat`
//! that location belongs to, its CRC-32C holds and its header names the key asked for. A
//! ranged read ([`Volume::read_range`]) keeps the same rule with bounded memory: it streams
//! the whole record through the CRC in chunks, keeps only the range, and returns nothing
//! unless the CRC holds. The
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
        let (loc, reader, generation) = self.locate(key)?;
        let len = needle::record_len(loc.size);
        let mut buf = vec![0u8; len as usize];
        self.read_at(&reader, &mut buf, loc.offset, key)?;
        let buf = bytes::Bytes::from(buf);
        let rec = needle::decode_shared(&buf).map_err(|e| self.corrupt(key, loc, e))?;
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

    /// Reads bytes `range` of the data of needle `key` with memory bounded by the range: the
    /// record is streamed through its checksum in chunks of `RANGE_CHUNK` bytes, keeping only
    /// the range, the first `SNIFF_LEN` bytes (for content sniffing) and the metadata, and
    /// nothing is returned unless the checksum of the whole record holds (the read invariant).
    ///
    /// `pick` gets the blob's length and names the inclusive range to keep; `None` (the range
    /// is not a satisfiable part of the blob), or a record that does not look like the needle
    /// asked for, answers `Ok(None)`: the caller does a whole [`Volume::read`], which reports
    /// what is wrong.
    pub fn read_range(
        &self,
        key: u64,
        cookie: u32,
        pick: impl FnOnce(u64) -> Option<(u64, u64)>,
    ) -> Result<Option<RangeRead>, VolumeError> {
        let (loc, reader, _) = self.locate(key)?;
        let mut prefix = [0u8; needle::HEADER_LEN + 4];
        self.read_at(&reader, &mut prefix, loc.offset, key)?;
        let header = needle::Header::decode(
            prefix[..needle::HEADER_LEN]
                .try_into()
                .expect("a header's bytes"),
        );
        let data_len = u64::from(u32::from_be_bytes(
            prefix[needle::HEADER_LEN..].try_into().expect("4 bytes"),
        ));
        let size = u64::from(header.size);
        if header.key != key || header.size != loc.size || data_len + 5 > size {
            return Ok(None);
        }
        let Some((start, end)) = pick(data_len).filter(|(s, e)| s <= e && *e < data_len) else {
            return Ok(None);
        };
        let body_end = needle::HEADER_LEN as u64 + size;
        let data_at = needle::HEADER_LEN as u64 + 4;
        let keep = (data_at + start)..(data_at + end + 1);
        let sniff = data_at..(data_at + data_len.min(SNIFF_LEN));
        let meta = (data_at + data_len)..body_end;
        let (mut range, mut head, mut after) = (Vec::new(), Vec::new(), Vec::new());
        range.reserve_exact((end - start + 1) as usize);
        let mut crc = 0u32;
        let mut chunk = vec![0u8; RANGE_CHUNK.min(body_end as usize)];
        let mut pos = 0u64;
        while pos < body_end {
            let n = RANGE_CHUNK.min((body_end - pos) as usize);
            let buf = &mut chunk[..n];
            self.read_at(&reader, buf, loc.offset + pos, key)?;
            crc = crc32c::crc32c_append(crc, buf);
            let span = pos..pos + n as u64;
            for (want, out) in [
                (&keep, &mut range),
                (&sniff, &mut head),
                (&meta, &mut after),
            ] {
                let (from, to) = (want.start.max(span.start), want.end.min(span.end));
                if from < to {
                    out.extend_from_slice(&buf[(from - pos) as usize..(to - pos) as usize]);
                }
            }
            pos += n as u64;
        }
        let mut footer = [0u8; 4];
        self.read_at(&reader, &mut footer, loc.offset + body_end, key)?;
        let stored = u32::from_be_bytes(footer);
        if stored != crc {
            let e = needle::NeedleError::Checksum {
                stored,
                computed: crc,
            };
            return Err(self.corrupt(key, loc, e));
        }
        let mut n = needle::decode_meta(&header, &after).map_err(|e| self.corrupt(key, loc, e))?;
        if n.cookie != cookie {
            return Err(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            });
        }
        n.data = range.into();
        self.shared.metrics.reads.inc();
        self.shared.metrics.read_bytes.inc_by(end - start + 1);
        Ok(Some(RangeRead {
            needle: n,
            start,
            total: data_len,
            head: head.into(),
            checksum: stored,
        }))
    }

    /// Where the live needle `key` lies, with the `.dat` reader of that location's generation
    /// (taken together under the index's read lock).
    fn locate(&self, key: u64) -> Result<(Loc, std::sync::Arc<std::fs::File>, u64), VolumeError> {
        let index = self.shared.index.read_or_abort();
        let generation = self.shared.generation.load(Ordering::Acquire);
        let loc = index
            .get(&key)
            .copied()
            .ok_or(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            })?;
        Ok((loc, self.shared.reader.read_or_abort().clone(), generation))
    }

    /// Reads `buf.len()` bytes of needle `key`'s record at `offset`; a record cut short by the
    /// end of the `.dat` is corrupt (and counted), other errors are I/O errors.
    fn read_at(
        &self,
        reader: &std::fs::File,
        buf: &mut [u8],
        offset: u64,
        key: u64,
    ) -> Result<(), VolumeError> {
        reader.read_exact_at(buf, offset).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                self.shared.metrics.crc_failures.inc();
                VolumeError::Corrupt {
                    volume: self.id,
                    what: format!("needle {key:x} at offset {offset} lies past the end of the dat"),
                }
            } else {
                VolumeError::Io {
                    volume: self.id,
                    op: "read needle",
                    source,
                }
            }
        })
    }

    /// The error for a record of needle `key` that fails its checks (counted in
    /// `crc_failures`).
    fn corrupt(&self, key: u64, loc: Loc, e: needle::NeedleError) -> VolumeError {
        self.shared.metrics.crc_failures.inc();
        VolumeError::Corrupt {
            volume: self.id,
            what: format!("needle {key:x} at offset {}: {e}", loc.offset),
        }
    }
}

/// Bytes a ranged read streams through the checksum at a time.
pub const RANGE_CHUNK: usize = 1 << 20;
/// Leading bytes of a blob a ranged read keeps for content sniffing.
pub const SNIFF_LEN: u64 = 512;

/// Part of a needle's data, checksum verified ([`Volume::read_range`]).
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// The needle's metadata, `data` holding only the range.
    pub needle: Needle,
    /// Where the range starts in the blob.
    pub start: u64,
    /// The blob's whole length.
    pub total: u64,
    /// The blob's first bytes (at most `SNIFF_LEN`).
    pub head: bytes::Bytes,
    /// The record's checksum (the ETag).
    pub checksum: u32,
}

#[cfg(test)]
mod tests;
