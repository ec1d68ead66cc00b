//! The needle: one blob as stored in a `.dat` file.
//!
//! ```text
//! header   cookie u32 | key u64 | size u32                         (16 bytes)
//! body     data_size u32 | data | flags u8
//!          | [name_len u8 | name]          if flags & HAS_NAME
//!          | [mime_len u8 | mime]          if flags & HAS_MIME
//!          | [last_modified u64]           if flags & HAS_LAST_MODIFIED
//! footer   checksum u32 | append_at_ns u64 | zero padding to a multiple of 8
//! ```
//! All integers are big-endian, following SeaweedFS's version-3 needle. `size` is the body's
//! length; a body of size 0 is a tombstone (a deletion record), which an empty blob never is
//! (its body still holds `data_size` and `flags`).
//!
//! Kelp departs from SeaweedFS in one place: the checksum is CRC-32C over the header *and* the
//! body, not the data alone, so a flipped bit in the key, cookie, size or metadata is caught
//! too, not only one in the data. The ETag served for a needle is this checksum in hex.

use bytes::Bytes;

/// Bytes before the body.
pub const HEADER_LEN: usize = 16;
/// Checksum and timestamp after the body.
pub const FOOTER_LEN: usize = 12;
/// Needles start at multiples of this.
pub const ALIGN: u64 = 8;

/// Flag: a name follows the data.
pub(crate) const HAS_NAME: u8 = 0x01;
/// Flag: a MIME type follows the name.
pub(crate) const HAS_MIME: u8 = 0x02;
/// Flag: a last-modified time follows the MIME type.
pub(crate) const HAS_LAST_MODIFIED: u8 = 0x04;
/// Every flag a body may carry.
pub(crate) const KNOWN_FLAGS: u8 = HAS_NAME | HAS_MIME | HAS_LAST_MODIFIED;

/// Largest body a needle may have. The `.idx` stores a size as an `i32` (-1 marks a deletion),
/// so a body of 2 GiB or more would read back as a deletion after a restart: it is refused.
pub const MAX_BODY_SIZE: u32 = i32::MAX as u32;
/// Most bytes a body holds besides the data: `data_size`, flags, a name and a MIME type of 255
/// bytes each with their lengths, and the last-modified time.
pub const MAX_BODY_OVERHEAD: u64 = 4 + 1 + (1 + 255) * 2 + 8;
/// Largest blob whose needle fits [`MAX_BODY_SIZE`] whatever its metadata.
pub const MAX_DATA_LEN: u64 = MAX_BODY_SIZE as u64 - MAX_BODY_OVERHEAD;

/// Why bytes are not a valid needle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedleError {
    /// The body would not fit the format's size field (see [`MAX_BODY_SIZE`]).
    #[error("needle body of {size} bytes exceeds the largest the format holds ({MAX_BODY_SIZE})")]
    TooLarge {
        /// Body bytes.
        size: u64,
    },
    /// Fewer bytes than the header's size calls for: a torn tail.
    #[error("needle truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the record needs.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The checksum does not match the content.
    #[error("needle checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// Checksum in the footer.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// The body's inner lengths are inconsistent.
    #[error("needle body malformed: {0}")]
    Malformed(&'static str),
}

/// The fixed header of a needle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The cookie that must match on read and delete.
    pub cookie: u32,
    /// The needle key.
    pub key: u64,
    /// The body length (0 for a tombstone).
    pub size: u32,
}

impl Header {
    /// Decodes a header from its 16 bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            cookie: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            key: u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
            size: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Length of the whole record (header, body, footer, padding).
    pub fn record_len(&self) -> u64 {
        record_len(self.size)
    }
}

/// Length of a record whose body is `size` bytes, padding included.
pub fn record_len(size: u32) -> u64 {
    let raw = (HEADER_LEN + FOOTER_LEN) as u64 + u64::from(size);
    raw.div_ceil(ALIGN) * ALIGN
}

/// A blob and its metadata, as written by a client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needle {
    /// The cookie.
    pub cookie: u32,
    /// The key.
    pub key: u64,
    /// The blob.
    pub data: Bytes,
    /// File name, if given (at most 255 bytes are kept).
    pub name: Option<String>,
    /// MIME type, if given (at most 255 bytes are kept).
    pub mime: Option<String>,
    /// Last-modified time in seconds since the epoch, if given.
    pub last_modified: Option<u64>,
}

/// A decoded record: a blob, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The header.
    pub header: Header,
    /// The needle (`None` for a tombstone).
    pub needle: Option<Needle>,
    /// The stored checksum.
    pub checksum: u32,
    /// When it was appended, nanoseconds since the epoch.
    pub append_at_ns: u64,
}

fn truncate_255(s: &str) -> &[u8] {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

impl Needle {
    fn body_len(&self) -> usize {
        let mut n = 4 + self.data.len() + 1;
        if let Some(name) = &self.name {
            n += 1 + truncate_255(name).len();
        }
        if let Some(mime) = &self.mime {
            n += 1 + truncate_255(mime).len();
        }
        if self.last_modified.is_some() {
            n += 8;
        }
        n
    }

    /// Encodes the record; returns it and its checksum. Fails if the body is over
    /// [`MAX_BODY_SIZE`].
    pub fn encode(&self, append_at_ns: u64) -> Result<(Vec<u8>, u32), NeedleError> {
        let size = body_size(self.body_len() as u64)?;
        let total = record_len(size) as usize;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
        let mut flags = 0;
        if self.name.is_some() {
            flags |= HAS_NAME;
        }
        if self.mime.is_some() {
            flags |= HAS_MIME;
        }
        if self.last_modified.is_some() {
            flags |= HAS_LAST_MODIFIED;
        }
        out.push(flags);
        for s in [&self.name, &self.mime].into_iter().flatten() {
            let b = truncate_255(s);
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        if let Some(t) = self.last_modified {
            out.extend_from_slice(&t.to_be_bytes());
        }
        let checksum = crc32c::crc32c(&out);
        out.extend_from_slice(&checksum.to_be_bytes());
        out.extend_from_slice(&append_at_ns.to_be_bytes());
        out.resize(total, 0);
        Ok((out, checksum))
    }
}

/// The header's `size` for a body of `body_len` bytes, if the format holds it.
pub fn body_size(body_len: u64) -> Result<u32, NeedleError> {
    u32::try_from(body_len)
        .ok()
        .filter(|s| *s <= MAX_BODY_SIZE)
        .ok_or(NeedleError::TooLarge { size: body_len })
}

/// Encodes a tombstone record for `key`.
pub fn encode_tombstone(cookie: u32, key: u64, append_at_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(record_len(0) as usize);
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let checksum = crc32c::crc32c(&out);
    out.extend_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(&append_at_ns.to_be_bytes());
    out.resize(record_len(0) as usize, 0);
    out
}

/// Decodes and verifies one record from the start of `buf` (which may hold more bytes).
pub fn decode(buf: &[u8]) -> Result<Record, NeedleError> {
    decode_with(buf, |data| Bytes::copy_from_slice(&buf[data]))
}

/// [`decode`] of a record read into `buf`: the needle's data shares `buf`'s memory instead of
/// being copied out of it (a whole read of a big needle holds it once, not twice).
pub fn decode_shared(buf: &Bytes) -> Result<Record, NeedleError> {
    decode_with(buf, |data| buf.slice(data))
}

/// [`decode`], the data taken from `buf` by `data` given its range.
fn decode_with(
    buf: &[u8],
    data: impl FnOnce(std::ops::Range<usize>) -> Bytes,
) -> Result<Record, NeedleError> {
    let have = buf.len() as u64;
    let head: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(NeedleError::Truncated {
            need: HEADER_LEN as u64,
            have,
        })?;
    let header = Header::decode(head);
    if header.size > MAX_BODY_SIZE {
        return Err(NeedleError::TooLarge {
            size: u64::from(header.size),
        });
    }
    let need = header.record_len();
    if have < need {
        return Err(NeedleError::Truncated { need, have });
    }
    let body_end = HEADER_LEN + header.size as usize;
    let computed = crc32c::crc32c(&buf[..body_end]);
    let stored = u32::from_be_bytes(buf[body_end..body_end + 4].try_into().expect("4 bytes"));
    if stored != computed {
        return Err(NeedleError::Checksum { stored, computed });
    }
    let append_at_ns = u64::from_be_bytes(
        buf[body_end + 4..body_end + 12]
            .try_into()
            .expect("8 bytes"),
    );
    let needle = if header.size == 0 {
        None
    } else {
        Some(decode_body(&header, &buf[HEADER_LEN..body_end], |r| {
            data(HEADER_LEN + r.start..HEADER_LEN + r.end)
        })?)
    };
    Ok(Record {
        header,
        needle,
        checksum: stored,
        append_at_ns,
    })
}

/// Decodes a record's body; `data` turns the range of the blob within `body` into its bytes.
fn decode_body(
    header: &Header,
    body: &[u8],
    data: impl FnOnce(std::ops::Range<usize>) -> Bytes,
) -> Result<Needle, NeedleError> {
    let mut r = Reader { buf: body, pos: 0 };
    let data_len = r.u32()? as usize;
    let start = r.pos;
    r.take(data_len)?;
    let data = data(start..start + data_len);
    let mut n = decode_meta_from(header, &mut r)?;
    n.data = data;
    Ok(n)
}

/// Decodes the metadata that follows a needle's data (`flags` and what they announce, to the
/// end of the body) into a [`Needle`] with empty `data`: what a ranged read that streamed the
/// data through the checksum keeps. The caller has verified the record's checksum.
pub fn decode_meta(header: &Header, after_data: &[u8]) -> Result<Needle, NeedleError> {
    decode_meta_from(
        header,
        &mut Reader {
            buf: after_data,
            pos: 0,
        },
    )
}

fn decode_meta_from(header: &Header, r: &mut Reader<'_>) -> Result<Needle, NeedleError> {
    let flags = r.take(1)?[0];
    let mut name = None;
    let mut mime = None;
    if flags & HAS_NAME != 0 {
        let n = r.take(1)?[0] as usize;
        name = Some(String::from_utf8_lossy(r.take(n)?).into_owned());
    }
    if flags & HAS_MIME != 0 {
        let n = r.take(1)?[0] as usize;
        mime = Some(String::from_utf8_lossy(r.take(n)?).into_owned());
    }
    let last_modified = if flags & HAS_LAST_MODIFIED != 0 {
        Some(u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")))
    } else {
        None
    };
    if r.pos != r.buf.len() {
        return Err(NeedleError::Malformed("trailing bytes in body"));
    }
    Ok(Needle {
        cookie: header.cookie,
        key: header.key,
        data: Bytes::new(),
        name,
        mime,
        last_modified,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NeedleError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(NeedleError::Malformed("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(NeedleError::Malformed("field past end of body"))?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, NeedleError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Needle {
        Needle {
            cookie: 0x637037d6,
            key: 1,
            data: Bytes::from_static(b"hello kelp"),
            name: Some("hello.txt".into()),
            mime: Some("text/plain".into()),
            last_modified: Some(1_700_000_000),
        }
    }

    #[test]
    fn test_needle_round_trip() {
        let n = sample();
        let (rec, crc) = n.encode(42).unwrap();
        assert_eq!(rec.len() as u64 % ALIGN, 0);
        let r = decode(&rec).unwrap();
        assert_eq!(r.needle.unwrap(), n);
        assert_eq!(r.checksum, crc);
        assert_eq!(r.append_at_ns, 42);
    }

    #[test]
    fn test_needle_empty_blob_is_not_a_tombstone() {
        let n = Needle {
            key: 7,
            ..Default::default()
        };
        let (rec, _) = n.encode(0).unwrap();
        let r = decode(&rec).unwrap();
        assert!(r.header.size > 0);
        assert_eq!(r.needle.unwrap().data.len(), 0);
    }

    #[test]
    fn test_needle_tombstone_round_trip() {
        let rec = encode_tombstone(9, 5, 1);
        let r = decode(&rec).unwrap();
        assert_eq!(r.header.size, 0);
        assert!(r.needle.is_none());
        assert_eq!(r.header.key, 5);
    }

    #[test]
    fn test_needle_every_flipped_byte_is_caught() {
        let (rec, _) = sample().encode(42).unwrap();
        // Every byte up to the checksum's end is protected; append_at_ns and padding are not.
        let protected =
            HEADER_LEN + Header::decode(rec[..16].try_into().unwrap()).size as usize + 4;
        for i in 0..protected {
            let mut bad = rec.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn test_needle_body_size_bound() {
        // Regression for issue 11, finding 2: a 2 GiB body became a deletion after restart.
        assert_eq!(body_size(u64::from(MAX_BODY_SIZE)), Ok(MAX_BODY_SIZE));
        assert_eq!(
            body_size(u64::from(MAX_BODY_SIZE) + 1),
            Err(NeedleError::TooLarge {
                size: u64::from(MAX_BODY_SIZE) + 1
            })
        );
        assert!(body_size(1 << 32).is_err());
        // The largest body is still a live needle in an idx row, not a deletion.
        let row = super::super::idx::IdxRow {
            key: 1,
            offset_units: 1,
            size: MAX_BODY_SIZE as i32,
        };
        assert!(!row.is_delete());
        assert_eq!(row.body_size(), MAX_BODY_SIZE);
        // The largest blob with the longest metadata still fits.
        let n = Needle {
            name: Some("n".repeat(300)),
            mime: Some("m".repeat(300)),
            last_modified: Some(1),
            ..Default::default()
        };
        assert_eq!(n.body_len() as u64 + MAX_DATA_LEN, u64::from(MAX_BODY_SIZE));
    }

    #[test]
    fn test_needle_header_over_the_bound_is_rejected() {
        let mut rec = encode_tombstone(1, 2, 3);
        rec[12..16].copy_from_slice(&(MAX_BODY_SIZE + 1).to_be_bytes());
        assert!(matches!(decode(&rec), Err(NeedleError::TooLarge { .. })));
    }

    #[test]
    fn test_needle_torn_tail_is_truncated() {
        let (rec, _) = sample().encode(42).unwrap();
        for len in 0..rec.len() {
            assert!(
                matches!(decode(&rec[..len]), Err(NeedleError::Truncated { .. })),
                "torn at {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn test_needle_round_trips_any_blob(
            key: u64, cookie: u32,
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            name in proptest::option::of(".{0,300}"),
            mime in proptest::option::of("[a-z/]{0,40}"),
            lm: Option<u64>,
        ) {
            let n = Needle { cookie, key, data: Bytes::from(data), name, mime, last_modified: lm };
            let (rec, _) = n.encode(1).unwrap();
            let back = decode(&rec).unwrap();
            let shared = decode_shared(&Bytes::from(rec.to_vec())).unwrap();
            prop_assert_eq!(&shared, &back, "decode_shared decodes as decode does");
            let back = back.needle.unwrap();
            prop_assert_eq!(back.data, n.data);
            prop_assert_eq!(back.key, key);
            prop_assert_eq!(back.cookie, cookie);
            prop_assert_eq!(back.name.map(|s| s.len()), n.name.map(|s| truncate_255(&s).len()));
        }

        #[test]
        fn test_needle_decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&buf);
        }

        #[test]
        fn test_needle_decode_random_flips(flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..4)) {
            let (mut rec, _) = sample().encode(3).unwrap();
            let n = rec.len();
            for (i, x) in flips { rec[i % n] ^= x; }
            let _ = decode(&rec);
        }
    }
}
