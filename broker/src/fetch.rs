//! Fetch by exact offset: from memory (pending, in-flight and recently flushed batches) or
//! from flushed segments located through the filer and read from a volume server, verified,
//! and cached. A segment that cannot be read is an error naming it, never a silent skip.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::api::broker::{FetchQuery, Isolation};
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::cache::DecodedSegment;
use crate::log::Region;
use crate::partition::Partition;
use crate::segment::{self, RecordView};
use crate::service::{Broker, Error, check_name};
use crate::store::{SegmentRef, StoreError, TopicKey};

/// Default and largest `limit`.
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;
/// Default and largest `max_bytes`.
const DEFAULT_MAX_BYTES: u64 = 1 << 20;
const MAX_MAX_BYTES: u64 = 16 << 20;
/// Longest long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct FetchOut<'a> {
    records: Vec<RecordOut<'a>>,
    next_offset: u64,
    durable_offset: u64,
    log_end_offset: u64,
}

enum RecordOut<'a> {
    /// A record published over HTTP.
    Kelp { offset: u64, view: RecordView<'a> },
    /// A record of a Kafka batch.
    Kafka(&'a kafka::batch::OwnedRecord),
}

struct Headers<'a>(RecordView<'a>);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.header_count()))?;
        for (k, v) in self.0.headers() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A Kafka record's headers as text (values lossily decoded; a null value is empty).
struct KafkaHeaders<'a>(&'a [(String, Option<Bytes>)]);

impl Serialize for KafkaHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            let v = v
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            m.serialize_entry(k, &v)?;
        }
        m.end()
    }
}

/// Serializes bytes as `field` when UTF-8, else as null plus `field_b64`.
fn bytes_entry<M: SerializeMap>(m: &mut M, field: &str, b: Option<&[u8]>) -> Result<(), M::Error> {
    match b.map(|b| (b, std::str::from_utf8(b))) {
        None => m.serialize_entry(field, &None::<&str>),
        Some((_, Ok(t))) => m.serialize_entry(field, t),
        Some((b, Err(_))) => {
            m.serialize_entry(field, &None::<&str>)?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(b);
            m.serialize_entry(&format!("{field}_b64"), &b64)
        }
    }
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Self::Kelp { offset, view } => {
                m.serialize_entry("offset", offset)?;
                bytes_entry(&mut m, "key", view.key)?;
                bytes_entry(&mut m, "value", Some(view.value))?;
                m.serialize_entry("headers", &Headers(*view))?;
                m.serialize_entry("timestamp_ms", &view.timestamp_ms)?;
            }
            Self::Kafka(r) => {
                m.serialize_entry("offset", &r.offset)?;
                bytes_entry(&mut m, "key", r.key.as_deref())?;
                bytes_entry(&mut m, "value", r.value.as_deref())?;
                m.serialize_entry("headers", &KafkaHeaders(&r.headers))?;
                m.serialize_entry("timestamp_ms", &r.timestamp)?;
            }
        }
        m.end()
    }
}

fn corrupt(part: &Partition, what: String) -> Error {
    Error::Corrupt {
        topic: part.label.clone(),
        partition: part.index,
        what,
    }
}

impl Broker {
    /// Fetches records of one partition, answering the JSON body.
    pub async fn fetch(
        &self,
        key: &TopicKey,
        partition: u32,
        q: FetchQuery,
    ) -> Result<Vec<u8>, Error> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_loaded()?;
        let topic = self.topic(key)?;
        let part = topic
            .partition(partition)
            .cloned()
            .ok_or_else(|| Error::PartitionNotFound {
                key: key.clone(),
                partition,
                count: topic.partition_count(),
            })?;
        self.check_owned(&part)?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
        let max_bytes = q
            .max_bytes
            .unwrap_or(DEFAULT_MAX_BYTES)
            .clamp(1, MAX_MAX_BYTES) as usize;
        let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
        let buffered = q.isolation.unwrap_or_default() == Isolation::Buffered;
        let offset = q.offset;

        let (log_start, durable, end) = part.offsets();
        if offset < log_start || offset > end {
            return Err(Error::OffsetOutOfRange {
                key: key.clone(),
                partition,
                offset,
                log_start,
                log_end: end,
            });
        }
        let mut visible = if buffered { end } else { durable };
        if offset >= visible && !wait.is_zero() {
            visible = self.wait_visible(&part, offset, buffered, wait).await;
        }

        let regions = self
            .read_range(&part, offset, visible, limit, max_bytes)
            .await?;
        // Kafka batches are decoded (and decompressed) first, so records can borrow them.
        let kafka_records = regions
            .iter()
            .filter(|r| r.kafka)
            .map(|r| {
                kafka::batch::decode_batches(&r.data).map_err(|e| {
                    corrupt(
                        &part,
                        format!(
                            "Kafka batch at offset {} is undecodable: {e}",
                            r.first_offset
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut kafka_batches = kafka_records.iter();
        let mut records = Vec::with_capacity(regions.iter().map(|r| r.count).sum());
        for r in &regions {
            if r.kafka {
                let Some(decoded) = kafka_batches.next() else {
                    break;
                };
                for rec in decoded {
                    let at = u64::try_from(rec.offset).unwrap_or(0);
                    if at >= offset && at < visible && records.len() < limit {
                        records.push(RecordOut::Kafka(rec));
                    }
                }
                continue;
            }
            let mut pos = 0;
            for i in 0..r.count {
                let (view, next) = segment::decode_record(&r.data, pos).ok_or_else(|| {
                    corrupt(
                        &part,
                        format!("malformed record at offset {}", r.first_offset + i as u64),
                    )
                })?;
                if records.len() < limit {
                    records.push(RecordOut::Kelp {
                        offset: r.first_offset + i as u64,
                        view,
                    });
                }
                pos = next;
            }
        }
        let next_offset = match records.last() {
            Some(RecordOut::Kelp { offset, .. }) => offset + 1,
            Some(RecordOut::Kafka(r)) => u64::try_from(r.offset).unwrap_or(0) + 1,
            None => offset,
        };
        let (_, durable_offset, log_end_offset) = part.offsets();
        serde_json::to_vec(&FetchOut {
            records,
            next_offset,
            durable_offset,
            log_end_offset,
        })
        .map_err(|e| Error::Internal(e.into()))
    }

    /// Waits until records past `offset` become visible, or `wait` passes; returns the
    /// visible end.
    async fn wait_visible(
        &self,
        part: &Partition,
        offset: u64,
        buffered: bool,
        wait: Duration,
    ) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        if buffered {
            let mut rx = part.end_tx.subscribe();
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.wait_for(|e| *e > offset)) => drop(r),
                () = self.shutdown.cancelled() => {}
            }
            part.offsets().2
        } else {
            let mut rx = part.durable_tx.subscribe();
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.wait_for(|p| p.durable > offset)) => drop(r),
                () = self.shutdown.cancelled() => {}
            }
            part.offsets().1
        }
    }

    /// Records `[from, until)`, at most `limit` and about `max_bytes` (at least one when any).
    pub(crate) async fn read_range(
        &self,
        part: &Partition,
        from: u64,
        until: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Region>, Error> {
        let mut out: Vec<Region> = Vec::new();
        let (mut pos, mut taken, mut bytes) = (from, 0usize, 0usize);
        while pos < until && taken < limit && (taken == 0 || bytes < max_bytes) {
            let mem = part.lock().log.read(
                pos,
                until,
                limit - taken,
                max_bytes.saturating_sub(bytes).max(1),
            );
            if let Some(regions) = mem {
                self.metrics.read("memory");
                out.extend(regions);
                break;
            }
            let seg = self.segment_for(part, pos).await?;
            let before = pos;
            for b in &seg.batches {
                if b.end_offset() <= pos {
                    continue;
                }
                if pos >= until || taken >= limit || (taken > 0 && bytes >= max_bytes) {
                    break;
                }
                if b.is_kafka() {
                    bytes += b.body.len();
                    taken += b.header.record_count as usize;
                    out.push(Region {
                        first_offset: b.header.first_offset,
                        count: b.header.record_count as usize,
                        data: b.body.clone(),
                        kafka: true,
                    });
                    pos = b.end_offset();
                    continue;
                }
                let first = (pos - b.header.first_offset) as usize;
                let last = ((until.min(b.end_offset()) - b.header.first_offset) as usize)
                    .min(b.positions.len());
                let mut i = first;
                while i < last && taken < limit && (taken == 0 || bytes < max_bytes) {
                    let start = b.positions[i] as usize;
                    let stop = b.positions.get(i + 1).map_or(b.body.len(), |p| *p as usize);
                    bytes += stop - start;
                    taken += 1;
                    i += 1;
                }
                if i == first {
                    break;
                }
                let start = b.positions[first] as usize;
                let stop = b.positions.get(i).map_or(b.body.len(), |p| *p as usize);
                out.push(Region {
                    first_offset: pos,
                    count: i - first,
                    data: b.body.slice(start..stop),
                    kafka: false,
                });
                pos = b.header.first_offset + i as u64;
            }
            let more = pos < until && taken < limit && (taken == 0 || bytes < max_bytes);
            if pos == before || (pos < seg.end && more) {
                // The segment stopped short of its own range: never skip silently.
                return Err(corrupt(
                    part,
                    format!("segment ending at {} did not yield offset {pos}", seg.end),
                ));
            }
        }
        Ok(out)
    }

    /// The decoded segment holding `offset` (a durable offset no longer in memory).
    pub(crate) async fn segment_for(
        &self,
        part: &Partition,
        offset: u64,
    ) -> Result<Arc<DecodedSegment>, Error> {
        let known = part.lock().known_segment(offset);
        let seg = match known {
            Some(s) => s,
            None => {
                let found = self
                    .store
                    .find_segment(&part.topic, part.index, offset)
                    .await
                    .map_err(|e| segment_error(part, None, e))?;
                match found {
                    Some(s) if s.offset_max >= offset => {
                        part.lock().remember_segment(s.clone());
                        s
                    }
                    Some(s) => {
                        return Err(corrupt(
                            part,
                            format!(
                                "no segment holds offset {offset}: the nearest below, {} ({}..={}), ends before it",
                                s.fid, s.offset_min, s.offset_max
                            ),
                        ));
                    }
                    None => {
                        return Err(corrupt(
                            part,
                            format!("no segment holds durable offset {offset}"),
                        ));
                    }
                }
            }
        };
        if let Some(d) = self.cache.get(&seg.fid) {
            self.metrics.read("cache");
            return Ok(d);
        }
        self.metrics.read("volume");
        let data = self
            .store
            .read_segment(&seg)
            .await
            .map_err(|e| segment_error(part, Some(&seg), e))?;
        let decoded = decode_verified(data, &seg).await.map_err(|what| {
            corrupt(
                part,
                format!(
                    "segment {} ({}..={}) is corrupt: {what}",
                    seg.fid, seg.offset_min, seg.offset_max
                ),
            )
        })?;
        let decoded = Arc::new(decoded);
        self.cache.insert(seg.fid, decoded.clone());
        Ok(decoded)
    }
}

/// Decodes a segment off the async threads and checks it covers exactly the entry's range.
async fn decode_verified(data: Bytes, seg: &SegmentRef) -> Result<DecodedSegment, String> {
    let (lo, hi) = (seg.offset_min, seg.end());
    let bytes = data.len() as u64;
    let batches = tokio::task::spawn_blocking(move || segment::decode_segment(&data))
        .await
        .map_err(|e| format!("decoder task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let first = batches.first().map_or(lo, |b| b.header.first_offset);
    let end = batches.last().map_or(lo, segment::DecodedBatch::end_offset);
    if first != lo || end != hi {
        return Err(format!(
            "it holds offsets {first}..{end}, its entry says {lo}..{hi}"
        ));
    }
    Ok(DecodedSegment {
        first,
        end,
        batches,
        bytes,
    })
}

fn segment_error(part: &Partition, seg: Option<&SegmentRef>, e: StoreError) -> Error {
    let what = match seg {
        Some(s) => format!(
            "cannot read segment {} (offsets {}..={}) of {} partition {}: {e}",
            s.fid, s.offset_min, s.offset_max, part.label, part.index
        ),
        None => format!(
            "cannot locate a segment of {} partition {}: {e}",
            part.label, part.index
        ),
    };
    match &e {
        StoreError::Client { source, .. } if source.is_transient() => {
            Error::SegmentUnavailable(what)
        }
        _ => Error::Internal(anyhow::anyhow!(what)),
    }
}
