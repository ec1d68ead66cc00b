//! Mapping of [`service::Error`](crate::service::Error) to `ApiError` statuses and codes.

use common::http::ApiError;

use crate::service::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::BadPath(_) => ApiError::bad_request("bad_path", message),
            Error::BadEntry(_) => ApiError::bad_request("bad_entry", message),
            Error::BadBody(_) => ApiError::bad_request("bad_body", message),
            Error::NotFound { .. } => ApiError::not_found("not_found", message),
            Error::IsADirectory { .. } => ApiError::conflict("is_a_directory", message),
            Error::NotADirectory { .. } => ApiError::conflict("not_a_directory", message),
            Error::AlreadyExists { .. } => ApiError::conflict("already_exists", message),
            Error::DirNotEmpty { .. } => ApiError::conflict("dir_not_empty", message),
            Error::ChunkInUse(_) => ApiError::conflict("chunk_in_use", message),
            Error::PreconditionFailed { .. } => ApiError::PreconditionFailed {
                code: "precondition_failed",
                message,
            },
            Error::Fenced { .. } => ApiError::PreconditionFailed {
                code: "fenced",
                message,
            },
            Error::TooLarge { .. } => ApiError::PayloadTooLarge { message },
            // The upstream's status, code and Retry-After pass through (a master or volume
            // 503 stays a 503 the client may retry), with the filer's message naming the file.
            Error::Upload { source, .. } => match ApiError::from(*source) {
                ApiError::Upstream {
                    status,
                    code,
                    retry_after,
                    ..
                } => ApiError::Upstream {
                    status,
                    code,
                    message,
                    retry_after,
                },
                ApiError::Unavailable {
                    code,
                    retry_after_secs,
                    ..
                } => ApiError::Unavailable {
                    code,
                    message,
                    retry_after_secs,
                },
                _ => ApiError::internal(anyhow::anyhow!(message)),
            },
            // A chunk the entry names but its volume cannot serve is the filer's failure, not
            // the client's: a 500 (never the volume's 404 for a file that exists), or a 503
            // with the volume's Retry-After when it may pass.
            Error::ChunkRead {
                transient,
                retry_after,
                ..
            } => {
                if transient {
                    ApiError::unavailable("chunk_unavailable", message, retry_after.unwrap_or(1))
                } else {
                    ApiError::internal(anyhow::anyhow!(message))
                }
            }
            // A shared store's lost race that re-reading did not resolve: nothing was written.
            Error::Conflict(_) => ApiError::unavailable("write_conflict", message, 1),
            // Not the client's fault and not transient: the store cannot do it atomically.
            Error::StoreLimit(_) => ApiError::conflict("too_large_for_store", message),
            Error::StoreUnavailable(_) => ApiError::unavailable("store_unavailable", message, 1),
            Error::Store(_) | Error::Internal(_) => ApiError::internal(anyhow::anyhow!(message)),
        }
    }
}
