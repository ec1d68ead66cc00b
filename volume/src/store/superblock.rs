//! The 8-byte superblock at the start of every `.dat`.
//!
//! ```text
//! version u8 (3) | replication u8 | ttl u16 (0) | crc32c u32
//! ```
//! Big-endian. `crc32c` is CRC-32C over `"kelp-superblock"` followed by the first four bytes,
//! so a flipped replication byte (which would silently turn `001` into one copy) is caught.
//!
//! Superblocks written before the checksum existed hold zeros in bytes 4..8 (SeaweedFS's unused
//! compaction revision and extra size). They still load, with a warning, since nothing can
//! check them; a checksum that is present and wrong refuses the volume (it is quarantined).
//! The salt makes the checksum of every valid first half non-zero (tested), so "zero" always
//! means "old format".

use common::api::master::Replication;

/// Bytes of the superblock.
pub const LEN: usize = 8;
/// The needle format version written in the superblock.
pub const VERSION: u8 = 3;
const SALT: &[u8] = b"kelp-superblock";

/// A decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Replica placement of the volume.
    pub replication: Replication,
    /// Whether it carried a checksum (false for superblocks of older Kelp versions).
    pub checksummed: bool,
}

/// Why a superblock is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// An unknown needle version.
    #[error("superblock version {found}, expected {VERSION}")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The checksum does not match.
    #[error("superblock checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// Stored checksum.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
}

fn checksum(head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(SALT), head)
}

/// Encodes the superblock of a new volume.
pub fn encode(replication: Replication) -> [u8; LEN] {
    let mut sb = [0u8; LEN];
    sb[0] = VERSION;
    sb[1] = replication.to_byte();
    let crc = checksum(&sb[..4]);
    sb[4..].copy_from_slice(&crc.to_be_bytes());
    sb
}

/// Decodes and verifies a superblock.
pub fn decode(sb: &[u8; LEN]) -> Result<Superblock, SuperblockError> {
    if sb[0] != VERSION {
        return Err(SuperblockError::Version { found: sb[0] });
    }
    let stored = u32::from_be_bytes([sb[4], sb[5], sb[6], sb[7]]);
    let checksummed = stored != 0;
    if checksummed {
        let computed = checksum(&sb[..4]);
        if stored != computed {
            return Err(SuperblockError::Checksum { stored, computed });
        }
    }
    Ok(Superblock {
        replication: Replication::from_byte(sb[1]),
        checksummed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_superblock_round_trip() {
        for r in ["000", "001", "010", "100", "200"] {
            let rep: Replication = r.parse().unwrap();
            let sb = decode(&encode(rep)).unwrap();
            assert_eq!(sb.replication, rep);
            assert!(sb.checksummed);
        }
    }

    #[test]
    fn test_superblock_every_flipped_bit_is_caught() {
        let sb = encode("001".parse().unwrap());
        for i in 0..LEN {
            for bit in 0..8 {
                let mut bad = sb;
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {i}");
            }
        }
    }

    #[test]
    fn test_superblock_old_format_loads_unchecked() {
        let old = [
            VERSION,
            "001".parse::<Replication>().unwrap().to_byte(),
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let sb = decode(&old).unwrap();
        assert!(!sb.checksummed);
        assert_eq!(sb.replication, "001".parse().unwrap());
    }

    #[test]
    fn test_superblock_checksum_is_never_zero() {
        // Zero marks the old format, so no valid first half may checksum to zero.
        for rep in 0..=255u8 {
            for ttl in [[0u8, 0], [0xff, 0xff]] {
                assert_ne!(checksum(&[VERSION, rep, ttl[0], ttl[1]]), 0);
            }
        }
    }

    #[test]
    fn test_superblock_torn_is_refused() {
        let mut sb = encode(Replication::default());
        sb[6..].fill(0);
        assert!(decode(&sb).is_err());
    }
}
