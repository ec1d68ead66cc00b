//! Kafka error codes the listener answers with, and how [`BackendError`]s map onto them.

use crate::backend::BackendError;

/// Kafka protocol error codes used here (see Kafka's `Errors.java`).
pub mod code {
    /// No error.
    pub const NONE: i16 = 0;
    /// An unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// The requested offset is outside the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// A record batch failed its checks.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// No such topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// The request timed out (the records may still become durable).
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// This broker does not lead the partition (refresh metadata and retry).
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// A batch larger than allowed.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// The group coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker does not coordinate the group (find the coordinator again).
    pub const NOT_COORDINATOR: i16 = 16;
    /// A bad topic name.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// Acks other than -1, 0, 1.
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    /// The member's group protocols do not match the group's.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// Bad group id.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// The member id is not in the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// Session timeout outside the allowed range.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// The API or version is not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// The client asked for a SASL mechanism this listener does not offer.
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    /// A SASL request out of order (authenticate before handshake).
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    /// The SASL credentials are not valid.
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    /// The topic exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// Bad partition count.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// Bad replication factor.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// A malformed or unsupported request.
    pub const INVALID_REQUEST: i16 = 42;
    /// Old message format (magic 0 or 1) batches.
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// An idempotent producer skipped or reordered sequences.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// An idempotent producer's epoch is fenced.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// Transactions are not supported here.
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    /// The credential may not write to (or create, or delete) the topic.
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    /// The credential may not perform a cluster action (e.g. an idempotent producer's
    /// InitProducerId).
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    /// Topic deletion is not possible.
    pub const TOPIC_DELETION_DISABLED: i16 = 73;
    /// A v4+ JoinGroup must be retried with the member id handed out.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// The group is not empty (or not known).
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
}

/// The Kafka error code for a backend error.
pub fn backend_code(e: &BackendError) -> i16 {
    match e {
        BackendError::UnknownTopicOrPartition(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        BackendError::TopicAlreadyExists(_) => code::TOPIC_ALREADY_EXISTS,
        BackendError::InvalidTopic(_) => code::INVALID_TOPIC_EXCEPTION,
        BackendError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        BackendError::OffsetOutOfRange(_) => code::OFFSET_OUT_OF_RANGE,
        BackendError::OutOfOrderSequence(_) => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        BackendError::InvalidProducerEpoch(_) => code::INVALID_PRODUCER_EPOCH,
        BackendError::TooLarge(_) => code::MESSAGE_TOO_LARGE,
        BackendError::Corrupt(_) => code::CORRUPT_MESSAGE,
        BackendError::Unsupported(_) => code::INVALID_REQUEST,
        // Retriable: librdkafka and the Java client retry REQUEST_TIMED_OUT with the same
        // sequence, and the idempotence check answers a retry of a stored batch.
        BackendError::Unavailable(_) => code::REQUEST_TIMED_OUT,
        BackendError::NotLeader(_) => code::NOT_LEADER_OR_FOLLOWER,
        BackendError::Internal(_) => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Logs a backend error where it is handled: server-side faults at warn, client mistakes at
/// debug.
pub fn log_backend_error(e: &BackendError) {
    match e {
        BackendError::Internal(_) | BackendError::Unavailable(_) => {
            tracing::warn!(error = %e, "backend call failed")
        }
        _ => tracing::debug!(error = %e, "backend call refused"),
    }
}
