//! Kafka v2 record batches (magic 2): the header Kelp reads and rewrites, and the records
//! inside.
//!
//! ```text
//! baseOffset i64 | batchLength i32 (bytes after this field) | partitionLeaderEpoch i32
//! | magic i8 (2) | crc u32 (crc32c of everything after it) | attributes i16
//! | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 | producerId i64
//! | producerEpoch i16 | baseSequence i32 | recordCount i32 | records…
//! ```
//!
//! All integers are big-endian. The checksum does not cover the base offset, so a batch is
//! stored as its producer sent it and only its base offset is rewritten when it is appended.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Bytes of a v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s counted region (base offset + length field).
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic.
pub const MAGIC_V2: i8 = 2;

/// Why bytes are not a valid v2 batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the stated length.
    #[error("record batch is truncated: {have} bytes, {need} needed")]
    Truncated {
        /// Bytes there.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not magic 2 (old message sets are not supported).
    #[error("record batch has magic {0}, only 2 is supported")]
    BadMagic(i8),
    /// The crc32c does not match.
    #[error("record batch fails its crc32c check")]
    BadCrc,
    /// Inconsistent header fields.
    #[error("record batch is malformed: {0}")]
    Malformed(&'static str),
}

/// A parsed, checked v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Base offset as found in the bytes.
    pub base_offset: i64,
    /// Total bytes of the batch (`batchLength` + 12).
    pub size: usize,
    /// Attributes (compression in bits 0-2, timestamp type bit 3, transactional bit 4,
    /// control bit 5).
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer id, -1 without idempotence.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 without idempotence.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchInfo {
    /// Parses and checks (length, magic, crc32c) the batch at the start of `buf`; bytes past
    /// its length are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: HEADER_LEN,
            });
        }
        let length = be_i32(buf, 8);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Malformed(
                "batch length is smaller than its header",
            ));
        }
        let size = length as usize + LOG_OVERHEAD;
        if buf.len() < size {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: size,
            });
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        let crc = u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]);
        if crc32c_of(&buf[21..size]) != crc {
            return Err(BatchError::BadCrc);
        }
        let info = Self {
            base_offset: be_i64(buf, 0),
            size,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if info.last_offset_delta < 0 || info.record_count < 0 {
            return Err(BatchError::Malformed(
                "negative record count or offset delta",
            ));
        }
        Ok(info)
    }

    /// Offsets the batch spans (`lastOffsetDelta + 1`).
    pub fn offset_count(&self) -> u32 {
        self.last_offset_delta as u32 + 1
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// A control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Sent by an idempotent producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Rewrites the base offset of the batch at the start of `buf` (the checksum does not cover
/// it). `buf` must hold at least 8 bytes.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Splits concatenated batches (a Produce request's records) into whole checked batches.
pub fn split_batches(records: &Bytes) -> Result<Vec<(Bytes, BatchInfo)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let info = BatchInfo::parse(&records[at..])?;
        out.push((records.slice(at..at + info.size), info));
        at += info.size;
    }
    Ok(out)
}

fn crc32c_of(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// One record with its absolute offset, as the HTTP API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Absolute offset in the partition.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp: i64,
    /// Key, `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes `records` as ONE uncompressed v2 batch without a producer id whose base offset is
/// `records[0].offset`; the records get consecutive offsets from there (their own `offset`
/// fields past the first are ignored).
pub fn encode_batch(records: &[OwnedRecord]) -> Result<Bytes, BatchError> {
    let Some(first) = records.first() else {
        return Err(BatchError::Malformed("a batch needs at least one record"));
    };
    if records.len() > i32::MAX as usize {
        return Err(BatchError::Malformed("too many records for one batch"));
    }
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let delta = i as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: first.offset + delta,
                // The encoder starts a new batch wherever `offset - sequence` changes; keeping
                // it constant gives one batch whose base sequence is -1 (no producer).
                sequence: (-1i32).wrapping_add(i as i32),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        encoded.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| {
        tracing::debug!(error = %e, "record batch encoding failed");
        BatchError::Malformed("records cannot be encoded")
    })?;
    Ok(buf.freeze())
}

/// Most records a batch of `info` may claim before decoding is refused: every record takes at
/// least 7 bytes uncompressed, and no codec inflates more than ~1000 times.
fn plausible_record_count(info: &BatchInfo) -> bool {
    let body = info.size.saturating_sub(HEADER_LEN);
    let limit = if info.compression() == 0 {
        body / 7 + 1
    } else {
        body.saturating_mul(1024).min(1 << 24)
    };
    (info.record_count as usize) <= limit
}

/// The records section of a batch, decompressed.
fn decompress(records: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    use kafka_protocol::compression::{self as cmpr, Decompressor};
    let take = |b: &mut Bytes| Ok(b.split_to(b.len()));
    match compression {
        Compression::None => take(records),
        Compression::Gzip => {
            cmpr::Gzip::decompress(records, |b: &mut Bytes| Ok(b.split_to(b.len())))
        }
        Compression::Snappy => {
            cmpr::Snappy::decompress(records, |b: &mut Bytes| Ok(b.split_to(b.len())))
        }
        Compression::Lz4 => cmpr::Lz4::decompress(records, |b: &mut Bytes| Ok(b.split_to(b.len()))),
        Compression::Zstd => {
            cmpr::Zstd::decompress(records, |b: &mut Bytes| Ok(b.split_to(b.len())))
        }
    }
}

/// Reads a zigzag varint (at most `max_bytes` long) at `*at`.
fn read_varlong(b: &[u8], at: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut raw = 0u64;
    for i in 0..max_bytes {
        let byte = *b.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Skips a length-prefixed field (`-1` = null when `nullable`).
fn skip_field(b: &[u8], at: &mut usize, end: usize, nullable: bool) -> Option<()> {
    let len = read_varlong(b, at, 5)?;
    if len == -1 && nullable {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    (len <= end - *at).then(|| *at += len)
}

/// Checks that `count` records with sane lengths and header counts fill `plain`.
fn check_records(plain: &[u8], count: i32) -> anyhow::Result<()> {
    let malformed = || anyhow::anyhow!("malformed record");
    let mut at = 0;
    for _ in 0..count {
        let len = read_varlong(plain, &mut at, 5).ok_or_else(malformed)?;
        let len = usize::try_from(len).map_err(|_| malformed())?;
        if len > plain.len() - at {
            return Err(malformed());
        }
        let end = at + len;
        let mut p = at + 1; // attributes
        let ok = (|| {
            read_varlong(plain, &mut p, 10)?; // timestamp delta
            read_varlong(plain, &mut p, 5)?; // offset delta
            skip_field(plain, &mut p, end, true)?; // key
            skip_field(plain, &mut p, end, true)?; // value
            let headers = usize::try_from(read_varlong(plain, &mut p, 5)?).ok()?;
            if headers > end.saturating_sub(p) {
                return None;
            }
            for _ in 0..headers {
                skip_field(plain, &mut p, end, false)?;
                skip_field(plain, &mut p, end, true)?;
            }
            (p <= end).then_some(())
        })();
        ok.ok_or_else(malformed)?;
        at = end;
    }
    Ok(())
}

/// Decodes concatenated v2 batches, compressed with any codec (gzip, snappy, lz4, zstd),
/// into records with absolute offsets. Control batches (transaction markers) are skipped.
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<OwnedRecord>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let info = BatchInfo::parse(&bytes[at..])?;
        let whole = &bytes[at..at + info.size];
        at += info.size;
        if info.is_control() {
            continue;
        }
        if !plausible_record_count(&info) {
            return Err(BatchError::Malformed(
                "record count does not fit the batch size",
            ));
        }
        let mut buf = Bytes::copy_from_slice(whole);
        let count = info.record_count;
        // Decompress here and check the records' framing before kafka-protocol decodes them:
        // it reserves room for a record's headers from their announced count, so a crafted
        // batch could otherwise abort the process.
        let decompress = |records: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
            let plain = decompress(records, compression)?;
            check_records(&plain, count)?;
            Ok(plain)
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
            .map_err(|e| {
                tracing::debug!(error = %e, "record batch decoding failed");
                BatchError::Malformed("records inside the batch do not decode")
            })?;
        out.extend(set.records.into_iter().map(|r| {
            OwnedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect(),
            }
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(base: i64) -> Vec<OwnedRecord> {
        vec![
            OwnedRecord {
                offset: base,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![
                    ("h1".into(), Some(Bytes::from_static(b"x"))),
                    ("h2".into(), None),
                ],
            },
            OwnedRecord {
                offset: base + 1,
                timestamp: 1_700_000_000_005,
                key: None,
                value: None,
                headers: vec![],
            },
            OwnedRecord {
                offset: base + 2,
                timestamp: 1_699_999_999_999,
                key: Some(Bytes::new()),
                value: Some(Bytes::from(vec![0u8; 300])),
                headers: vec![("".into(), Some(Bytes::new()))],
            },
        ]
    }

    fn encode_with(records: &[OwnedRecord], compression: Compression) -> Bytes {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 42,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: r.offset,
                sequence: i as i32,
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn test_encode_batch_parses_as_one_batch() {
        let recs = sample(100);
        let bytes = encode_batch(&recs).unwrap();
        let info = BatchInfo::parse(&bytes).unwrap();
        assert_eq!(info.size, bytes.len());
        assert_eq!(info.base_offset, 100);
        assert_eq!(info.record_count, 3);
        assert_eq!(info.offset_count(), 3);
        assert_eq!(info.compression(), 0);
        assert_eq!(info.producer_id, -1);
        assert_eq!(info.base_sequence, -1);
        assert_eq!(info.max_timestamp, 1_700_000_000_005);
        assert_eq!(split_batches(&bytes).unwrap().len(), 1);
        assert_eq!(decode_batches(&bytes).unwrap(), recs);
    }

    #[test]
    fn test_encode_batch_renumbers_offsets_consecutively() {
        let mut recs = sample(7);
        recs[1].offset = 1000;
        recs[2].offset = -5;
        let back = decode_batches(&encode_batch(&recs).unwrap()).unwrap();
        let offsets: Vec<i64> = back.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![7, 8, 9]);
    }

    #[test]
    fn test_encode_batch_empty_is_an_error() {
        assert!(encode_batch(&[]).is_err());
    }

    #[test]
    fn test_decode_batches_every_codec_with_rewritten_base_offset() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut one = BytesMut::from(&encode_with(&sample(0), compression)[..]);
            let info = BatchInfo::parse(&one).unwrap();
            assert_eq!(info.compression(), compression as i16);
            set_base_offset(&mut one, 50);
            let two = encode_with(&sample(53), compression);
            let mut both = one.to_vec();
            both.extend_from_slice(&two);
            let back = decode_batches(&both).unwrap();
            let mut want = sample(50);
            want.extend(sample(53));
            assert_eq!(back, want, "{compression:?}");
        }
    }

    #[test]
    fn test_decode_batches_flipped_byte_and_torn_tail_fail() {
        let bytes = encode_with(&sample(0), Compression::Gzip);
        for i in 16..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x40;
            assert!(decode_batches(&b).is_err(), "flipped byte {i} not detected");
        }
        for cut in 1..bytes.len() {
            assert!(decode_batches(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn test_decode_batches_lying_header_count_is_an_error_not_an_abort() {
        let one = encode_batch(&sample(0)[1..2]).unwrap();
        // attributes, timestamp delta, offset delta, null key, null value, 2^30 headers.
        let body = [0x00, 0x00, 0x00, 0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x08];
        let mut b = one[..HEADER_LEN].to_vec();
        b.push((body.len() as u8) << 1);
        b.extend_from_slice(&body);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(BatchInfo::parse(&b).is_ok(), "a well-formed header");
        assert!(matches!(decode_batches(&b), Err(BatchError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn test_decode_batches_random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batches(&b);
        }

        #[test]
        fn test_encode_decode_round_trip(
            base in 0i64..1 << 40,
            recs in proptest::collection::vec(
                (any::<i64>().prop_map(|t| t & ((1 << 45) - 1)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::collection::vec(("[a-z]{0,4}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5))), 0..3)),
                1..10)
        ) {
            let records: Vec<OwnedRecord> = recs.into_iter().enumerate().map(|(i, (ts, k, v, h))| {
                // Header keys are unique per record in this model (see decode_batches).
                let mut seen = std::collections::HashSet::new();
                OwnedRecord {
                    offset: base + i as i64,
                    timestamp: ts,
                    key: k.map(Bytes::from),
                    value: v.map(Bytes::from),
                    headers: h.into_iter().filter(|(k, _)| seen.insert(k.clone()))
                        .map(|(k, v)| (k, v.map(Bytes::from))).collect(),
                }
            }).collect();
            let bytes = encode_batch(&records).unwrap();
            prop_assert_eq!(BatchInfo::parse(&bytes).unwrap().size, bytes.len());
            prop_assert_eq!(decode_batches(&bytes).unwrap(), records);
        }
    }
}
