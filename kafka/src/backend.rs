//! What the Kafka front end needs from a log store: topics, appends of producer record
//! batches, reads of durable batches, offsets, consumer group offsets and producer ids.
//!
//! Topic names here are Kafka names; the backend maps them onto its own namespace.

use bytes::Bytes;

use crate::batch::BatchInfo;

/// How durable an append must be before [`Backend::produce`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `acks=all`: on disk (fsynced on a volume and committed in the filer).
    Durable,
    /// `acks=1` and `acks=0`: in the backend's memory, flushed soon.
    Buffered,
}

/// A topic as Kafka clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Kafka topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
}

/// A partition's offsets, all exclusive upper bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset still stored.
    pub log_start: i64,
    /// One past the last durable record: consumers see records below it only.
    pub high_watermark: i64,
    /// One past the last record accepted (durable or not).
    pub log_end: i64,
}

/// One producer record batch (magic 2), exactly as the producer sent it.
#[derive(Debug, Clone)]
pub struct ProducedBatch {
    /// The whole batch: base offset, length, ..., records.
    pub bytes: Bytes,
    /// Its parsed and checked header.
    pub info: BatchInfo,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceOutcome {
    /// Stored; the batch's first record got `base_offset`.
    Appended {
        /// Offset of the batch's first record.
        base_offset: i64,
        /// The partition's log start offset.
        log_start: i64,
    },
    /// An idempotent producer's retry of a batch stored before: not stored again.
    Duplicate {
        /// Offset the original got.
        base_offset: i64,
        /// The partition's log start offset.
        log_start: i64,
    },
}

/// Durable batches read from a partition.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Whole v2 record batches back to back (the first may start before the asked offset);
    /// empty when nothing durable is at or past it.
    pub batches: Bytes,
    /// The partition's offsets when read.
    pub offsets: PartitionOffsets,
}

/// A consumer group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Partition.
    pub partition: u32,
    /// Next offset to consume.
    pub offset: i64,
    /// Client metadata stored with it.
    pub metadata: Option<String>,
}

/// Why a backend call failed; the front end maps each to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The topic or partition does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// CreateTopics of an existing topic (TOPIC_ALREADY_EXISTS).
    #[error("topic already exists: {0}")]
    TopicAlreadyExists(String),
    /// A bad topic name (INVALID_TOPIC_EXCEPTION).
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// A bad partition count (INVALID_PARTITIONS).
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// An offset outside the log (OFFSET_OUT_OF_RANGE).
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
    /// An idempotent producer skipped a sequence (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's epoch is older than the one seen (INVALID_PRODUCER_EPOCH).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A batch or record is larger than allowed (MESSAGE_TOO_LARGE).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A malformed batch (CORRUPT_MESSAGE).
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    /// Not possible here (e.g. deleting a topic on a backend that cannot).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Retriable: the store is unreachable, the buffer is full, the durable wait timed out
    /// (the records may still become durable), or the backend is starting or stopping.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Another broker leads the partition, or it is moving (NOT_LEADER_OR_FOLLOWER: the
    /// client refreshes its metadata and retries there).
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A broker of the cluster as Kafka clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its broker id.
    pub node_id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: i32,
}

/// The log store behind the Kafka listener.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The brokers that share this backend's partitions, this one included (it is the one
    /// whose id is `KafkaConfig::node_id`). Empty: this broker alone, leading every partition
    /// and coordinating every group.
    fn nodes(&self) -> Vec<Node> {
        Vec::new()
    }

    /// The broker id leading a partition; `None`: this broker.
    fn leader(&self, _topic: &str, _partition: u32) -> Option<i32> {
        None
    }

    /// The broker id coordinating a consumer group; `None`: this broker.
    fn coordinator(&self, _group: &str) -> Option<i32> {
        None
    }

    /// Every topic.
    async fn list_topics(&self) -> Result<Vec<TopicMeta>, BackendError>;

    /// One topic, `None` when it does not exist.
    async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, BackendError>;

    /// Creates a topic; [`BackendError::TopicAlreadyExists`] if it exists.
    async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMeta, BackendError>;

    /// Deletes a topic and its records.
    async fn delete_topic(&self, name: &str) -> Result<(), BackendError>;

    /// Appends one producer batch, unchanged except its base offset. With a producer id
    /// (>= 0) the backend checks the batch's sequence against
    /// [`crate::idempotence::ProducerStates`] under the same lock as the append. It may return
    /// as soon as the batch is appended: with [`Durability::Durable`] it must then make it
    /// durable promptly, and the caller answers only after [`Backend::wait_durable`].
    async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: ProducedBatch,
        durability: Durability,
    ) -> Result<ProduceOutcome, BackendError>;

    /// Returns once every record of the partition below `end` is durable (what an
    /// `acks=all` answer waits for), or the error that keeps it from being durable in time.
    /// The default suits backends whose [`Backend::produce`] with [`Durability::Durable`]
    /// returns only once durable. Waiting apart from appending lets one connection's
    /// pipelined produces share flushes while their appends stay in arrival order.
    async fn wait_durable(
        &self,
        topic: &str,
        partition: u32,
        end: i64,
    ) -> Result<(), BackendError> {
        let _ = (topic, partition, end);
        Ok(())
    }

    /// The partition's offsets.
    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BackendError>;

    /// Durable batches from `offset` on, about `max_bytes` of them but always at least one
    /// whole batch when one is there. An offset below the log start or above the high
    /// watermark is [`BackendError::OffsetOutOfRange`]; at the high watermark the result is
    /// empty.
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError>;

    /// Returns once the partition's high watermark is above `offset` (or the partition is
    /// gone); callers bound it with a timeout.
    async fn wait_for_data(&self, topic: &str, partition: u32, offset: i64);

    /// The first offset whose record timestamp is at or after `timestamp_ms`, with that
    /// timestamp; `None` when every record is older.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError>;

    /// Stores a consumer group's offset durably.
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        offset: CommittedOffset,
    ) -> Result<(), BackendError>;

    /// A consumer group's committed offsets for a topic.
    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError>;

    /// A producer id never handed out before, across restarts and crashes.
    async fn allocate_producer_id(&self) -> Result<i64, BackendError>;
}
