//! Why a broker operation failed: the [`Error`] enum every domain operation returns.
//!
//! Each variant maps to one HTTP status in `crate::http::error` (the only place in the broker
//! that knows status codes) and to one Kafka error in `crate::kafka_backend`. A variant's text
//! is the `error` of the HTTP answer and the message of the Kafka error, so it names the
//! object and says what went wrong.

use crate::service::MAX_PARTITIONS;
use crate::store::{StoreError, TopicKey};

/// Why a broker operation failed; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, topic or group name breaks the name rules (400 `bad_name`).
    #[error(
        "{kind} name {name:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ - (and not . or ..)"
    )]
    BadName {
        /// What the name names: `namespace`, `topic` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A group's topic is not `namespace/topic` (400 `bad_topic`).
    #[error("topic {topic:?} must be namespace/topic")]
    BadTopic {
        /// The topic as given.
        topic: String,
    },
    /// A partition count outside `1..=MAX_PARTITIONS` (400 `bad_partitions`).
    #[error("topic {key}: partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}")]
    BadPartitions {
        /// The topic.
        key: TopicKey,
        /// The count asked for.
        partitions: u32,
    },
    /// A record is malformed (400 `bad_record`); the text names the record.
    #[error("{0}")]
    BadRecord(String),
    /// A publish without records (400 `empty_batch`).
    #[error("publish to {key} has no records")]
    EmptyBatch {
        /// The topic.
        key: TopicKey,
    },
    /// A conditional publish spreads over partitions (400 `bad_condition`).
    #[error("publish to {key} with if_log_end must send every record to one partition")]
    BadCondition {
        /// The topic.
        key: TopicKey,
    },
    /// A record or offset commit names a partition the topic lacks (400 `unknown_partition`).
    #[error("topic {key} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        key: TopicKey,
        /// The partition named.
        partition: u32,
        /// The topic's partition count.
        count: u32,
    },
    /// The partition read from does not exist (404 `unknown_partition`).
    #[error("topic {key} has no partition {partition} (it has {count})")]
    PartitionNotFound {
        /// The topic.
        key: TopicKey,
        /// The partition named.
        partition: u32,
        /// The topic's partition count.
        count: u32,
    },
    /// The topic does not exist (404 `unknown_topic`).
    #[error("topic {key} does not exist")]
    UnknownTopic {
        /// The topic.
        key: TopicKey,
    },
    /// The topic exists with another partition count (409 `topic_exists`).
    #[error("topic {key} already exists with {have} partitions, not {wanted}")]
    TopicExists {
        /// The topic.
        key: TopicKey,
        /// Its partition count.
        have: u32,
        /// The count asked for.
        wanted: u32,
    },
    /// Creating the topic would exceed `--max-partitions` (409 `partition_limit`).
    #[error(
        "topic {key}: {partitions} more partitions would exceed this broker's limit of {limit} (it holds {held}; see --max-partitions)"
    )]
    PartitionLimit {
        /// The topic.
        key: TopicKey,
        /// The count asked for.
        partitions: u32,
        /// `--max-partitions`.
        limit: u64,
        /// Partitions this broker holds.
        held: u64,
    },
    /// A conditional publish found another log end; nothing was appended (409
    /// `log_end_mismatch`).
    #[error(
        "partition {partition} of {key} ends at offset {end}, not {expected}: nothing was appended"
    )]
    LogEndMismatch {
        /// The topic.
        key: TopicKey,
        /// The partition.
        partition: u32,
        /// Its log end offset.
        end: u64,
        /// The log end the publish expected.
        expected: u64,
    },
    /// Another broker owns the partition, or it is moving between brokers
    /// (`--ownership shared`): HTTP routes redirect to `owner` (307), or answer 503
    /// `not_owner` while no owner is known; Kafka answers NOT_LEADER_OR_FOLLOWER.
    #[error("partition {partition} of {key} is served by {}", owner.as_deref().unwrap_or("another broker (moving)"))]
    NotOwner {
        /// The topic.
        key: TopicKey,
        /// The partition.
        partition: u32,
        /// The owner's URL, when known.
        owner: Option<String>,
    },
    /// A publish's records go to partitions that different brokers own (409
    /// `partitions_split`): the client must send each partition's records to its owner.
    #[error(
        "publish to {key} spans partitions owned by different brokers ({owners}); publish each partition's records to its owner"
    )]
    SplitPublish {
        /// The topic.
        key: TopicKey,
        /// `partition=owner` pairs.
        owners: String,
    },
    /// The store holds the object with other content (409 `conflict`).
    #[error("{0}")]
    StoreConflict(String),
    /// A record or batch is over its limit (413); the text names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A fetch offset outside the partition's log (416 `offset_out_of_range`).
    #[error("offset {offset} of {key} partition {partition} is outside [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The topic.
        key: TopicKey,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The partition's log start offset.
        log_start: u64,
        /// The partition's log end offset.
        log_end: u64,
    },
    /// Start-up recovery has not finished (503 `not_ready`).
    #[error("broker is still recovering topics from the filer ({why})")]
    NotReady {
        /// The last recovery error, or that it is in progress.
        why: String,
    },
    /// The broker is shutting down (503 `shutting_down`).
    #[error("broker is shutting down")]
    ShuttingDown,
    /// The buffer of records not yet durable is full (503 `buffer_full`).
    #[error("broker buffer is full ({used} of {limit} bytes not yet durable); retry later")]
    BufferFull {
        /// Bytes buffered.
        used: u64,
        /// The bound.
        limit: u64,
    },
    /// Another broker owns the partition now (503 `partition_fenced`).
    #[error("{0}")]
    Fenced(String),
    /// Accepted records did not become durable in time (503 `not_durable_yet`); they stay
    /// buffered and will still be flushed.
    #[error(
        "records of {topic} partition {partition} up to offset {offset} were accepted but are not durable after {timeout_ms} ms ({error}); they stay buffered and will still be flushed, so retrying may duplicate them"
    )]
    NotDurableYet {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The last offset waited for.
        offset: u64,
        /// `--durable-timeout-ms`.
        timeout_ms: u64,
        /// The partition's flush error, or that the flush is still running.
        error: String,
    },
    /// The admin flush found a partition that is not durable in time (503 `flush_failed`).
    #[error(
        "partition {partition} of {topic} is not durable up to offset {target}: {error}; its records stay buffered and flushes are retried"
    )]
    FlushFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset waited for.
        target: u64,
        /// The partition's flush error.
        error: String,
    },
    /// Readiness: flushes are failing (503 `flush_failing`).
    #[error("flushes are failing for {}", .0.join("; "))]
    FlushFailing(Vec<String>),
    /// The store could not be reached (503 `store_unavailable`).
    #[error("{0}")]
    StoreUnavailable(StoreError),
    /// A segment could not be located or read for now (503 `segment_unavailable`).
    #[error("{0}")]
    SegmentUnavailable(String),
    /// Stored data of a partition is malformed (500).
    #[error("partition {partition} of {topic}: {what}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What is wrong.
        what: String,
    },
    /// Anything else (500).
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// A store failure: unreachable dependencies are [`Error::StoreUnavailable`], a conflict is
/// [`Error::StoreConflict`], the rest [`Error::Internal`].
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Client { ref source, .. } if source.is_transient() => {
                Self::StoreUnavailable(err)
            }
            StoreError::Conflict(m) => Self::StoreConflict(m),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}
