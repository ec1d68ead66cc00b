//! Mapping of [`service::Error`](crate::service::Error) to `ApiError` statuses and codes: the
//! only place (with the handlers' own input checks) that knows status codes.

use axum::http::StatusCode;
use common::http::ApiError;

use crate::service::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::BadCount(_) => ApiError::bad_request("bad_count", message),
            Error::BadCollection(_) => ApiError::bad_request("bad_collection", message),
            Error::BadReplication(_) => ApiError::bad_request("bad_replication", message),
            Error::BadHeartbeat => ApiError::bad_request("bad_heartbeat", message),
            // Transient: a tracked server falls silent and is forgotten, freeing a place.
            Error::TooManyNodes(_) => ApiError::unavailable("too_many_nodes", message, 5),
            Error::TooManyCollections { .. } => ApiError::conflict("too_many_collections", message),
            Error::VolumeNotFound(_) => ApiError::not_found("volume_not_found", message),
            Error::NoWritableVolume { .. } => {
                ApiError::unavailable("no_writable_volume", message, 1)
            }
            Error::GrowFailed { .. } => ApiError::unavailable("grow_failed", message, 1),
            Error::TtlUnsupported(_) => ApiError::bad_request("ttl_unsupported", message),
            Error::UnknownDataCenter(_) => ApiError::bad_request("unknown_data_center", message),
            Error::UnknownRack(_) => ApiError::bad_request("unknown_rack", message),
            Error::UnsupportedDiskType(_) => {
                ApiError::bad_request("unsupported_disk_type", message)
            }
            Error::BadGarbageThreshold(_) => {
                ApiError::bad_request("bad_garbage_threshold", message)
            }
            Error::BadGrowCount(_) => ApiError::bad_request("bad_count", message),
            Error::NotEnoughSlots { .. } => {
                ApiError::unavailable("not_enough_free_slots", message, 1)
            }
            // A refusal of the file itself (malformed, too large) passes through; anything else
            // the volume server answers (a volume it no longer holds because the topology is a
            // heartbeat behind, a full disk, a server gone) is the master's placement to redo:
            // 503, retry (the next assign sees the next heartbeat's topology).
            Error::Upload { source, .. } => match source.status() {
                Some(s) if s == StatusCode::BAD_REQUEST || s == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::from(*source)
                }
                _ => ApiError::unavailable("upload_failed", message, 1),
            },
            Error::DefaultCollection => ApiError::bad_request("default_collection", message),
            // 400, as SeaweedFS answers it.
            Error::CollectionNotFound(_) => ApiError::bad_request("collection_not_found", message),
            Error::CollectionDeleteFailed { .. } => {
                ApiError::unavailable("collection_delete_failed", message, 1)
            }
            Error::State(e) => ApiError::internal(e.context("update the master state file")),
            // etcd unreachable or this master deposed mid-request: another try (perhaps on
            // the next leader) succeeds.
            Error::SharedState(_) => ApiError::unavailable("state_unavailable", message, 1),
            Error::NotLeader { .. } => ApiError::unavailable("not_leader", message, 1),
        }
    }
}
