//! Mapping of [`service::Error`](crate::service::Error) to `ApiError` statuses and codes: the
//! only place (with the handlers' own input checks) that knows status codes.

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
            Error::VolumeNotFound(_) => ApiError::not_found("volume_not_found", message),
            Error::NoWritableVolume { .. } => {
                ApiError::unavailable("no_writable_volume", message, 1)
            }
            Error::GrowFailed { .. } => ApiError::unavailable("grow_failed", message, 1),
            Error::State(e) => ApiError::internal(e.context("update the master state file")),
        }
    }
}
