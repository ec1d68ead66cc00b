//! The master's durable state: the largest volume id allocated and a ceiling on file keys.
//!
//! File `<dir>/master.state`, little-endian:
//! `magic u32 ("KLPM") | format_version u32 (1) | max_volume_id u32 | key_ceiling u64 | crc32c u32`
//! (the CRC covers everything before it). It is replaced atomically (temp, fsync, rename, fsync
//! dir). Keys are handed out from memory below the persisted ceiling; the ceiling is raised and
//! persisted *before* any key above it is handed out, so after a crash the master resumes at
//! the ceiling and never issues a key twice (it skips the unused rest of the last block).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::ids::VolumeId;

const MAGIC: u32 = u32::from_le_bytes(*b"KLPM");
const VERSION: u32 = 1;
const LEN: usize = 4 + 4 + 4 + 8 + 4;
/// Keys reserved per persisted step.
pub const KEY_STEP: u64 = 10_000;
/// Largest volume id [`Sequencer::observe`] follows (half the id space stays free above it).
pub const MAX_OBSERVED_VOLUME_ID: VolumeId = VolumeId::MAX / 2;
/// Largest file key [`Sequencer::observe`] follows (half the key space stays free above it).
pub const MAX_OBSERVED_KEY: u64 = u64::MAX / 2;

/// The persisted part of the master's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    /// Largest volume id ever allocated.
    pub max_volume_id: VolumeId,
    /// No key at or above this has been handed out.
    pub key_ceiling: u64,
}

impl Default for Persisted {
    fn default() -> Self {
        // Key 0 is never issued, so a file id always has a key part.
        Self {
            max_volume_id: 0,
            key_ceiling: 1,
        }
    }
}

impl Persisted {
    /// Encodes the state file.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_volume_id.to_le_bytes());
        b[12..20].copy_from_slice(&self.key_ceiling.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies the state file.
    pub fn decode(b: &[u8]) -> anyhow::Result<Self> {
        if b.len() != LEN {
            bail!("state file is {} bytes, expected {LEN}", b.len());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        if u32_at(0) != MAGIC {
            bail!("state file has a bad magic number");
        }
        if u32_at(4) != VERSION {
            bail!("state file has unknown format version {}", u32_at(4));
        }
        if crc32c::crc32c(&b[..20]) != u32_at(20) {
            bail!("state file checksum mismatch");
        }
        Ok(Self {
            max_volume_id: u32_at(8),
            key_ceiling: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
        })
    }
}

/// Allocates volume ids and file keys, persisting before handing anything out.
#[derive(Debug)]
pub struct Sequencer {
    path: PathBuf,
    persisted: Persisted,
    next_key: u64,
}

impl Sequencer {
    /// Loads `<dir>/master.state` (a fresh state when absent). A corrupt file refuses start-up:
    /// guessing could reissue ids.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("master.state");
        let persisted = match std::fs::read(&path) {
            Ok(b) => Persisted::decode(&b).with_context(|| format!("read {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        tracing::info!(
            max_volume_id = persisted.max_volume_id,
            next_key = persisted.key_ceiling,
            "master state loaded"
        );
        Ok(Self {
            path,
            next_key: persisted.key_ceiling,
            persisted,
        })
    }

    /// Largest volume id allocated.
    pub fn max_volume_id(&self) -> VolumeId {
        self.persisted.max_volume_id
    }

    /// The next key to be handed out.
    pub fn next_key(&self) -> u64 {
        self.next_key
    }

    fn persist(&mut self, next: Persisted) -> anyhow::Result<()> {
        common::fs::durable_overwrite(&self.path, &next.encode())
            .with_context(|| format!("write {}", self.path.display()))?;
        self.persisted = next;
        Ok(())
    }

    /// Reserves `count` consecutive keys and returns the first.
    pub fn next_keys(&mut self, count: u64) -> anyhow::Result<u64> {
        let first = self.next_key;
        let end = first.checked_add(count).context("file keys exhausted")?;
        if end > self.persisted.key_ceiling {
            self.persist(Persisted {
                key_ceiling: end.saturating_add(KEY_STEP),
                ..self.persisted
            })?;
        }
        self.next_key = end;
        Ok(first)
    }

    /// Allocates a new volume id.
    pub fn next_volume_id(&mut self) -> anyhow::Result<VolumeId> {
        let id = self
            .persisted
            .max_volume_id
            .checked_add(1)
            .context("volume ids exhausted")?;
        self.persist(Persisted {
            max_volume_id: id,
            ..self.persisted
        })?;
        Ok(id)
    }

    /// Raises the counters above what a volume server reports (a master whose state was lost
    /// or is older than the cluster still never reissues an id). Returns whether it changed.
    ///
    /// Reports are capped at [`MAX_OBSERVED_VOLUME_ID`] and [`MAX_OBSERVED_KEY`]: a volume id
    /// or key above them cannot come from this master's counting, only from a bogus heartbeat or
    /// a blob written directly under a made-up file id, and following it would exhaust the id
    /// space and fail every later assign.
    pub fn observe(&mut self, volume_id: VolumeId, max_key: u64) -> anyhow::Result<bool> {
        if volume_id > MAX_OBSERVED_VOLUME_ID || max_key > MAX_OBSERVED_KEY {
            tracing::warn!(
                volume_id,
                max_key,
                "a volume server reports ids beyond any this master hands out; capping them"
            );
        }
        let (volume_id, max_key) = (
            volume_id.min(MAX_OBSERVED_VOLUME_ID),
            max_key.min(MAX_OBSERVED_KEY),
        );
        let mut next = self.persisted;
        if volume_id > next.max_volume_id {
            next.max_volume_id = volume_id;
        }
        if max_key >= self.next_key {
            self.next_key = max_key + 1;
        }
        if self.next_key > next.key_ceiling {
            next.key_ceiling = self.next_key.saturating_add(KEY_STEP);
        }
        if next != self.persisted {
            self.persist(next)?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_state_round_trip() {
        let p = Persisted {
            max_volume_id: 7,
            key_ceiling: 123_456,
        };
        assert_eq!(Persisted::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn test_state_flipped_byte_is_rejected() {
        let enc = Persisted {
            max_volume_id: 7,
            key_ceiling: 99,
        }
        .encode();
        for i in 0..enc.len() {
            let mut b = enc;
            b[i] ^= 0x10;
            assert!(Persisted::decode(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn test_state_torn_file_is_rejected() {
        let enc = Persisted::default().encode();
        for len in 0..enc.len() {
            assert!(Persisted::decode(&enc[..len]).is_err());
        }
    }

    #[test]
    fn test_sequencer_never_reissues_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        let a = s.next_keys(5).unwrap();
        let v1 = s.next_volume_id().unwrap();
        drop(s);
        // A "crash": reload from disk alone.
        let mut s = Sequencer::load(dir.path()).unwrap();
        let b = s.next_keys(1).unwrap();
        assert!(b >= a + 5, "key {b} reissued (first batch started at {a})");
        assert!(s.next_volume_id().unwrap() > v1);
    }

    #[test]
    fn test_sequencer_observes_reported_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        s.observe(9, 50_000).unwrap();
        assert_eq!(s.max_volume_id(), 9);
        assert!(s.next_keys(1).unwrap() > 50_000);
        let mut s = Sequencer::load(dir.path()).unwrap();
        assert!(s.next_keys(1).unwrap() > 50_000);
    }

    /// Found by `scripts/api-fuzz.sh`: a heartbeat reporting key `u64::MAX` overflowed
    /// (a panic), and a reported volume id `u32::MAX` would have failed every later grow.
    #[test]
    fn test_sequencer_caps_absurd_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::load(dir.path()).unwrap();
        s.observe(VolumeId::MAX, u64::MAX).unwrap();
        assert_eq!(s.max_volume_id(), MAX_OBSERVED_VOLUME_ID);
        assert_eq!(s.next_keys(100_000).unwrap(), MAX_OBSERVED_KEY + 1);
        assert!(s.next_volume_id().unwrap() > MAX_OBSERVED_VOLUME_ID);
    }

    proptest! {
        #[test]
        fn test_state_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Persisted::decode(&b);
        }
    }
}
