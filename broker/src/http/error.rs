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
            Error::SplitPublish { .. } => ApiError::conflict("partitions_split", message),
            // Routes that can name the request's URL redirect instead (`http::to_owner`).
            Error::NotOwner { .. } => ApiError::unavailable("not_owner", message, 1),
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::store::{StoreError, TopicKey};

    #[test]
    fn test_error_maps_each_variant_to_its_status_code_and_text() {
        let key = || TopicKey::new("ns", "t");
        let s = |n: u16| StatusCode::from_u16(n).unwrap();
        let cases: Vec<(Error, StatusCode, &str)> = vec![
            (
                Error::BadName {
                    kind: "topic",
                    name: "..".into(),
                },
                s(400),
                "bad_name",
            ),
            (Error::BadTopic { topic: "t".into() }, s(400), "bad_topic"),
            (
                Error::BadPartitions {
                    key: key(),
                    partitions: 0,
                },
                s(400),
                "bad_partitions",
            ),
            (Error::BadRecord("r".into()), s(400), "bad_record"),
            (Error::EmptyBatch { key: key() }, s(400), "empty_batch"),
            (Error::BadCondition { key: key() }, s(400), "bad_condition"),
            (
                Error::UnknownPartition {
                    key: key(),
                    partition: 4,
                    count: 2,
                },
                s(400),
                "unknown_partition",
            ),
            (
                Error::PartitionNotFound {
                    key: key(),
                    partition: 4,
                    count: 2,
                },
                s(404),
                "unknown_partition",
            ),
            (Error::UnknownTopic { key: key() }, s(404), "unknown_topic"),
            (
                Error::TopicExists {
                    key: key(),
                    have: 1,
                    wanted: 2,
                },
                s(409),
                "topic_exists",
            ),
            (
                Error::PartitionLimit {
                    key: key(),
                    partitions: 2,
                    limit: 1,
                    held: 0,
                },
                s(409),
                "partition_limit",
            ),
            (
                Error::LogEndMismatch {
                    key: key(),
                    partition: 0,
                    end: 2,
                    expected: 1,
                },
                s(409),
                "log_end_mismatch",
            ),
            (StoreError::Conflict("c".into()).into(), s(409), "conflict"),
            (Error::TooLarge("big".into()), s(413), "payload_too_large"),
            (
                Error::OffsetOutOfRange {
                    key: key(),
                    partition: 0,
                    offset: 9,
                    log_start: 0,
                    log_end: 3,
                },
                s(416),
                "offset_out_of_range",
            ),
            (
                Error::NotReady {
                    why: "in progress".into(),
                },
                s(503),
                "not_ready",
            ),
            (Error::ShuttingDown, s(503), "shutting_down"),
            (
                Error::BufferFull { used: 1, limit: 1 },
                s(503),
                "buffer_full",
            ),
            (Error::Fenced("f".into()), s(503), "partition_fenced"),
            (
                Error::NotDurableYet {
                    topic: "ns/t".into(),
                    partition: 0,
                    offset: 1,
                    timeout_ms: 5,
                    error: "e".into(),
                },
                s(503),
                "not_durable_yet",
            ),
            (
                Error::FlushFailed {
                    topic: "ns/t".into(),
                    partition: 0,
                    target: 1,
                    error: "e".into(),
                },
                s(503),
                "flush_failed",
            ),
            (
                Error::FlushFailing(vec!["a".into()]),
                s(503),
                "flush_failing",
            ),
            (
                Error::SegmentUnavailable("s".into()),
                s(503),
                "segment_unavailable",
            ),
            (
                Error::Corrupt {
                    topic: "ns/t".into(),
                    partition: 0,
                    what: "w".into(),
                },
                s(500),
                "internal",
            ),
            (StoreError::Corrupt("x".into()).into(), s(500), "internal"),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status(), api.code()), (status, code), "{message}");
            assert_eq!(
                api.to_string(),
                message,
                "the text passes through unchanged"
            );
        }
    }

    #[test]
    fn test_error_texts_name_the_object() {
        let key = TopicKey::new("ns", "t");
        let e = Error::UnknownPartition {
            key: key.clone(),
            partition: 4,
            count: 2,
        };
        assert_eq!(e.to_string(), "topic ns/t has no partition 4 (it has 2)");
        let e = Error::FlushFailing(vec!["ns/t partition 0: a".into(), "b".into()]);
        assert_eq!(
            e.to_string(),
            "flushes are failing for ns/t partition 0: a; b"
        );
        let e = Error::FlushFailed {
            topic: "ns/t".into(),
            partition: 1,
            target: 7,
            error: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "partition 1 of ns/t is not durable up to offset 7: boom; its records stay buffered and flushes are retried"
        );
        let ApiError::RangeNotSatisfiable { detail, .. } =
            ApiError::from(Error::OffsetOutOfRange {
                key,
                partition: 0,
                offset: 9,
                log_start: 2,
                log_end: 3,
            })
        else {
            panic!("an offset out of range is a 416");
        };
        assert_eq!(
            detail,
            serde_json::json!({"log_start_offset": 2, "log_end_offset": 3})
        );
    }
}
