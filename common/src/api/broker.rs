//! The broker's wire contract: topics, publish, fetch and consumer-group offsets, plus the
//! compact binary publish batch (`application/x-kelp-batch`) and the stable key hash that picks
//! a record's partition.
//!
//! Offsets are `u64` and every `*_offset` bound in an answer is exclusive: `durable_offset` is
//! one past the last durable record, `log_end_offset` one past the last record accepted.
//!
//! # Binary publish batch
//! All integers little-endian:
//! ```text
//! batch  = magic "KPB1" (4 bytes) | record_count u32 | record*
//! record = flags u8 (bit 0: key present, bit 1: partition present; others must be 0)
//!          | [partition u32] | [key_len u32 | key] | value_len u32 | value
//!          | header_count u16 | (name_len u16 | name utf8 | value_len u32 | value utf8)*
//! ```
//! Nothing may follow the last record. [`decode_batch`] never panics: every length is checked
//! against the bytes that remain, and allocation is bounded by the input size.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Content type of the binary publish batch.
pub const BATCH_CONTENT_TYPE: &str = "application/x-kelp-batch";

/// Magic bytes opening a binary publish batch.
pub const BATCH_MAGIC: [u8; 4] = *b"KPB1";

/// Body of `POST /topics/{ns}/{topic}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    /// Number of partitions (1..=1024).
    pub partitions: u32,
}

/// Offsets of one partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// One past the last durable record.
    pub durable_offset: u64,
    /// One past the last record accepted.
    pub log_end_offset: u64,
}

/// Answer of `GET /topics/{ns}/{topic}` (and of its creation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    /// Namespace.
    pub namespace: String,
    /// Topic name.
    pub name: String,
    /// Every partition, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// One topic in `GET /topics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicSummary {
    /// Namespace.
    pub namespace: String,
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
}

/// Answer of `GET /topics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicList {
    /// Topics ordered by namespace and name.
    pub topics: Vec<TopicSummary>,
}

/// When a publish is acknowledged.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// After the records are fsynced on a volume and committed in the filer.
    #[default]
    Durable,
    /// Once the records are in the broker's memory.
    Buffered,
}

impl Acks {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Buffered => "buffered",
        }
    }
}

/// Query of the publish route.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PublishQuery {
    /// Acknowledgement mode, durable by default.
    #[serde(default)]
    pub acks: Option<Acks>,
    /// Append only if the partition's log end offset is exactly this (every record must go to
    /// one partition); otherwise 409 `log_end_mismatch` and nothing is appended. A writer that
    /// derived its records from the log up to here (ids, versions) thereby never appends on
    /// top of records it has not seen.
    #[serde(default)]
    pub if_log_end: Option<u64>,
    /// Set by a broker that redirected the request here: see [`FetchQuery::redirected`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirected: bool,
}

/// One record of a JSON publish. Strings borrow from the request body when they contain no
/// escapes, so decoding a large batch does not allocate per record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PublishRecord<'a> {
    /// Key as UTF-8 text; its hash picks the partition when `partition` is absent.
    #[serde(
        borrow,
        default,
        deserialize_with = "opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<Cow<'a, str>>,
    /// Key as base64 (raw bytes); takes the place of `key`.
    #[serde(
        borrow,
        default,
        deserialize_with = "opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_b64: Option<Cow<'a, str>>,
    /// Value as UTF-8 text.
    #[serde(
        borrow,
        default,
        deserialize_with = "opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Cow<'a, str>>,
    /// Value as base64 (raw bytes); takes the place of `value`.
    #[serde(
        borrow,
        default,
        deserialize_with = "opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub value_b64: Option<Cow<'a, str>>,
    /// Headers (UTF-8 names and values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Explicit partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

/// Body of a JSON publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PublishRequest<'a> {
    /// The records, in order.
    #[serde(borrow)]
    pub records: Vec<PublishRecord<'a>>,
}

/// Where one published record landed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordOffset {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// Answer of a publish: one entry per record, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishResponse {
    /// Offsets, one per record.
    pub offsets: Vec<RecordOffset>,
}

/// Which records a fetch may see.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Only records below `durable_offset` (the default).
    #[default]
    Durable,
    /// Records up to `log_end_offset`, including ones a crash could erase.
    Buffered,
}

/// Query of `GET /topics/{ns}/{topic}/partitions/{p}/records`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FetchQuery {
    /// First offset to return.
    pub offset: u64,
    /// At most this many records (default 1000, capped at 10000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// At most about this many bytes of records (default 1 MiB, capped at 16 MiB); at least
    /// one record is returned when one is available.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Long-poll up to this many milliseconds (max 30000) when nothing is visible yet.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Visibility (durable by default).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Set by a broker that redirected the request here (`--ownership shared`): a broker
    /// that does not own the partition either answers 503 `not_owner` instead of redirecting
    /// it again, so two brokers whose views of the members differ for a moment never bounce
    /// a request between them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirected: bool,
}

impl FetchQuery {
    /// A fetch from `offset` with every other parameter at its default.
    pub fn at(offset: u64) -> Self {
        Self {
            offset,
            limit: None,
            max_bytes: None,
            wait_ms: None,
            isolation: None,
            redirected: false,
        }
    }
}

/// One fetched record. `key`/`value` are UTF-8 text when valid; otherwise they are `null`
/// and `key_b64`/`value_b64` carry the bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Offset.
    pub offset: u64,
    /// Key as text (`null` when absent or not UTF-8).
    #[serde(default)]
    pub key: Option<String>,
    /// Key as base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// Value as text (`null` when not UTF-8).
    #[serde(default)]
    pub value: Option<String>,
    /// Value as base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// When the broker accepted the record, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Answer of a fetch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchResponse {
    /// Records in offset order, without gaps.
    pub records: Vec<FetchedRecord>,
    /// The offset to fetch next.
    pub next_offset: u64,
    /// One past the last durable record.
    pub durable_offset: u64,
    /// One past the last record accepted.
    pub log_end_offset: u64,
}

/// Body of `PUT /groups/{group}/offsets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommitOffsetRequest {
    /// `namespace/topic`.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The group's next offset to consume.
    pub offset: u64,
    /// Allow the committed offset to go down (a deliberate reset). Without it a commit below
    /// the stored offset keeps the stored one, so a late or repeated commit never rewinds
    /// the group; the answer says which offset is stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// Query of `GET /groups/{group}/offsets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupOffsetsQuery {
    /// `namespace/topic`.
    pub topic: String,
}

/// One committed partition offset.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Partition.
    pub partition: u32,
    /// Committed offset.
    pub offset: u64,
}

/// Answer of `GET /groups/{group}/offsets` (and of a commit, with the one offset written).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupOffsets {
    /// Group name.
    pub group: String,
    /// `namespace/topic`.
    pub topic: String,
    /// Committed offsets by partition (partitions never committed are absent).
    pub offsets: Vec<PartitionOffset>,
}

/// Answer of `POST /admin/flush`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlushResponse {
    /// Partitions that had buffered records and are now durable up to their log end.
    pub flushed_partitions: u64,
}

/// The partition a key maps to: `fnv1a64(key) % partitions`. Stable across versions and
/// platforms, so clients can predict it. `partitions` must be at least 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let n = u64::from(partitions.max(1));
    // Truncation is fine: the remainder is below `partitions`.
    (fnv1a64(key) % n) as u32
}

/// 64-bit FNV-1a.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One record of a binary publish batch, borrowing from the encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchRecord<'a> {
    /// Explicit partition.
    pub partition: Option<u32>,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: &'a [u8],
    /// Headers (UTF-8 names and values).
    pub headers: Vec<(&'a str, &'a str)>,
}

/// Why a binary publish batch cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDecodeError {
    /// The batch does not start with `KPB1`.
    #[error("binary batch does not start with the magic KPB1")]
    BadMagic,
    /// The input ends inside a field.
    #[error("binary batch is torn: record {record} needs {need} more bytes at byte {at}")]
    Torn {
        /// Index of the record being read.
        record: u32,
        /// Byte position.
        at: usize,
        /// Bytes missing.
        need: usize,
    },
    /// Unknown flag bits.
    #[error("binary batch record {record} has unknown flags {flags:#04x}")]
    BadFlags {
        /// Index of the record.
        record: u32,
        /// The flags byte.
        flags: u8,
    },
    /// A header name or value is not UTF-8.
    #[error("binary batch record {record} has a header that is not UTF-8")]
    BadHeader {
        /// Index of the record.
        record: u32,
    },
    /// Bytes follow the last record.
    #[error("binary batch has {0} bytes after its last record")]
    TrailingBytes(usize),
}

const FLAG_KEY: u8 = 1;
const FLAG_PARTITION: u8 = 2;

/// Exact encoded size of `records` as a binary batch.
pub fn encoded_batch_len(records: &[BatchRecord<'_>]) -> usize {
    8 + records
        .iter()
        .map(|r| {
            1 + if r.partition.is_some() { 4 } else { 0 }
                + r.key.map_or(0, |k| 4 + k.len())
                + 4
                + r.value.len()
                + 2
                + r.headers
                    .iter()
                    .map(|(n, v)| 2 + n.len() + 4 + v.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
}

/// Appends `records` encoded as a binary batch to `out`. Header names longer than 65535 bytes
/// and more than 65535 headers are truncated (the broker rejects such records anyway).
pub fn encode_batch(records: &[BatchRecord<'_>], out: &mut Vec<u8>) {
    out.reserve(encoded_batch_len(records));
    out.extend_from_slice(&BATCH_MAGIC);
    out.extend_from_slice(&len_u32(records.len()).to_le_bytes());
    for r in records {
        let mut flags = 0;
        if r.key.is_some() {
            flags |= FLAG_KEY;
        }
        if r.partition.is_some() {
            flags |= FLAG_PARTITION;
        }
        out.push(flags);
        if let Some(p) = r.partition {
            out.extend_from_slice(&p.to_le_bytes());
        }
        if let Some(k) = r.key {
            out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
            out.extend_from_slice(k);
        }
        out.extend_from_slice(&len_u32(r.value.len()).to_le_bytes());
        out.extend_from_slice(r.value);
        let headers = &r.headers[..r.headers.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers {
            let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: u32,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchDecodeError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(BatchDecodeError::Torn {
                record: self.record,
                at: self.pos,
                need: n - rest,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BatchDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BatchDecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BatchDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes_u32(&mut self) -> Result<&'a [u8], BatchDecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes a binary publish batch. Never panics, whatever the input.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<BatchRecord<'_>>, BatchDecodeError> {
    if buf.len() < 4 || buf[..4] != BATCH_MAGIC {
        return Err(BatchDecodeError::BadMagic);
    }
    let mut c = Cursor {
        buf,
        pos: 4,
        record: 0,
    };
    let count = c.u32()?;
    // Each record takes at least 7 bytes, which bounds the allocation by the input size.
    let mut out = Vec::with_capacity((count as usize).min(buf.len() / 7));
    for i in 0..count {
        c.record = i;
        let flags = c.u8()?;
        if flags & !(FLAG_KEY | FLAG_PARTITION) != 0 {
            return Err(BatchDecodeError::BadFlags { record: i, flags });
        }
        let partition = if flags & FLAG_PARTITION != 0 {
            Some(c.u32()?)
        } else {
            None
        };
        let key = if flags & FLAG_KEY != 0 {
            Some(c.bytes_u32()?)
        } else {
            None
        };
        let value = c.bytes_u32()?;
        let header_count = c.u16()?;
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let n = usize::from(c.u16()?);
            let name = c.take(n)?;
            let value = c.bytes_u32()?;
            match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => return Err(BatchDecodeError::BadHeader { record: i }),
            }
        }
        out.push(BatchRecord {
            partition,
            key,
            value,
            headers,
        });
    }
    if c.pos != buf.len() {
        return Err(BatchDecodeError::TrailingBytes(buf.len() - c.pos));
    }
    Ok(out)
}

/// Deserializes an optional string, borrowing it from the input when it has no escapes.
fn opt_cow<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct OptCow;

    impl<'de> Visitor<'de> for OptCow {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
    }

    d.deserialize_option(OptCow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<BatchRecord<'static>> {
        vec![
            BatchRecord {
                partition: Some(3),
                key: Some(b"k1"),
                value: b"hello",
                headers: vec![("h", "v"), ("trace", "x")],
            },
            BatchRecord {
                partition: None,
                key: None,
                value: b"",
                headers: vec![],
            },
            BatchRecord {
                partition: None,
                key: Some(&[0xff, 0x00]),
                value: &[1, 2, 3],
                headers: vec![],
            },
        ]
    }

    #[test]
    fn test_batch_round_trips() {
        let records = sample();
        let mut buf = Vec::new();
        encode_batch(&records, &mut buf);
        assert_eq!(buf.len(), encoded_batch_len(&records));
        assert_eq!(decode_batch(&buf).unwrap(), records);
    }

    #[test]
    fn test_batch_torn_tail_is_an_error() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_batch(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn test_batch_trailing_bytes_are_an_error() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        buf.push(0);
        assert_eq!(decode_batch(&buf), Err(BatchDecodeError::TrailingBytes(1)));
    }

    #[test]
    fn test_batch_flipped_byte_never_panics() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let _ = decode_batch(&b);
            }
        }
    }

    #[test]
    fn test_partition_for_key_is_stable() {
        // Pinned values: changing the hash would move keys between partitions.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(partition_for_key(b"a", 1), 0);
        assert_eq!(
            partition_for_key(b"a", 7),
            (0xaf63_dc4c_8601_ec8c_u64 % 7) as u32
        );
        assert_eq!(partition_for_key(b"x", 0), 0);
    }

    #[test]
    fn test_publish_request_borrows_plain_strings() {
        let body = br#"{"records":[{"key":"k","value":"plain"},{"value":"esc\"aped"},{"value":null,"value_b64":"AAE="}]}"#;
        let req: PublishRequest<'_> = serde_json::from_slice(body).unwrap();
        assert!(matches!(req.records[0].value, Some(Cow::Borrowed("plain"))));
        assert_eq!(req.records[1].value.as_deref(), Some("esc\"aped"));
        assert_eq!(req.records[2].value, None);
        assert_eq!(req.records[2].value_b64.as_deref(), Some("AAE="));
        let back = serde_json::to_vec(&req).unwrap();
        let again: PublishRequest<'_> = serde_json::from_slice(&back).unwrap();
        assert_eq!(again, req);
    }

    proptest! {
        #[test]
        fn test_batch_decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_batch(&bytes);
            let mut with_magic = BATCH_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = decode_batch(&with_magic);
        }

        #[test]
        fn test_batch_round_trips_random(
            recs in proptest::collection::vec(
                (proptest::option::of(any::<u32>()),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(any::<u8>(), 0..64),
                 proptest::collection::vec(("[a-z]{0,5}", ".{0,8}"), 0..3)),
                0..20),
            flip in any::<prop::sample::Index>(),
        ) {
            let records: Vec<BatchRecord<'_>> = recs
                .iter()
                .map(|(p, k, v, h)| BatchRecord {
                    partition: *p,
                    key: k.as_deref(),
                    value: v,
                    headers: h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
                })
                .collect();
            let mut buf = Vec::new();
            encode_batch(&records, &mut buf);
            prop_assert_eq!(decode_batch(&buf).unwrap(), records);
            let i = flip.index(buf.len());
            buf[i] ^= 0x41;
            let _ = decode_batch(&buf);
        }
    }
}
