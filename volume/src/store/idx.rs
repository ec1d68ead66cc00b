//! The `.idx` file: 16-byte rows `key u64 | offset/8 u32 | size i32` (big-endian), one per
//! needle appended to the `.dat`, in append order. `size` is -1 for a deletion, whose offset
//! points at the tombstone record. The `.idx` is a cache of the `.dat`: recovery re-derives any
//! rows lost in a crash by scanning the `.dat` past the last indexed needle.
//!
//! Rows carry no checksum and the file is not fsynced. Instead of a new row format, recovery
//! validates every row against the needle header it points at (same key, same size, in `.dat`
//! order) and drops the first row that does not match and all after it (see `store::recover`
//! for why), so a torn, zeroed, stale or flipped row can never place the scan inside a needle.

/// Bytes in one row.
pub const ROW_LEN: usize = 16;

/// One index row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxRow {
    /// Needle key (never 0).
    pub key: u64,
    /// Offset of the record in the `.dat`, in units of 8 bytes.
    pub offset_units: u32,
    /// Body size, or -1 for a deletion.
    pub size: i32,
}

impl IdxRow {
    /// Encodes the row.
    pub fn encode(&self) -> [u8; ROW_LEN] {
        let mut b = [0u8; ROW_LEN];
        b[..8].copy_from_slice(&self.key.to_be_bytes());
        b[8..12].copy_from_slice(&self.offset_units.to_be_bytes());
        b[12..].copy_from_slice(&self.size.to_be_bytes());
        b
    }

    /// Decodes a row.
    pub fn decode(b: &[u8; ROW_LEN]) -> Self {
        Self {
            key: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            offset_units: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            size: i32::from_be_bytes(b[12..].try_into().expect("4 bytes")),
        }
    }

    /// Byte offset of the record.
    pub fn offset(&self) -> u64 {
        u64::from(self.offset_units) * super::needle::ALIGN
    }

    /// Whether this row records a deletion.
    pub fn is_delete(&self) -> bool {
        self.size < 0
    }

    /// Body size of the record this row points at (0 for the tombstone of a deletion).
    pub fn body_size(&self) -> u32 {
        u32::try_from(self.size).unwrap_or(0)
    }

    /// Whether the row is plausible: a real key, an offset past the superblock, a size of -1 or
    /// more. A zeroed row (as a crash can leave) is not.
    pub fn is_plausible(&self) -> bool {
        self.key != 0 && self.offset() >= super::SUPERBLOCK_LEN && self.size >= -1
    }
}

/// Decodes the complete rows of an `.idx` file's bytes; a torn final row is ignored (the
/// caller truncates it). Returns the rows and the number of bytes they span.
pub fn decode_all(buf: &[u8]) -> (Vec<IdxRow>, usize) {
    let rows: Vec<IdxRow> = buf
        .chunks_exact(ROW_LEN)
        .map(|c| IdxRow::decode(c.try_into().expect("exact chunk")))
        .collect();
    let len = rows.len() * ROW_LEN;
    (rows, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_idx_row_round_trip() {
        let r = IdxRow {
            key: 0x0102030405060708,
            offset_units: 77,
            size: -1,
        };
        assert_eq!(IdxRow::decode(&r.encode()), r);
        assert!(r.is_delete());
        assert_eq!(r.offset(), 77 * 8);
    }

    #[test]
    fn test_idx_torn_tail_is_ignored() {
        let mut buf = Vec::new();
        for k in 1..=3u64 {
            buf.extend_from_slice(
                &IdxRow {
                    key: k,
                    offset_units: k as u32,
                    size: 10,
                }
                .encode(),
            );
        }
        for cut in 0..ROW_LEN {
            let (rows, len) = decode_all(&buf[..buf.len() - cut]);
            assert_eq!(rows.len(), if cut == 0 { 3 } else { 2 });
            assert_eq!(len, rows.len() * ROW_LEN);
        }
    }

    #[test]
    fn test_idx_zeroed_row_is_implausible() {
        let (rows, _) = decode_all(&[0u8; ROW_LEN]);
        assert!(!rows[0].is_plausible());
    }

    #[test]
    fn test_idx_flipped_byte_changes_row() {
        let r = IdxRow {
            key: 5,
            offset_units: 9,
            size: 100,
        };
        let enc = r.encode();
        for i in 0..ROW_LEN {
            let mut b = enc;
            b[i] ^= 1;
            assert_ne!(IdxRow::decode(&b), r);
        }
    }

    proptest! {
        #[test]
        fn test_idx_decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (rows, len) = decode_all(&buf);
            prop_assert!(len <= buf.len());
            for r in rows { let _ = r.is_plausible(); }
        }
    }
}
