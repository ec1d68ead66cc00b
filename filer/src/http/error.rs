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
            Error::Upload { source, .. } => {
                if source.is_transient() {
                    let retry = match source.as_ref() {
                        common::client::ClientError::Api { retry_after, .. } => {
                            retry_after.unwrap_or(1)
                        }
                        _ => 1,
                    };
                    ApiError::unavailable("volume_unavailable", message, retry)
                } else {
                    ApiError::internal(anyhow::anyhow!(message))
                }
            }
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
            Error::Store(_) | Error::Internal(_) => ApiError::internal(anyhow::anyhow!(message)),
        }
    }
}
