//! Chunk arithmetic, free of I/O: how content is cut into chunks, which chunk bytes serve a
//! byte range and the file ETag (`Range` headers are parsed by `common::http::range`).

use bytes::{Bytes, BytesMut};
use common::api::filer::Chunk;
use common::ids::FileId;

/// The `(offset, len)` of each chunk of a `len`-byte file cut at `chunk_size` (which must be
/// positive). An empty file has no chunks.
pub fn split_chunks(len: u64, chunk_size: u64) -> Vec<(u64, u64)> {
    let chunk_size = chunk_size.max(1);
    let mut out = Vec::with_capacity(len.div_ceil(chunk_size).try_into().unwrap_or(0));
    let mut offset = 0;
    while offset < len {
        let n = chunk_size.min(len - offset);
        out.push((offset, n));
        offset += n;
    }
    out
}

/// Cuts a stream of body frames into chunks of exactly `chunk_size` bytes (the last one
/// shorter), holding at most one chunk plus one frame in memory.
#[derive(Debug)]
pub struct Chunker {
    chunk_size: usize,
    buf: BytesMut,
}

impl Chunker {
    /// A chunker cutting at `chunk_size` bytes (at least 1).
    pub fn new(chunk_size: usize) -> Self {
        Self {
            chunk_size: chunk_size.max(1),
            buf: BytesMut::new(),
        }
    }

    /// Appends a frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
    }

    /// Takes the next full chunk, if one is buffered.
    pub fn pop_full(&mut self) -> Option<Bytes> {
        (self.buf.len() >= self.chunk_size).then(|| self.buf.split_to(self.chunk_size).freeze())
    }

    /// Takes what is left at the end of the body (`None` if nothing).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// One piece of a byte range: bytes of a chunk, or zeros where no chunk covers the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes of chunk `index` starting `skip` bytes into the chunk.
    Chunk {
        /// Index into the entry's chunk list.
        index: usize,
        /// Bytes to skip at the start of the chunk.
        skip: u64,
        /// Bytes to take.
        len: u64,
    },
    /// A hole (sparse region) of `len` zero bytes.
    Zeros {
        /// Bytes of zeros.
        len: u64,
    },
}

impl Piece {
    /// Bytes this piece contributes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Chunk { len, .. } | Self::Zeros { len } => *len,
        }
    }

    /// Whether the piece is empty (never produced by [`chunks_for_range`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The pieces serving bytes `start..end` (exclusive end) of a file whose chunks are sorted by
/// offset and do not overlap (see [`check_layout`]). Gaps read as zeros.
pub fn chunks_for_range(chunks: &[Chunk], start: u64, end: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = start;
    // The first chunk that ends after `start`.
    let first = chunks.partition_point(|c| c.offset.saturating_add(c.size) <= start);
    for (index, c) in chunks.iter().enumerate().skip(first) {
        if pos >= end {
            break;
        }
        if c.size == 0 {
            continue;
        }
        if c.offset >= end {
            break;
        }
        if c.offset > pos {
            out.push(Piece::Zeros {
                len: c.offset - pos,
            });
            pos = c.offset;
        }
        let chunk_end = c.offset.saturating_add(c.size).min(end);
        if chunk_end > pos {
            out.push(Piece::Chunk {
                index,
                skip: pos - c.offset,
                len: chunk_end - pos,
            });
            pos = chunk_end;
        }
    }
    if pos < end {
        out.push(Piece::Zeros { len: end - pos });
    }
    out
}

/// Why a chunk list cannot describe a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Chunks are not sorted by offset or overlap.
    #[error("chunk {index} ({fid}) at offset {offset} overlaps or precedes the previous chunk")]
    Overlap {
        /// Index of the offending chunk.
        index: usize,
        /// Its fid.
        fid: String,
        /// Its offset.
        offset: u64,
    },
    /// A chunk ends past `u64::MAX` or past the file size.
    #[error("chunk {index} ({fid}) ends past the file size {size}")]
    PastEnd {
        /// Index of the offending chunk.
        index: usize,
        /// Its fid.
        fid: String,
        /// The file size.
        size: u64,
    },
    /// A chunk has an empty fid.
    #[error("chunk {index} has no fid")]
    NoFid {
        /// Index of the offending chunk.
        index: usize,
    },
    /// A chunk's fid is not a file id, so it could never be read.
    #[error("chunk {index} has {fid:?}, which is not a file id")]
    BadFid {
        /// Index of the offending chunk.
        index: usize,
        /// Its fid.
        fid: String,
    },
}

/// Checks that chunks are sorted, non-overlapping, named by file ids and within `size`.
pub fn check_layout(chunks: &[Chunk], size: u64) -> Result<(), LayoutError> {
    let mut prev_end = 0u64;
    for (index, c) in chunks.iter().enumerate() {
        if c.fid.is_empty() {
            return Err(LayoutError::NoFid { index });
        }
        if c.fid.parse::<FileId>().is_err() {
            return Err(LayoutError::BadFid {
                index,
                fid: c.fid.clone(),
            });
        }
        if c.offset < prev_end {
            return Err(LayoutError::Overlap {
                index,
                fid: c.fid.clone(),
                offset: c.offset,
            });
        }
        let end = c
            .offset
            .checked_add(c.size)
            .filter(|e| *e <= size)
            .ok_or_else(|| LayoutError::PastEnd {
                index,
                fid: c.fid.clone(),
                size,
            })?;
        prev_end = end;
    }
    Ok(())
}

/// End of the last chunk (0 with no chunks).
pub fn chunks_end(chunks: &[Chunk]) -> u64 {
    chunks
        .iter()
        .map(|c| c.offset.saturating_add(c.size))
        .max()
        .unwrap_or(0)
}

/// The file's ETag (quoted): the chunk's own ETag for one chunk, otherwise a crc32c over the
/// chunks' fids and ETags with the chunk count, like S3 multipart ETags.
pub fn file_etag(chunks: &[Chunk]) -> String {
    match chunks {
        [one] if !one.etag.is_empty() => format!("\"{}\"", one.etag.trim_matches('"')),
        _ => {
            let mut crc = 0u32;
            for c in chunks {
                crc = crc32c::crc32c_append(crc, c.fid.as_bytes());
                crc = crc32c::crc32c_append(crc, c.etag.as_bytes());
            }
            format!("\"{crc:08x}-{}\"", chunks.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(offset: u64, size: u64) -> Chunk {
        Chunk {
            fid: format!("1,{offset:x}00000001"),
            offset,
            size,
            etag: String::new(),
        }
    }

    #[test]
    fn test_split_chunks_edges() {
        assert!(split_chunks(0, 4).is_empty());
        assert_eq!(split_chunks(4, 4), vec![(0, 4)]);
        assert_eq!(split_chunks(5, 4), vec![(0, 4), (4, 1)]);
        assert_eq!(split_chunks(3, 4), vec![(0, 3)]);
    }

    #[test]
    fn test_chunks_for_range_spans_chunks() {
        let chunks = vec![chunk(0, 4), chunk(4, 4), chunk(8, 2)];
        assert_eq!(
            chunks_for_range(&chunks, 3, 9),
            vec![
                Piece::Chunk {
                    index: 0,
                    skip: 3,
                    len: 1
                },
                Piece::Chunk {
                    index: 1,
                    skip: 0,
                    len: 4
                },
                Piece::Chunk {
                    index: 2,
                    skip: 0,
                    len: 1
                },
            ]
        );
        assert!(chunks_for_range(&chunks, 5, 5).is_empty());
    }

    #[test]
    fn test_chunks_for_range_fills_holes_with_zeros() {
        let chunks = vec![chunk(2, 2)];
        assert_eq!(
            chunks_for_range(&chunks, 0, 6),
            vec![
                Piece::Zeros { len: 2 },
                Piece::Chunk {
                    index: 0,
                    skip: 0,
                    len: 2
                },
                Piece::Zeros { len: 2 },
            ]
        );
    }

    #[test]
    fn test_check_layout() {
        check_layout(&[chunk(0, 4), chunk(4, 4)], 8).unwrap();
        check_layout(&[chunk(0, 4), chunk(6, 4)], 12).unwrap();
        assert!(matches!(
            check_layout(&[chunk(0, 4), chunk(3, 4)], 8),
            Err(LayoutError::Overlap { .. })
        ));
        assert!(matches!(
            check_layout(&[chunk(4, 4), chunk(0, 4)], 8),
            Err(LayoutError::Overlap { .. })
        ));
        assert!(matches!(
            check_layout(&[chunk(0, 4)], 3),
            Err(LayoutError::PastEnd { .. })
        ));
        assert!(matches!(
            check_layout(&[chunk(u64::MAX, 4)], u64::MAX),
            Err(LayoutError::PastEnd { .. })
        ));
        let mut c = chunk(0, 1);
        c.fid.clear();
        assert!(matches!(
            check_layout(&[c], 1),
            Err(LayoutError::NoFid { .. })
        ));
        // Found by scripts/api-fuzz.sh: an entry naming a chunk "nonsense" was stored and
        // then every read of it was a 500.
        let mut c = chunk(0, 1);
        c.fid = "nonsense".into();
        assert!(matches!(
            check_layout(&[c], 1),
            Err(LayoutError::BadFid { index: 0, .. })
        ));
    }

    #[test]
    fn test_file_etag() {
        let mut one = chunk(0, 1);
        one.etag = "abcd".to_owned();
        assert_eq!(file_etag(std::slice::from_ref(&one)), "\"abcd\"");
        let two = file_etag(&[one.clone(), chunk(1, 1)]);
        assert!(two.ends_with("-2\""), "{two}");
        assert_eq!(file_etag(&[]), "\"00000000-0\"");
    }

    proptest! {
        #[test]
        fn test_split_chunks_cover_exactly(len in 0u64..10_000, size in 1u64..600) {
            let parts = split_chunks(len, size);
            let mut pos = 0;
            for (i, (off, n)) in parts.iter().enumerate() {
                prop_assert_eq!(*off, pos);
                prop_assert!(*n > 0 && *n <= size);
                if i + 1 < parts.len() { prop_assert_eq!(*n, size); }
                pos += n;
            }
            prop_assert_eq!(pos, len);
        }

        #[test]
        fn test_chunker_matches_split_chunks(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                             frames in proptest::collection::vec(1usize..500, 1..20),
                                             size in 1usize..700) {
            let mut chunker = Chunker::new(size);
            let mut out: Vec<Bytes> = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = frames[i % frames.len()].min(rest.len());
                chunker.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(c) = chunker.pop_full() { out.push(c); }
            }
            out.extend(chunker.finish());
            let expected = split_chunks(data.len() as u64, size as u64);
            prop_assert_eq!(out.len(), expected.len());
            for (c, (off, n)) in out.iter().zip(expected) {
                prop_assert_eq!(&c[..], &data[off as usize..(off + n) as usize]);
            }
        }

        #[test]
        fn test_chunks_for_range_reassembles_exact_bytes(
            data in proptest::collection::vec(any::<u8>(), 1..2000),
            size in 1u64..300,
            a in 0u64..2000, b in 0u64..2000,
        ) {
            let len = data.len() as u64;
            let chunks: Vec<Chunk> = split_chunks(len, size).into_iter().map(|(o, n)| chunk(o, n)).collect();
            check_layout(&chunks, len).unwrap();
            let (start, end) = (a.min(b).min(len), a.max(b).min(len));
            let mut out = Vec::new();
            for p in chunks_for_range(&chunks, start, end) {
                prop_assert!(!p.is_empty());
                match p {
                    Piece::Chunk { index, skip, len } => {
                        let c = &chunks[index];
                        prop_assert!(skip + len <= c.size);
                        let from = (c.offset + skip) as usize;
                        out.extend_from_slice(&data[from..from + len as usize]);
                    }
                    Piece::Zeros { .. } => prop_assert!(false, "no holes in a dense layout"),
                }
            }
            prop_assert_eq!(&out[..], &data[start as usize..end as usize]);
        }
    }
}
