//! Confluent's error body `{"error_code": N, "message": "..."}` and the mapping of
//! [`service::Error`](crate::service::Error) to statuses and codes.
//!
//! The HTTP status is the code's first three digits (40401 → 404, 42201 → 422, 50001 → 500),
//! as Confluent's registry does; a store that cannot be reached and an index still being
//! rebuilt are 503 with `Retry-After`, so clients and load balancers retry.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::service::Error;
use crate::store::StoreError;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Confluent's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Confluent's error code (e.g. 40401).
    pub error_code: u32,
    /// What went wrong.
    pub message: String,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrError {
    /// HTTP status.
    pub status: StatusCode,
    /// Confluent's code.
    pub error_code: u32,
    /// Text.
    pub message: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
}

impl SrError {
    /// An error with `status` and `error_code`.
    pub fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 400 (`error_code` 400): the body is not JSON.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400, message)
    }

    /// A 422 (`error_code` 422): the JSON does not have the expected shape.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 422, message)
    }
}

impl From<Error> for SrError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Error::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            Error::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Error::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Error::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Error::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            Error::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            Error::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Error::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Error::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Error::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Error::InvalidMode(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            Error::NotPermitted(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
            Error::ReferenceExists { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42206),
            Error::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            Error::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Error::NotWriter => {
                return Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, 50004, message)
                };
            }
            Error::NotReady => {
                return Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, 50301, message)
                };
            }
            Error::Store(StoreError::Unavailable(_) | StoreError::Moved(_)) => {
                return Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, 50001, message)
                };
            }
            Error::Store(StoreError::Failed(_)) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            Error::Timeout(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50002),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for SrError {
    fn into_response(self) -> Response {
        // As `common::http::ApiError`: only a 500 (a bug or an unclassified failure) needs a
        // human; a 503 (not ready, the writer or the log unreachable) is transient, retried by
        // clients, and noted at WARN.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                status = self.status.as_u16(),
                error_code = self.error_code,
                "request failed: {}",
                self.message
            );
        } else if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                error_code = self.error_code,
                "request failed: {}",
                self.message
            );
        } else {
            tracing::info!(
                status = self.status.as_u16(),
                error_code = self.error_code,
                "request rejected: {}",
                self.message
            );
        }
        let body = ErrorBody {
            error_code: self.error_code,
            message: self.message,
        };
        let mut resp = (self.status, super::SrJson(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_codes_follow_confluent() {
        let cases = [
            (Error::SubjectNotFound("s".into()), 404, 40401),
            (Error::SchemaNotFound("1".into()), 404, 40403),
            (Error::InvalidSchema("x".into()), 422, 42201),
            (Error::InvalidVersion("x".into()), 422, 42202),
            (
                Error::Incompatible {
                    subject: "s".into(),
                    reasons: vec![],
                },
                409,
                409,
            ),
            (Error::Store(StoreError::Failed("x".into())), 500, 50001),
            (Error::NotReady, 503, 50301),
        ];
        for (e, status, code) in cases {
            let r = SrError::from(e);
            assert_eq!((r.status.as_u16(), r.error_code), (status, code));
        }
    }
}
