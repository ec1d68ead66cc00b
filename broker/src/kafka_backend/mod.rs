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
//!
//! Layout: this file holds the [`KafkaBackend`], its topic look-ups and the mapping of
//! [`service::Error`](crate::service::Error) to Kafka errors; `produce` the checked append,
//! `producers` the idempotent producer state and producer ids, `fetch` reads and timestamp
//! look-ups, `offsets` partition and group offsets. Invariant: every broker error reaches a
//! Kafka client through `backend_error`, by its variant.

mod fetch;
mod offsets;
mod produce;
mod producers;

use std::sync::Arc;

use kafka::backend::{
    CommittedOffset, Fetched, PartitionOffsets, ProduceOutcome, ProducedBatch, TopicMeta,
};
use kafka::{Backend, BackendError, Durability};

use crate::names::valid_name;
use crate::partition::{Partition, Topic};
use crate::service::{Broker, Error};
use crate::store::TopicKey;

/// The broker behind the Kafka listener.
#[derive(Debug)]
pub struct KafkaBackend {
    broker: Arc<Broker>,
    namespace: String,
    ids: tokio::sync::Mutex<(u64, u64)>,
}

/// Maps a broker error onto the backend's by its variant: missing topics and partitions,
/// topic and partition-count conflicts, bad names, sizes and offsets keep their meaning;
/// everything the HTTP API answers 503 is retriable ([`BackendError::Unavailable`]); the rest
/// (malformed input the Kafka layer already checks, corruption) is internal.
fn backend_error(e: Error) -> BackendError {
    let kind: fn(String) -> BackendError = match &e {
        Error::UnknownTopic { .. }
        | Error::UnknownPartition { .. }
        | Error::PartitionNotFound { .. } => BackendError::UnknownTopicOrPartition,
        Error::TopicExists { .. } => BackendError::TopicAlreadyExists,
        Error::BadPartitions { .. } | Error::PartitionLimit { .. } => {
            BackendError::InvalidPartitions
        }
        Error::BadName { .. } => BackendError::InvalidTopic,
        Error::TooLarge(_) => BackendError::TooLarge,
        Error::OffsetOutOfRange { .. } => BackendError::OffsetOutOfRange,
        Error::NotReady { .. }
        | Error::ShuttingDown
        | Error::BufferFull { .. }
        | Error::Fenced(_)
        | Error::NotDurableYet { .. }
        | Error::FlushFailed { .. }
        | Error::FlushFailing(_)
        | Error::StoreUnavailable(_)
        | Error::SegmentUnavailable(_) => BackendError::Unavailable,
        Error::NotOwner { .. } => BackendError::NotLeader,
        Error::BadTopic { .. }
        | Error::BadRecord(_)
        | Error::EmptyBatch { .. }
        | Error::BadCondition { .. }
        | Error::LogEndMismatch { .. }
        | Error::SplitPublish { .. }
        | Error::StoreConflict(_)
        | Error::Corrupt { .. }
        | Error::Internal(_) => BackendError::Internal,
    };
    kind(e.to_string())
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
        self.broker.check_owned(&part).map_err(backend_error)?;
        Ok((topic, part))
    }
}

#[async_trait::async_trait]
impl Backend for KafkaBackend {
    fn nodes(&self) -> Vec<kafka::backend::Node> {
        self.broker
            .members()
            .iter()
            .filter_map(|m| {
                let (host, port) = m.kafka.as_deref()?.rsplit_once(':')?;
                Some(kafka::backend::Node {
                    node_id: crate::members::node_id(&m.url),
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                })
            })
            .collect()
    }

    fn leader(&self, topic: &str, partition: u32) -> Option<i32> {
        if !self.broker.is_shared() {
            return None;
        }
        let key = self.key(topic).ok()?;
        crate::members::owner_of(&self.broker.members(), &key, partition)
            .map(|m| crate::members::node_id(&m.url))
    }

    fn coordinator(&self, group: &str) -> Option<i32> {
        if !self.broker.is_shared() {
            return None;
        }
        crate::members::coordinator_of(&self.broker.members(), group)
            .map(|m| crate::members::node_id(&m.url))
    }

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
        self.produce_batch(topic, partition, batch, durability)
            .await
    }

    async fn wait_durable(
        &self,
        topic: &str,
        partition: u32,
        end: i64,
    ) -> Result<(), BackendError> {
        self.wait_batch_durable(topic, partition, end).await
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BackendError> {
        self.partition_offsets(topic, partition)
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError> {
        self.fetch_batches(topic, partition, offset, max_bytes)
            .await
    }

    async fn wait_for_data(&self, topic: &str, partition: u32, offset: i64) {
        self.wait_for_records(topic, partition, offset).await;
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        self.find_offset_for_timestamp(topic, partition, timestamp_ms)
            .await
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
        self.commit_group_offset(group, topic, offset).await
    }

    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError> {
        self.group_committed_offsets(group, topic).await
    }

    async fn allocate_producer_id(&self) -> Result<i64, BackendError> {
        self.next_producer_id().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn test_backend_error_maps_broker_errors_by_variant() {
        let key = || TopicKey::new("ns", "t");
        assert!(matches!(
            backend_error(Error::UnknownTopic { key: key() }),
            BackendError::UnknownTopicOrPartition(m) if m == "topic ns/t does not exist"
        ));
        assert!(matches!(
            backend_error(Error::UnknownPartition {
                key: key(),
                partition: 3,
                count: 1
            }),
            BackendError::UnknownTopicOrPartition(_)
        ));
        assert!(matches!(
            backend_error(Error::TopicExists {
                key: key(),
                have: 1,
                wanted: 2
            }),
            BackendError::TopicAlreadyExists(_)
        ));
        assert!(matches!(
            backend_error(Error::BadPartitions {
                key: key(),
                partitions: 0
            }),
            BackendError::InvalidPartitions(_)
        ));
        assert!(matches!(
            backend_error(Error::BadName {
                kind: "topic",
                name: "..".into()
            }),
            BackendError::InvalidTopic(_)
        ));
        assert!(matches!(
            backend_error(Error::TooLarge("big".into())),
            BackendError::TooLarge(m) if m == "big"
        ));
        assert!(matches!(
            backend_error(Error::OffsetOutOfRange {
                key: key(),
                partition: 0,
                offset: 9,
                log_start: 0,
                log_end: 3
            }),
            BackendError::OffsetOutOfRange(_)
        ));
        for retriable in [
            Error::ShuttingDown,
            Error::BufferFull { used: 1, limit: 1 },
            Error::Fenced("f".into()),
            Error::NotReady { why: "w".into() },
        ] {
            assert!(matches!(
                backend_error(retriable),
                BackendError::Unavailable(_)
            ));
        }
        for internal in [
            Error::from(StoreError::Conflict("c".into())),
            Error::BadRecord("r".into()),
            Error::Corrupt {
                topic: "ns/t".into(),
                partition: 0,
                what: "w".into(),
            },
        ] {
            assert!(matches!(backend_error(internal), BackendError::Internal(_)));
        }
    }
}
