//! Mapping of [`service::Error`](crate::service::Error) to `ApiError` statuses and codes: the
//! only place in the broker that knows them. Every variant is matched, so a new one must be
//! given its status here; anything unclassified is a 500, never a 400.

use common::http::ApiError;

use crate::service::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::BadName { .. } => ApiError::bad_request("bad_name", message),
            Error::BadTopic { .. } => ApiError::bad_request("bad_topic", message),
            Error::BadPartitions { .. } => ApiError::bad_request("bad_partitions", message),
            Error::BadRecord(_) => ApiError::bad_request("bad_record", message),
            Error::EmptyBatch { .. } => ApiError::bad_request("empty_batch", message),
            Error::BadCondition { .. } => ApiError::bad_request("bad_condition", message),
            Error::UnknownPartition { .. } => ApiError::bad_request("unknown_partition", message),
            Error::PartitionNotFound { .. } => ApiError::not_found("unknown_partition", message),
            Error::UnknownTopic { .. } => ApiError::not_found("unknown_topic", message),
            Error::TopicExists { .. } => ApiError::conflict("topic_exists", message),
            Error::PartitionLimit { .. } => ApiError::conflict("partition_limit", message),
            Error::LogEndMismatch { .. } => ApiError::conflict("log_end_mismatch", message),
            Error::StoreConflict(_) => ApiError::conflict("conflict", message),
            Error::TooLarge(_) => ApiError::PayloadTooLarge { message },
            Error::OffsetOutOfRange {
                log_start, log_end, ..
            } => ApiError::RangeNotSatisfiable {
                code: "offset_out_of_range",
                message,
                detail: serde_json::json!({"log_start_offset": log_start, "log_end_offset": log_end}),
            },
            Error::NotReady { .. } => ApiError::unavailable("not_ready", message, 1),
            Error::ShuttingDown => ApiError::unavailable("shutting_down", message, 1),
            Error::BufferFull { .. } => ApiError::unavailable("buffer_full", message, 1),
            Error::Fenced(_) => ApiError::unavailable("partition_fenced", message, 1),
            Error::NotDurableYet { .. } => ApiError::unavailable("not_durable_yet", message, 1),
            Error::FlushFailed { .. } => ApiError::unavailable("flush_failed", message, 1),
            Error::FlushFailing(_) => ApiError::unavailable("flush_failing", message, 1),
            Error::StoreUnavailable(_) => ApiError::unavailable("store_unavailable", message, 1),
            Error::SegmentUnavailable(_) => {
                ApiError::unavailable("segment_unavailable", message, 1)
            }
            Error::Corrupt { .. } => ApiError::internal(anyhow::anyhow!(message)),
            Error::Internal(e) => ApiError::Internal(e),
        }
    }
}
