//! The broker as the [`kafka::Backend`] of its Kafka listener: Kafka topic `name` is the
//! Kelp topic `<--kafka-namespace>/name`, served from the same partition logs as the HTTP
//! API (no extra hop per produce).
//!
//! - Produce appends each producer batch unchanged (only its base offset rewritten) as a
//!   batch of its own in the partition's log; `acks=all` asks for a flush at once and its
//!   answer waits ([`Backend::wait_durable`]) for the same durability as an HTTP
//!   `acks=durable` publish (segment fsynced on a volume, entry synced in the filer).
//! - Idempotent producers are checked under the partition lock against the partition's
//!   [`kafka::idempotence::ProducerStates`], which the first idempotent produce after a
//!   start rebuilds from the Kafka batches of the partition's last segment.
//! - Fetch returns durable batches only: Kafka batches as stored, records published over
//!   HTTP encoded into an uncompressed v2 batch per run of records.
//! - Producer ids come from a durable sequence in the filer, reserved in blocks, so an id is
//!   never handed out twice, across crashes too (an unused rest of a block is skipped).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use common::http::ApiError;
use kafka::backend::{
    CommittedOffset, Fetched, PartitionOffsets, ProduceOutcome, ProducedBatch, TopicMeta,
};
use kafka::batch::{BatchInfo, OwnedRecord};
use kafka::idempotence::SequenceCheck;
use kafka::{Backend, BackendError, Durability};

use crate::log::Region;
use crate::names::valid_name;
use crate::partition::{MAX_LINKS, Partition, Topic};
use crate::segment;
use crate::service::Broker;
use crate::store::TopicKey;

/// Producer ids reserved from the filer at a time.
const PRODUCER_ID_BLOCK: u64 = 1000;
/// Name of the producer id sequence in the store.
const PRODUCER_ID_SEQUENCE: &str = "kafka-producer-ids";
/// Segments read back to rebuild idempotent producer state after a start.
const PRODUCER_STATE_SEGMENTS: usize = 8;
/// Most records one Kafka fetch of a partition collects.
const FETCH_RECORD_LIMIT: usize = 100_000;

/// The broker behind the Kafka listener.
#[derive(Debug)]
pub struct KafkaBackend {
    broker: Arc<Broker>,
    namespace: String,
    ids: tokio::sync::Mutex<(u64, u64)>,
}

/// Maps the broker's API errors onto the backend's, by their stable codes.
fn backend_error(e: ApiError) -> BackendError {
    let message = e.to_string();
    match (e.status().as_u16(), e.code()) {
        (_, "unknown_partition" | "unknown_topic") | (404, _) => {
            BackendError::UnknownTopicOrPartition(message)
        }
        (_, "topic_exists") => BackendError::TopicAlreadyExists(message),
        (_, "bad_partitions" | "partition_limit") => BackendError::InvalidPartitions(message),
        (_, "bad_name") => BackendError::InvalidTopic(message),
        (413, _) => BackendError::TooLarge(message),
        (416, _) => BackendError::OffsetOutOfRange(message),
        (503, _) => BackendError::Unavailable(message),
        _ => BackendError::Internal(message),
    }
}

/// A group id as a Kelp name: itself when valid, else `x.` and its bytes in hex.
fn group_name(group: &str) -> Result<String, BackendError> {
    if valid_name(group) && !group.starts_with("x.") {
        return Ok(group.to_owned());
    }
    let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
    let name = format!("x.{hex}");
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(BackendError::Unsupported(format!(
            "group id {group:?} is too long (at most 63 bytes when it holds characters other than A-Z a-z 0-9 . _ -)"
        )))
    }
}

impl KafkaBackend {
    /// Serves `broker`'s topics of `namespace` to Kafka clients.
    pub fn new(broker: Arc<Broker>, namespace: &str) -> Self {
        Self {
            broker,
            namespace: namespace.to_owned(),
            ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    fn key(&self, name: &str) -> Result<TopicKey, BackendError> {
        if valid_name(name) {
            Ok(TopicKey::new(self.namespace.clone(), name))
        } else {
            Err(BackendError::InvalidTopic(format!(
                "topic name {name:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ -"
            )))
        }
    }

    fn partition(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<(Arc<Topic>, Arc<Partition>), BackendError> {
        let key = self.key(name)?;
        self.broker.check_loaded().map_err(backend_error)?;
        let topic = self.broker.topic(&key).map_err(backend_error)?;
        let part = topic.partition(partition).cloned().ok_or_else(|| {
            BackendError::UnknownTopicOrPartition(format!(
                "topic {name} has no partition {partition} (it has {})",
                topic.partition_count()
            ))
        })?;
        Ok((topic, part))
    }

    /// Rebuilds the partition's producer states from the Kafka batches of its last
    /// [`PRODUCER_STATE_SEGMENTS`] segments (once after start-up; batches appended since are
    /// recorded as they come). A producer keeps at most five batches in flight and each flush
    /// holds at least one, so a retry of any batch whose acknowledgement a crash lost is found.
    async fn load_producers(&self, part: &Partition) -> Result<(), BackendError> {
        if part.lock().producers_loaded {
            return Ok(());
        }
        let unavailable = |e: crate::store::StoreError| BackendError::Unavailable(e.to_string());
        let store = &self.broker.store;
        let mut segments = Vec::new();
        let mut next = store
            .last_segment(&part.topic, part.index)
            .await
            .map_err(unavailable)?;
        while let Some(seg) = next.take() {
            let below = seg.offset_min.checked_sub(1);
            segments.push(seg);
            if segments.len() >= PRODUCER_STATE_SEGMENTS {
                break;
            }
            if let Some(below) = below {
                next = store
                    .find_segment(&part.topic, part.index, below)
                    .await
                    .map_err(unavailable)?;
            }
        }
        let mut found = Vec::new();
        for seg in segments.iter().rev() {
            let decoded = self
                .broker
                .segment_for(part, seg.offset_min)
                .await
                .map_err(backend_error)?;
            for b in decoded.batches.iter().filter(|b| b.is_kafka()) {
                if let Ok(info) = BatchInfo::parse(&b.body)
                    && info.is_idempotent()
                {
                    found.push((info, b.header.first_offset as i64));
                }
            }
        }
        let mut st = part.lock();
        if !st.producers_loaded {
            for (info, base) in &found {
                st.producers.record(info, *base);
            }
            st.producers_loaded = true;
            tracing::info!(
                topic = %part.label,
                partition = part.index,
                segments = segments.len(),
                producers = st.producers.len(),
                "rebuilt idempotent producer state from the last segments"
            );
        }
        Ok(())
    }

    /// Appends a checked batch under the partition lock; returns the outcome and the offset
    /// durability must reach.
    fn append(
        &self,
        part: &Partition,
        batch: &ProducedBatch,
        durable: bool,
    ) -> Result<(ProduceOutcome, u64), BackendError> {
        let info = &batch.info;
        let size = batch.bytes.len() as u64;
        let broker = &self.broker;
        if !broker.budget.try_reserve(size) {
            broker.metrics.buffer_full.inc();
            return Err(BackendError::Unavailable(format!(
                "broker buffer is full ({} of {} bytes not yet durable)",
                broker.budget.used(),
                broker.budget.limit()
            )));
        }
        let now = common::time::now_ms();
        let ts = |t: i64| u64::try_from(t).unwrap_or(now);
        let log_append_time = info.attributes & 0x08 != 0;
        let (ts_min, ts_max) = if log_append_time {
            (now, now)
        } else {
            let (a, b) = (ts(info.base_timestamp), ts(info.max_timestamp));
            (a.min(b), a.max(b))
        };
        let link = common::telemetry::span_context(&tracing::Span::current());
        let (outcome, target, end, lag, wake) = {
            let mut st = part.lock();
            let log_start = st.log.log_start() as i64;
            if let Some(f) = st.fenced.clone() {
                drop(st);
                broker.budget.release(size);
                return Err(BackendError::Unavailable(f));
            }
            if st.closed {
                drop(st);
                broker.budget.release(size);
                return Err(BackendError::Unavailable("broker is shutting down".into()));
            }
            if info.is_idempotent() {
                let refuse = |e: BackendError| {
                    broker.budget.release(size);
                    Err(e)
                };
                match st.producers.check(info) {
                    SequenceCheck::New => {}
                    SequenceCheck::Duplicate { base_offset } => {
                        drop(st);
                        broker.budget.release(size);
                        let target = base_offset as u64 + u64::from(info.offset_count());
                        return Ok((
                            ProduceOutcome::Duplicate {
                                base_offset,
                                log_start,
                            },
                            target,
                        ));
                    }
                    SequenceCheck::OutOfOrder => {
                        return refuse(BackendError::OutOfOrderSequence(format!(
                            "producer {} sent sequence {} to {} partition {}",
                            info.producer_id, info.base_sequence, part.label, part.index
                        )));
                    }
                    SequenceCheck::StaleEpoch => {
                        return refuse(BackendError::InvalidProducerEpoch(format!(
                            "producer {} epoch {} is older than the one seen on {} partition {}",
                            info.producer_id, info.producer_epoch, part.label, part.index
                        )));
                    }
                }
            }
            let was_idle = st.log.oldest_pending().is_none();
            let base = st.log.append_kafka(
                &batch.bytes,
                info.offset_count(),
                (ts_min, ts_max),
                Instant::now(),
            );
            if info.is_idempotent() {
                st.producers.record(info, base as i64);
            }
            let end = st.log.next();
            if durable {
                st.wanted = st.wanted.max(end);
            }
            if let Some(l) = link
                && st.links.len() < MAX_LINKS
            {
                st.links.push(l);
            }
            let wake = durable || was_idle || st.log.pending_bytes() >= broker.cfg.flush_bytes;
            (
                ProduceOutcome::Appended {
                    base_offset: base as i64,
                    log_start,
                },
                end,
                end,
                end - st.log.durable(),
                wake,
            )
        };
        broker
            .metrics
            .buffered_bytes
            .set(broker.budget.used() as i64);
        part.lag.set(lag as i64);
        part.end_tx.send_replace(end);
        if wake {
            part.wake.notify_one();
        }
        let acks = if durable {
            "kafka_durable"
        } else {
            "kafka_buffered"
        };
        broker
            .metrics
            .published(acks)
            .inc_by(u64::from(info.offset_count()));
        Ok((outcome, target))
    }
}

/// Converts a run of records published over HTTP into one uncompressed Kafka batch.
fn kelp_region_to_batch(region: &Region) -> Result<Bytes, String> {
    let mut records = Vec::with_capacity(region.count);
    let mut pos = 0;
    for i in 0..region.count {
        let offset = region.first_offset + i as u64;
        let (view, next) = segment::decode_record(&region.data, pos)
            .ok_or_else(|| format!("malformed record at offset {offset}"))?;
        records.push(OwnedRecord {
            offset: offset as i64,
            timestamp: view.timestamp_ms as i64,
            key: view.key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(view.value)),
            headers: view
                .headers()
                .map(|(n, v)| (n.to_owned(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                .collect(),
        });
        pos = next;
    }
    kafka::batch::encode_batch(&records).map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl Backend for KafkaBackend {
    async fn list_topics(&self) -> Result<Vec<TopicMeta>, BackendError> {
        self.broker.check_loaded().map_err(backend_error)?;
        Ok(self
            .broker
            .all_topics()
            .iter()
            .filter(|t| t.key.ns == self.namespace)
            .map(|t| TopicMeta {
                name: t.key.name.clone(),
                partitions: t.partition_count(),
            })
            .collect())
    }

    async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, BackendError> {
        let key = self.key(name)?;
        self.broker.check_loaded().map_err(backend_error)?;
        Ok(self.broker.topic(&key).ok().map(|t| TopicMeta {
            name: name.to_owned(),
            partitions: t.partition_count(),
        }))
    }

    async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMeta, BackendError> {
        let key = self.key(name)?;
        let (created, info) = self
            .broker
            .create_topic(key, partitions)
            .await
            .map_err(backend_error)?;
        if !created {
            return Err(BackendError::TopicAlreadyExists(format!(
                "topic {name} already exists"
            )));
        }
        Ok(TopicMeta {
            name: name.to_owned(),
            partitions: info.partitions.len() as u32,
        })
    }

    async fn delete_topic(&self, name: &str) -> Result<(), BackendError> {
        let key = self.key(name)?;
        self.broker.delete_topic(&key).await.map_err(backend_error)
    }

    async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: ProducedBatch,
        durability: Durability,
    ) -> Result<ProduceOutcome, BackendError> {
        self.broker.check_accepting().map_err(backend_error)?;
        let (_, part) = self.partition(topic, partition)?;
        let info = batch.info;
        if info.is_transactional() || info.is_control() {
            return Err(BackendError::Unsupported(
                "transactional and control batches are not supported".into(),
            ));
        }
        if info.record_count != info.last_offset_delta + 1 {
            return Err(BackendError::Corrupt(format!(
                "batch holds {} records but spans {} offsets",
                info.record_count,
                info.offset_count()
            )));
        }
        if batch.bytes.len() as u64 > self.broker.cfg.batch_limit() {
            return Err(BackendError::TooLarge(format!(
                "batch of {} bytes is over the {}-byte limit",
                batch.bytes.len(),
                self.broker.cfg.batch_limit()
            )));
        }
        if info.is_idempotent() {
            self.load_producers(&part).await?;
        }
        // With `Durable` the append asks for a flush now; the answer waits in `wait_durable`.
        let durable = durability == Durability::Durable;
        let (outcome, _) = self.append(&part, &batch, durable)?;
        Ok(outcome)
    }

    async fn wait_durable(
        &self,
        topic: &str,
        partition: u32,
        end: i64,
    ) -> Result<(), BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let end = u64::try_from(end).unwrap_or(0);
        // A duplicate's original may still be buffered: make sure a flush is due for it.
        let due = {
            let mut st = part.lock();
            let due = st.wanted < end && st.log.durable() < end;
            st.wanted = st.wanted.max(end.min(st.log.next()));
            due
        };
        if due {
            part.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + self.broker.cfg.durable_timeout();
        self.broker
            .wait_durable(&part, end, deadline)
            .await
            .map(drop)
            .map_err(backend_error)
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, end) = part.offsets();
        Ok(PartitionOffsets {
            log_start: log_start as i64,
            high_watermark: durable as i64,
            log_end: end as i64,
        })
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, end) = part.offsets();
        let offsets = PartitionOffsets {
            log_start: log_start as i64,
            high_watermark: durable as i64,
            log_end: end as i64,
        };
        let from = u64::try_from(offset)
            .ok()
            .filter(|o| (log_start..=durable).contains(o));
        let Some(from) = from else {
            return Err(BackendError::OffsetOutOfRange(format!(
                "offset {offset} of {topic} partition {partition} is outside [{log_start}, {durable}]"
            )));
        };
        if from == durable {
            return Ok(Fetched {
                batches: Bytes::new(),
                offsets,
            });
        }
        let regions = self
            .broker
            .read_range(&part, from, durable, FETCH_RECORD_LIMIT, max_bytes.max(1))
            .await
            .map_err(backend_error)?;
        let mut out = BytesMut::new();
        for r in &regions {
            if r.kafka {
                out.extend_from_slice(&r.data);
            } else {
                let batch = kelp_region_to_batch(r).map_err(|e| {
                    BackendError::Internal(format!("{} partition {}: {e}", part.label, part.index))
                })?;
                out.extend_from_slice(&batch);
            }
        }
        Ok(Fetched {
            batches: out.freeze(),
            offsets,
        })
    }

    async fn wait_for_data(&self, topic: &str, partition: u32, offset: i64) {
        let Ok((_, part)) = self.partition(topic, partition) else {
            return;
        };
        let mut rx = part.durable_tx.subscribe();
        let past = |p: &crate::partition::Progress| p.durable as i64 > offset;
        tokio::select! {
            r = rx.wait_for(past) => drop(r),
            () = self.broker.shutdown.cancelled() => {}
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, _) = part.offsets();
        // A scan of the durable log in 4 MiB steps; whole Kafka batches older than the
        // timestamp are skipped by their header.
        let mut pos = log_start;
        while pos < durable {
            let regions = self
                .broker
                .read_range(&part, pos, durable, FETCH_RECORD_LIMIT, 4 << 20)
                .await
                .map_err(backend_error)?;
            let Some(last) = regions.last() else {
                break;
            };
            let next = last.first_offset + last.count as u64;
            for r in &regions {
                if r.kafka {
                    let skip = BatchInfo::parse(&r.data)
                        .map(|i| i.max_timestamp < timestamp_ms)
                        .unwrap_or(false);
                    if skip {
                        continue;
                    }
                    let records = kafka::batch::decode_batches(&r.data)
                        .map_err(|e| BackendError::Internal(e.to_string()))?;
                    if let Some(rec) = records
                        .iter()
                        .find(|rec| rec.timestamp >= timestamp_ms && rec.offset >= pos as i64)
                    {
                        return Ok(Some((rec.offset, rec.timestamp)));
                    }
                } else {
                    let mut at = 0;
                    for i in 0..r.count {
                        let Some((view, n)) = segment::decode_record(&r.data, at) else {
                            break;
                        };
                        if view.timestamp_ms as i64 >= timestamp_ms {
                            return Ok(Some((
                                (r.first_offset + i as u64) as i64,
                                view.timestamp_ms as i64,
                            )));
                        }
                        at = n;
                    }
                }
            }
            if next <= pos {
                break;
            }
            pos = next;
        }
        Ok(None)
    }

    /// Kafka's commits are the group's own word on where it is (a consumer that seeks back
    /// commits lower offsets on purpose), so they may go down; the version precondition still
    /// orders concurrent writes.
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        offset: CommittedOffset,
    ) -> Result<(), BackendError> {
        let group = group_name(group)?;
        let key = self.key(topic)?;
        let value = u64::try_from(offset.offset).map_err(|_| {
            BackendError::OffsetOutOfRange(format!("cannot commit offset {}", offset.offset))
        })?;
        self.broker
            .commit_offset(&group, &key.to_string(), offset.partition, value, true)
            .await
            .map(drop)
            .map_err(backend_error)
    }

    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError> {
        let group = group_name(group)?;
        let key = self.key(topic)?;
        let offsets = self
            .broker
            .group_offsets(&group, &key.to_string())
            .await
            .map_err(backend_error)?;
        Ok(offsets
            .offsets
            .into_iter()
            .map(|o| CommittedOffset {
                partition: o.partition,
                offset: o.offset as i64,
                metadata: None,
            })
            .collect())
    }

    async fn allocate_producer_id(&self) -> Result<i64, BackendError> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let first = self
                .broker
                .store
                .reserve_ids(PRODUCER_ID_SEQUENCE, PRODUCER_ID_BLOCK)
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?;
            *ids = (first, first + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        i64::try_from(id).map_err(|_| BackendError::Internal("producer ids exhausted".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_group_name_maps_kafka_ids_to_valid_names() {
        assert_eq!(group_name("my-group.1").unwrap(), "my-group.1");
        assert_eq!(group_name("a b").unwrap(), "x.612062");
        assert_eq!(
            group_name("x.y").unwrap(),
            "x.782e79",
            "the escape prefix is escaped"
        );
        assert!(valid_name(&group_name("grp:with/colons").unwrap()));
        assert!(group_name(&"é".repeat(40)).is_err());
    }
}
