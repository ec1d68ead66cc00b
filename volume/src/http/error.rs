//! Mapping of [`service::Error`](crate::service::Error) (and the store's
//! [`VolumeError`](crate::store::VolumeError) inside it) to `ApiError` statuses and codes: the
//! only place of the volume server that knows status codes.

use common::http::ApiError;

use crate::service::Error;
use crate::store::VolumeError;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Blob { source, .. } | Error::Volume(source) => volume_error(source, message),
            Error::ReplicaUnavailable(_) => {
                ApiError::unavailable("replica_unavailable", message, 1)
            }
            Error::NotFoundOnAnyCopy { .. } => ApiError::not_found("needle_not_found", message),
            Error::BadReplication(_) => ApiError::bad_request("bad_replication", message),
            Error::BadThreshold(_) => ApiError::bad_request("bad_threshold", message),
            Error::BadCollection(_) => ApiError::bad_request("bad_collection", message),
            Error::NoFreeSlot { .. } => ApiError::conflict("no_free_slot", message),
            Error::Internal(e) => ApiError::internal(e),
        }
    }
}

/// The status and code of a store error; `message` is the text to answer (it may name the
/// file id as well as the volume).
fn volume_error(e: VolumeError, message: String) -> ApiError {
    match e {
        VolumeError::VolumeNotFound { .. } => ApiError::not_found("volume_not_found", message),
        VolumeError::NeedleNotFound { .. } => ApiError::not_found("needle_not_found", message),
        VolumeError::CookieMismatch { .. } => ApiError::conflict("cookie_mismatch", message),
        VolumeError::Exists { .. } => ApiError::conflict("volume_exists", message),
        VolumeError::VacuumInProgress { .. } => ApiError::conflict("vacuum_in_progress", message),
        VolumeError::Full { .. } => ApiError::unavailable("volume_full", message, 1),
        VolumeError::Moved { .. } => ApiError::unavailable("volume_compacting", message, 1),
        VolumeError::WriterGone { .. } => ApiError::unavailable("shutting_down", message, 1),
        VolumeError::TooLarge { .. } => ApiError::PayloadTooLarge { message },
        VolumeError::DiskFull { .. } => ApiError::InsufficientStorage { message },
        VolumeError::Io { .. } | VolumeError::Corrupt { .. } | VolumeError::Poisoned { .. } => {
            ApiError::internal(anyhow::anyhow!(message))
        }
    }
}
