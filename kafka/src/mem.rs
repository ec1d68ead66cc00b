//! [`MemBackend`]: a [`Backend`] entirely in memory, for tests and for anyone who wants a
//! throwaway Kafka endpoint. Every append is immediately "durable" (the high watermark is the
//! log end), and nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use common::sync::LockExt;
use tokio::sync::Notify;

use crate::backend::{
    Backend, BackendError, CommittedOffset, Durability, Fetched, PartitionOffsets, ProduceOutcome,
    ProducedBatch, TopicMeta,
};
use crate::batch::{self, BatchInfo};
use crate::idempotence::{ProducerStates, SequenceCheck};

/// Most partitions a topic may have here.
const MAX_PARTITIONS: u32 = 10_000;

#[derive(Debug, Default)]
struct Partition {
    /// Stored batches (base offset rewritten) with their headers, in offset order.
    batches: Vec<(Bytes, BatchInfo)>,
    /// Offset the next record gets.
    end: i64,
    producers: ProducerStates,
}

impl Partition {
    fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: 0,
            high_watermark: self.end,
            log_end: self.end,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, Vec<Partition>>,
    /// (group, topic) → partition → committed offset.
    groups: HashMap<(String, String), BTreeMap<u32, CommittedOffset>>,
    next_producer_id: i64,
}

/// An in-memory [`Backend`].
#[derive(Debug, Default)]
pub struct MemBackend {
    state: Mutex<State>,
    /// Woken on every append and topic deletion.
    appended: Notify,
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BackendError::InvalidTopic(name.to_owned()))
    }
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock is fatal, as everywhere in Kelp (see `common::sync`).
        self.state.lock_or_abort()
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&mut Partition) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut state = self.lock();
        let p = state
            .topics
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(partition as usize))
            .ok_or_else(|| BackendError::UnknownTopicOrPartition(format!("{topic}/{partition}")))?;
        f(p)
    }
}

#[async_trait::async_trait]
impl Backend for MemBackend {
    async fn list_topics(&self) -> Result<Vec<TopicMeta>, BackendError> {
        Ok(self
            .lock()
            .topics
            .iter()
            .map(|(name, ps)| TopicMeta {
                name: name.clone(),
                partitions: ps.len() as u32,
            })
            .collect())
    }

    async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, BackendError> {
        Ok(self.lock().topics.get(name).map(|ps| TopicMeta {
            name: name.to_owned(),
            partitions: ps.len() as u32,
        }))
    }

    async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMeta, BackendError> {
        validate_topic_name(name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(BackendError::InvalidPartitions(format!(
                "{partitions} partitions, 1 to {MAX_PARTITIONS} allowed"
            )));
        }
        let mut state = self.lock();
        if state.topics.contains_key(name) {
            return Err(BackendError::TopicAlreadyExists(name.to_owned()));
        }
        state.topics.insert(
            name.to_owned(),
            (0..partitions).map(|_| Partition::default()).collect(),
        );
        Ok(TopicMeta {
            name: name.to_owned(),
            partitions,
        })
    }

    async fn delete_topic(&self, name: &str) -> Result<(), BackendError> {
        let mut state = self.lock();
        if state.topics.remove(name).is_none() {
            return Err(BackendError::UnknownTopicOrPartition(name.to_owned()));
        }
        state.groups.retain(|(_, t), _| t != name);
        drop(state);
        self.appended.notify_waiters();
        Ok(())
    }

    async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: ProducedBatch,
        _durability: Durability,
    ) -> Result<ProduceOutcome, BackendError> {
        let outcome = self.with_partition(topic, partition, |p| {
            let info = batch.info;
            match p.producers.check(&info) {
                SequenceCheck::Duplicate { base_offset } => {
                    return Ok(ProduceOutcome::Duplicate {
                        base_offset,
                        log_start: 0,
                    });
                }
                SequenceCheck::OutOfOrder => {
                    return Err(BackendError::OutOfOrderSequence(format!(
                        "producer {} sequence {}",
                        info.producer_id, info.base_sequence
                    )));
                }
                SequenceCheck::StaleEpoch => {
                    return Err(BackendError::InvalidProducerEpoch(format!(
                        "producer {} epoch {}",
                        info.producer_id, info.producer_epoch
                    )));
                }
                SequenceCheck::New => {}
            }
            let base_offset = p.end;
            let mut bytes = BytesMut::from(&batch.bytes[..]);
            batch::set_base_offset(&mut bytes, base_offset);
            let mut stored = info;
            stored.base_offset = base_offset;
            p.batches.push((bytes.freeze(), stored));
            p.producers.record(&info, base_offset);
            p.end += i64::from(info.offset_count());
            Ok(ProduceOutcome::Appended {
                base_offset,
                log_start: 0,
            })
        })?;
        if matches!(outcome, ProduceOutcome::Appended { .. }) {
            self.appended.notify_waiters();
        }
        Ok(outcome)
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BackendError> {
        self.with_partition(topic, partition, |p| Ok(p.offsets()))
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError> {
        self.with_partition(topic, partition, |p| {
            let offsets = p.offsets();
            if offset < offsets.log_start || offset > offsets.high_watermark {
                return Err(BackendError::OffsetOutOfRange(format!(
                    "offset {offset} outside [{}, {}]",
                    offsets.log_start, offsets.high_watermark
                )));
            }
            // First batch whose last offset is at or past `offset`.
            let first = p.batches.partition_point(|(_, info)| {
                info.base_offset + i64::from(info.offset_count()) <= offset
            });
            let mut out = BytesMut::new();
            for (bytes, _) in &p.batches[first..] {
                if !out.is_empty() && out.len() + bytes.len() > max_bytes {
                    break;
                }
                out.extend_from_slice(bytes);
            }
            Ok(Fetched {
                batches: out.freeze(),
                offsets,
            })
        })
    }

    async fn wait_for_data(&self, topic: &str, partition: u32, offset: i64) {
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.with_partition(topic, partition, |p| Ok(p.offsets().high_watermark)) {
                Ok(hw) if hw > offset => return,
                Ok(_) => {}
                Err(_) => return,
            }
            notified.await;
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let candidate = self.with_partition(topic, partition, |p| {
            Ok(p.batches
                .iter()
                .find(|(_, info)| info.max_timestamp >= timestamp_ms)
                .map(|(bytes, info)| (bytes.clone(), *info)))
        })?;
        let Some((bytes, info)) = candidate else {
            return Ok(None);
        };
        // The batch holds the first record at or after the timestamp; find it inside.
        let found = batch::decode_batches(&bytes)
            .ok()
            .and_then(|records| {
                records
                    .into_iter()
                    .find(|r| r.timestamp >= timestamp_ms)
                    .map(|r| (r.offset, r.timestamp))
            })
            .unwrap_or((info.base_offset, info.max_timestamp));
        Ok(Some(found))
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        offset: CommittedOffset,
    ) -> Result<(), BackendError> {
        let mut state = self.lock();
        let partitions = state
            .topics
            .get(topic)
            .map(|ps| ps.len() as u32)
            .ok_or_else(|| BackendError::UnknownTopicOrPartition(topic.to_owned()))?;
        if offset.partition >= partitions {
            return Err(BackendError::UnknownTopicOrPartition(format!(
                "{topic}/{}",
                offset.partition
            )));
        }
        state
            .groups
            .entry((group.to_owned(), topic.to_owned()))
            .or_default()
            .insert(offset.partition, offset);
        Ok(())
    }

    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError> {
        Ok(self
            .lock()
            .groups
            .get(&(group.to_owned(), topic.to_owned()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn allocate_producer_id(&self) -> Result<i64, BackendError> {
        let mut state = self.lock();
        let id = state.next_producer_id;
        state.next_producer_id += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{OwnedRecord, encode_batch};

    fn batch(ts: &[i64]) -> ProducedBatch {
        let recs: Vec<OwnedRecord> = ts
            .iter()
            .map(|&t| OwnedRecord {
                offset: 0,
                timestamp: t,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: vec![],
            })
            .collect();
        let bytes = encode_batch(&recs).unwrap();
        let info = BatchInfo::parse(&bytes).unwrap();
        ProducedBatch { bytes, info }
    }

    #[tokio::test]
    async fn test_mem_produce_fetch_and_offsets() {
        let b = MemBackend::new();
        b.create_topic("t", 2).await.unwrap();
        assert!(matches!(
            b.create_topic("t", 2).await,
            Err(BackendError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            b.create_topic("bad/name", 1).await,
            Err(BackendError::InvalidTopic(_))
        ));
        let r1 = b
            .produce("t", 1, batch(&[10, 20]), Durability::Durable)
            .await
            .unwrap();
        let r2 = b
            .produce("t", 1, batch(&[30]), Durability::Buffered)
            .await
            .unwrap();
        assert_eq!(
            r1,
            ProduceOutcome::Appended {
                base_offset: 0,
                log_start: 0
            }
        );
        assert_eq!(
            r2,
            ProduceOutcome::Appended {
                base_offset: 2,
                log_start: 0
            }
        );
        let f = b.fetch("t", 1, 1, 1).await.unwrap();
        assert_eq!(f.offsets.high_watermark, 3);
        let recs = batch::decode_batches(&f.batches).unwrap();
        assert_eq!(recs.len(), 2, "whole first batch only (max_bytes 1)");
        let all = batch::decode_batches(&b.fetch("t", 1, 2, 1 << 20).await.unwrap().batches);
        assert_eq!(all.unwrap()[0].offset, 2);
        assert!(b.fetch("t", 1, 3, 100).await.unwrap().batches.is_empty());
        assert!(matches!(
            b.fetch("t", 1, 4, 100).await,
            Err(BackendError::OffsetOutOfRange(_))
        ));
        assert!(matches!(
            b.fetch("t", 2, 0, 100).await,
            Err(BackendError::UnknownTopicOrPartition(_))
        ));
        assert_eq!(
            b.offset_for_timestamp("t", 1, 15).await.unwrap(),
            Some((1, 20))
        );
        assert_eq!(b.offset_for_timestamp("t", 1, 31).await.unwrap(), None);
    }

    #[tokio::test]
    async fn test_mem_wait_for_data_wakes_on_append() {
        let b = std::sync::Arc::new(MemBackend::new());
        b.create_topic("t", 1).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_for_data("t", 0, 0).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.produce("t", 0, batch(&[1]), Durability::Durable)
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn test_mem_group_offsets_and_producer_ids() {
        let b = MemBackend::new();
        b.create_topic("t", 1).await.unwrap();
        let c = CommittedOffset {
            partition: 0,
            offset: 5,
            metadata: Some("m".into()),
        };
        b.commit_offset("g", "t", c.clone()).await.unwrap();
        assert_eq!(b.committed_offsets("g", "t").await.unwrap(), vec![c]);
        assert!(b.committed_offsets("h", "t").await.unwrap().is_empty());
        let bad = CommittedOffset {
            partition: 3,
            offset: 1,
            metadata: None,
        };
        assert!(b.commit_offset("g", "t", bad).await.is_err());
        let a = b.allocate_producer_id().await.unwrap();
        assert_ne!(a, b.allocate_producer_id().await.unwrap());
    }
}
