//! The segment encoding: what a flush writes to a volume server and what a fetch decodes.
//!
//! A segment is one or more *batches* back to back, covering consecutive offsets. All integers
//! are little-endian.
//!
//! ```text
//! batch  = header (48 bytes) | body (body_len bytes)
//! header = magic u32 ("KLS1") | version u16 (1) | flags u16 (0, or 1 = Kafka batch)
//!          | first_offset u64 | record_count u32 | ts_min u64 | ts_max u64
//!          | body_len u32 | body_crc u32 (crc32c of the body)
//!          | header_crc u32 (crc32c of the 44 header bytes before it)
//! body   = record*  (exactly record_count records, filling the body)
//! record = len u32 (bytes after this field) | offset_delta u32 | timestamp_ms u64
//!          | key_len i32 (-1: no key) | key | value_len u32 | value
//!          | header_count u16 | (name_len u16 | name utf8 | value_len u32 | value utf8)*
//! ```
//!
//! A batch with flag 1 (`FLAG_KAFKA`) has instead one Kafka v2 record batch as its body,
//! stored as its producer sent it (any compression) with only its base offset rewritten to
//! `first_offset`; `record_count` is the number of offsets it spans. Such a batch is read
//! whole: a fetch of an offset inside it returns the whole batch.
//!
//! `offset_delta` is the record's offset minus the batch's `first_offset`; within a batch the
//! deltas are 0, 1, 2, … without gaps, and a segment's batches continue each other's offsets.
//! The broker encodes records into this form once, when they are published, and a flush only
//! prepends the batch headers. A reader verifies both checksums and every length and never
//! panics, whatever the bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Magic number of a batch header (`"KLS1"`).
pub const MAGIC: u32 = u32::from_le_bytes(*b"KLS1");
/// Current format version.
pub const VERSION: u16 = 1;
/// Size of a batch header.
pub const HEADER_LEN: usize = 48;
/// Flag of a batch whose body is one Kafka v2 record batch.
pub const FLAG_KAFKA: u16 = 1;
/// Fixed part of a record: len, offset_delta, timestamp, key_len, value_len, header_count.
pub const RECORD_OVERHEAD: usize = 4 + 4 + 8 + 4 + 4 + 2;

/// Why a segment cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The bytes end inside a header or body.
    #[error("segment is torn at byte {at}: {need} more bytes needed")]
    Torn {
        /// Byte position where the missing part starts.
        at: usize,
        /// How many bytes are missing.
        need: usize,
    },
    /// The header does not start with the magic number.
    #[error("batch at byte {at} has a bad magic number")]
    BadMagic {
        /// Byte position of the batch.
        at: usize,
    },
    /// The header has flags this version does not know.
    #[error("batch at byte {at} has unknown flags {flags:#x}")]
    BadFlags {
        /// Byte position of the batch.
        at: usize,
        /// The flags found.
        flags: u16,
    },
    /// The header was written by a newer or unknown version.
    #[error("batch at byte {at} has unsupported version {version}")]
    BadVersion {
        /// Byte position of the batch.
        at: usize,
        /// The version found.
        version: u16,
    },
    /// The header checksum does not match.
    #[error("batch header at byte {at} fails its checksum")]
    HeaderCrc {
        /// Byte position of the batch.
        at: usize,
    },
    /// The body checksum does not match.
    #[error("batch at byte {at} (first offset {first_offset}) fails its body checksum")]
    BodyCrc {
        /// Byte position of the batch.
        at: usize,
        /// The batch's first offset.
        first_offset: u64,
    },
    /// A record is malformed although the checksum matched (a writer bug).
    #[error("batch with first offset {first_offset} has a malformed record {index}: {what}")]
    BadRecord {
        /// The batch's first offset.
        first_offset: u64,
        /// Index of the record in its batch.
        index: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// Batches do not continue each other's offsets.
    #[error("batch at byte {at} starts at offset {found}, expected {expected}")]
    OffsetGap {
        /// Byte position of the batch.
        at: usize,
        /// Offset the batch should start at.
        expected: u64,
        /// Offset it starts at.
        found: u64,
    },
    /// The segment holds no batch.
    #[error("segment is empty")]
    Empty,
}

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub first_offset: u64,
    /// Number of records.
    pub record_count: u32,
    /// Smallest record timestamp (ms).
    pub ts_min: u64,
    /// Largest record timestamp (ms).
    pub ts_max: u64,
    /// Body length in bytes.
    pub body_len: u32,
    /// crc32c of the body.
    pub body_crc: u32,
    /// Flags: [`FLAG_KAFKA`] or 0.
    pub flags: u16,
}

impl BatchHeader {
    /// Encodes the header (its own checksum included).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&VERSION.to_le_bytes());
        h[6..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.first_offset.to_le_bytes());
        h[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        h[20..28].copy_from_slice(&self.ts_min.to_le_bytes());
        h[28..36].copy_from_slice(&self.ts_max.to_le_bytes());
        h[36..40].copy_from_slice(&self.body_len.to_le_bytes());
        h[40..44].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[..44]);
        h[44..48].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks the header at the start of `buf`; `at` is its position, for errors.
    pub fn decode(buf: &[u8], at: usize) -> Result<Self, SegmentError> {
        if buf.len() < HEADER_LEN {
            return Err(SegmentError::Torn {
                at: at + buf.len(),
                need: HEADER_LEN - buf.len(),
            });
        }
        if le_u32(buf, 0) != MAGIC {
            return Err(SegmentError::BadMagic { at });
        }
        if crc32c::crc32c(&buf[..44]) != le_u32(buf, 44) {
            return Err(SegmentError::HeaderCrc { at });
        }
        let version = le_u16(buf, 4);
        if version != VERSION {
            return Err(SegmentError::BadVersion { at, version });
        }
        let flags = le_u16(buf, 6);
        if flags & !FLAG_KAFKA != 0 {
            return Err(SegmentError::BadFlags { at, flags });
        }
        Ok(Self {
            flags,
            first_offset: le_u64(buf, 8),
            record_count: le_u32(buf, 16),
            ts_min: le_u64(buf, 20),
            ts_max: le_u64(buf, 28),
            body_len: le_u32(buf, 36),
            body_crc: le_u32(buf, 40),
        })
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encoded size of one record.
pub fn record_len<H: AsRef<str>>(key: Option<&[u8]>, value: &[u8], headers: &[(H, H)]) -> usize {
    RECORD_OVERHEAD
        + key.map_or(0, <[u8]>::len)
        + value.len()
        + headers
            .iter()
            .map(|(n, v)| 2 + n.as_ref().len() + 4 + v.as_ref().len())
            .sum::<usize>()
}

/// Appends one encoded record to `out`. The caller guarantees (by validating the record
/// first) that key and value are under 2 GiB, headers number at most 65535 and names are at
/// most 65535 bytes.
pub fn encode_record<H: AsRef<str>>(
    out: &mut BytesMut,
    offset_delta: u32,
    timestamp_ms: u64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(H, H)],
) {
    let len = record_len(key, value, headers) - 4;
    out.reserve(len + 4);
    out.put_u32_le(len as u32);
    out.put_u32_le(offset_delta);
    out.put_u64_le(timestamp_ms);
    match key {
        Some(k) => {
            out.put_i32_le(k.len() as i32);
            out.put_slice(k);
        }
        None => out.put_i32_le(-1),
    }
    out.put_u32_le(value.len() as u32);
    out.put_slice(value);
    out.put_u16_le(headers.len() as u16);
    for (n, v) in headers {
        let (n, v) = (n.as_ref().as_bytes(), v.as_ref().as_bytes());
        out.put_u16_le(n.len() as u16);
        out.put_slice(n);
        out.put_u32_le(v.len() as u32);
        out.put_slice(v);
    }
}

/// A record decoded in place, borrowing from the batch body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Offset relative to the batch's first offset.
    pub offset_delta: u32,
    /// When the broker accepted it (ms since the epoch).
    pub timestamp_ms: u64,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: &'a [u8],
    header_count: u16,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's headers (already validated as UTF-8 when decoded).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut buf = self.headers;
        (0..self.header_count).filter_map(move |_| {
            let (n, v, rest) = split_header(buf)?;
            buf = rest;
            Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?))
        })
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        usize::from(self.header_count)
    }
}

fn split_header(buf: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let nl = usize::from(u16::from_le_bytes([*buf.first()?, *buf.get(1)?]));
    let name = buf.get(2..2 + nl)?;
    let rest = &buf[2 + nl..];
    let vl = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let value = rest.get(4..4 + vl)?;
    Some((name, value, &rest[4 + vl..]))
}

/// Decodes the record at `pos` of `body`, returning it and the position of the next record.
/// Returns `None` when the bytes there are not a well-formed record.
pub fn decode_record(body: &[u8], pos: usize) -> Option<(RecordView<'_>, usize)> {
    let len = u32::from_le_bytes(body.get(pos..pos + 4)?.try_into().ok()?) as usize;
    let start = pos + 4;
    let end = start.checked_add(len)?;
    let rec = body.get(start..end)?;
    if rec.len() < RECORD_OVERHEAD - 4 {
        return None;
    }
    let offset_delta = le_u32(rec, 0);
    let timestamp_ms = le_u64(rec, 4);
    let key_len = i32::from_le_bytes(rec[12..16].try_into().ok()?);
    let mut p: usize = 16;
    let key = if key_len == -1 {
        None
    } else {
        let kl = usize::try_from(key_len).ok()?;
        let k = rec.get(p..p.checked_add(kl)?)?;
        p += kl;
        Some(k)
    };
    let vl = u32::from_le_bytes(rec.get(p..p + 4)?.try_into().ok()?) as usize;
    p += 4;
    let value = rec.get(p..p.checked_add(vl)?)?;
    p += vl;
    let header_count = u16::from_le_bytes(rec.get(p..p + 2)?.try_into().ok()?);
    p += 2;
    let headers = &rec[p..];
    // Validate the headers now, so `RecordView::headers` never meets a bad one.
    let mut buf = headers;
    for _ in 0..header_count {
        let (n, v, rest) = split_header(buf)?;
        std::str::from_utf8(n).ok()?;
        std::str::from_utf8(v).ok()?;
        buf = rest;
    }
    if !buf.is_empty() {
        return None;
    }
    Some((
        RecordView {
            offset_delta,
            timestamp_ms,
            key,
            value,
            header_count,
            headers,
        },
        end,
    ))
}

/// One batch of a decoded segment: its header, its body and where each record starts.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// The header.
    pub header: BatchHeader,
    /// The body (a slice of the segment, no copy).
    pub body: Bytes,
    /// Start of each record within `body` (empty for a Kafka batch).
    pub positions: Vec<u32>,
}

impl DecodedBatch {
    /// Whether the body is one Kafka v2 record batch.
    pub fn is_kafka(&self) -> bool {
        self.header.flags & FLAG_KAFKA != 0
    }

    /// One past the last offset of the batch.
    pub fn end_offset(&self) -> u64 {
        self.header.first_offset + u64::from(self.header.record_count)
    }
}

/// Decodes a whole segment, verifying every checksum, length and offset.
pub fn decode_segment(data: &Bytes) -> Result<Vec<DecodedBatch>, SegmentError> {
    let mut out: Vec<DecodedBatch> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let header = BatchHeader::decode(&data[at..], at)?;
        let body_start = at + HEADER_LEN;
        let body_end = body_start + header.body_len as usize;
        if body_end > data.len() {
            return Err(SegmentError::Torn {
                at: data.len(),
                need: body_end - data.len(),
            });
        }
        let body = data.slice(body_start..body_end);
        if crc32c::crc32c(&body) != header.body_crc {
            return Err(SegmentError::BodyCrc {
                at,
                first_offset: header.first_offset,
            });
        }
        if let Some(prev) = out.last()
            && header.first_offset != prev.end_offset()
        {
            return Err(SegmentError::OffsetGap {
                at,
                expected: prev.end_offset(),
                found: header.first_offset,
            });
        }
        if header
            .first_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err(SegmentError::BadRecord {
                first_offset: header.first_offset,
                index: 0,
                what: "offset range overflows",
            });
        }
        let positions = if header.flags & FLAG_KAFKA != 0 {
            check_kafka_body(&header, &body)?;
            Vec::new()
        } else {
            index_body(&header, &body)?
        };
        out.push(DecodedBatch {
            header,
            body,
            positions,
        });
        at = body_end;
    }
    if out.is_empty() {
        return Err(SegmentError::Empty);
    }
    Ok(out)
}

/// A Kafka batch body must be exactly one v2 batch (its own crc32c checked) starting at the
/// header's first offset and spanning its record count.
fn check_kafka_body(header: &BatchHeader, body: &[u8]) -> Result<(), SegmentError> {
    let bad = |what| SegmentError::BadRecord {
        first_offset: header.first_offset,
        index: 0,
        what,
    };
    let info = kafka::batch::BatchInfo::parse(body).map_err(|_| bad("not a valid Kafka batch"))?;
    if info.size != body.len() {
        return Err(bad("bytes after the Kafka batch"));
    }
    if u64::try_from(info.base_offset).ok() != Some(header.first_offset) {
        return Err(bad("Kafka batch base offset differs from the header"));
    }
    if info.offset_count() != header.record_count {
        return Err(bad("Kafka batch spans another record count"));
    }
    Ok(())
}

fn index_body(header: &BatchHeader, body: &[u8]) -> Result<Vec<u32>, SegmentError> {
    let bad = |index: u32, what| SegmentError::BadRecord {
        first_offset: header.first_offset,
        index,
        what,
    };
    // Each record takes at least RECORD_OVERHEAD bytes, which bounds the allocation.
    let cap = (header.record_count as usize).min(body.len() / RECORD_OVERHEAD);
    let mut positions = Vec::with_capacity(cap);
    let mut pos = 0;
    for i in 0..header.record_count {
        let (rec, next) = decode_record(body, pos).ok_or_else(|| bad(i, "bad lengths"))?;
        if rec.offset_delta != i {
            return Err(bad(i, "offset delta out of sequence"));
        }
        positions.push(u32::try_from(pos).map_err(|_| bad(i, "body over 4 GiB"))?);
        pos = next;
    }
    if pos != body.len() {
        return Err(bad(header.record_count, "bytes after the last record"));
    }
    Ok(positions)
}

/// Appends one batch (header, then `body`) to `out`. `body` holds `record_count` records
/// encoded by [`encode_record`] with deltas 0, 1, 2, … (flags 0), or one Kafka batch
/// ([`FLAG_KAFKA`]).
pub fn encode_batch(
    out: &mut BytesMut,
    first_offset: u64,
    record_count: u32,
    (ts_min, ts_max): (u64, u64),
    flags: u16,
    body: &[u8],
) {
    let header = BatchHeader {
        flags,
        first_offset,
        record_count,
        ts_min,
        ts_max,
        body_len: body.len() as u32,
        body_crc: crc32c::crc32c(body),
    };
    out.reserve(HEADER_LEN + body.len());
    out.put_slice(&header.encode());
    out.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

    fn build(first_offset: u64, batches: &[Vec<Rec>]) -> Bytes {
        let mut out = BytesMut::new();
        let mut off = first_offset;
        for recs in batches {
            let mut body = BytesMut::new();
            for (i, (k, v, h)) in recs.iter().enumerate() {
                encode_record(&mut body, i as u32, 1000 + i as u64, k.as_deref(), v, h);
            }
            encode_batch(
                &mut out,
                off,
                recs.len() as u32,
                (1000, 1000 + recs.len() as u64),
                0,
                &body,
            );
            off += recs.len() as u64;
        }
        out.freeze()
    }

    fn sample() -> Vec<Vec<Rec>> {
        vec![
            vec![
                (
                    Some(b"k".to_vec()),
                    b"v0".to_vec(),
                    vec![("h".into(), "x".into())],
                ),
                (None, b"".to_vec(), vec![]),
            ],
            vec![(Some(vec![]), vec![0xff; 300], vec![])],
        ]
    }

    #[test]
    fn test_segment_round_trips() {
        let data = build(0, &sample());
        let batches = decode_segment(&data).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].header.first_offset, 0);
        assert_eq!(batches[1].header.first_offset, 2);
        assert_eq!(batches[1].end_offset(), 3);
        let (r, _) = decode_record(&batches[0].body, batches[0].positions[0] as usize).unwrap();
        assert_eq!(r.key, Some(&b"k"[..]));
        assert_eq!(r.value, b"v0");
        assert_eq!(r.headers().collect::<Vec<_>>(), vec![("h", "x")]);
        let (r, _) = decode_record(&batches[0].body, batches[0].positions[1] as usize).unwrap();
        assert_eq!(r.key, None);
        assert_eq!(r.offset_delta, 1);
        let (r, _) = decode_record(&batches[1].body, 0).unwrap();
        assert_eq!(r.key, Some(&b""[..]));
        assert_eq!(r.value.len(), 300);
    }

    #[test]
    fn test_segment_offset_zero_single_record() {
        let data = build(0, &[vec![(None, b"only".to_vec(), vec![])]]);
        let b = decode_segment(&data).unwrap();
        assert_eq!((b[0].header.first_offset, b[0].end_offset()), (0, 1));
    }

    #[test]
    fn test_segment_flipped_byte_is_detected() {
        let data = build(7, &sample());
        for i in 0..data.len() {
            for bit in [0, 3, 7] {
                let mut b = data.to_vec();
                b[i] ^= 1 << bit;
                assert!(
                    decode_segment(&Bytes::from(b)).is_err(),
                    "flip of byte {i} bit {bit} not detected"
                );
            }
        }
    }

    #[test]
    fn test_segment_torn_tail_is_detected() {
        let data = build(7, &sample());
        let first_batch_end = HEADER_LEN + decode_segment(&data).unwrap()[0].body.len();
        for cut in 0..data.len() {
            if cut == first_batch_end {
                // A cut between batches leaves a valid, shorter segment: readers compare the
                // decoded range with the filer entry's offset_max to catch that.
                assert_eq!(decode_segment(&data.slice(..cut)).unwrap().len(), 1);
                continue;
            }
            let err = decode_segment(&data.slice(..cut)).unwrap_err();
            assert!(
                matches!(err, SegmentError::Torn { .. } | SegmentError::Empty),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn test_segment_offset_gap_is_detected() {
        let a = build(0, &[vec![(None, b"a".to_vec(), vec![])]]);
        let b = build(5, &[vec![(None, b"b".to_vec(), vec![])]]);
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert!(matches!(
            decode_segment(&Bytes::from(both)),
            Err(SegmentError::OffsetGap {
                expected: 1,
                found: 5,
                ..
            })
        ));
    }

    #[test]
    fn test_segment_bad_delta_is_detected_despite_crc() {
        let mut body = BytesMut::new();
        encode_record::<&str>(&mut body, 1, 0, None, b"x", &[]);
        let mut out = BytesMut::new();
        encode_batch(&mut out, 0, 1, (0, 0), 0, &body);
        assert!(matches!(
            decode_segment(&out.freeze()),
            Err(SegmentError::BadRecord { .. })
        ));
    }

    proptest! {
        #[test]
        fn test_segment_decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_segment(&Bytes::from(bytes.clone()));
            let _ = decode_record(&bytes, 0);
            // Give random bodies a valid header so the record decoder is exercised too.
            let mut out = BytesMut::new();
            encode_batch(&mut out, 3, 2, (0, 0), 0, &bytes);
            let _ = decode_segment(&out.freeze());
        }

        #[test]
        fn test_segment_round_trips_random(
            first in 0u64..1_000_000,
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                 proptest::collection::vec(any::<u8>(), 0..64),
                 proptest::collection::vec(("[a-z]{0,4}", ".{0,6}"), 0..3)),
                1..30),
        ) {
            let data = build(first, std::slice::from_ref(&recs));
            let b = decode_segment(&data).unwrap();
            prop_assert_eq!(b[0].header.first_offset, first);
            prop_assert_eq!(b[0].positions.len(), recs.len());
            for (i, (k, v, h)) in recs.iter().enumerate() {
                let (r, _) = decode_record(&b[0].body, b[0].positions[i] as usize).unwrap();
                prop_assert_eq!(r.key, k.as_deref());
                prop_assert_eq!(r.value, &v[..]);
                let got: Vec<(String, String)> = r.headers().map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
                prop_assert_eq!(&got, h);
            }
        }
    }
}
