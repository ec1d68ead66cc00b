//! `ApiError`: the one error type handlers return, rendered as
//! `{"error": "<what went wrong>", "code": "<snake_case>"}` with a fitting status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The JSON body of every error response, and what typed clients parse back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What went wrong, naming the object.
    pub error: String,
    /// A stable snake_case code callers can match on.
    pub code: String,
    /// Extra machine-readable detail (e.g. offset bounds of a 416).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// An error a handler returns; each variant has exactly one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// Human text naming the bad input.
        message: String,
    },
    /// 404: the object does not exist.
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// Human text naming the missing object.
        message: String,
    },
    /// 401 + `WWW-Authenticate: Bearer`: no credential, or one that is not valid (unknown,
    /// expired, badly signed).
    #[error("{message}")]
    Unauthorized {
        /// Stable code.
        code: &'static str,
        /// Human text naming what was missing or wrong (never the credential itself).
        message: String,
    },
    /// 403: a valid credential that does not allow this request (a read key writing, a
    /// token for another file id).
    #[error("{message}")]
    Forbidden {
        /// Stable code.
        code: &'static str,
        /// Human text naming what the credential lacks.
        message: String,
    },
    /// 405: the route exists but not with this method.
    #[error("{message}")]
    MethodNotAllowed {
        /// Human text.
        message: String,
    },
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Human text naming the conflict.
        message: String,
    },
    /// 412: a precondition did not hold.
    #[error("{message}")]
    PreconditionFailed {
        /// Stable code.
        code: &'static str,
        /// Human text.
        message: String,
    },
    /// 413: the body is over the limit.
    #[error("{message}")]
    PayloadTooLarge {
        /// Human text naming the limit.
        message: String,
    },
    /// 416: the requested range or offset lies outside the object.
    #[error("{message}")]
    RangeNotSatisfiable {
        /// Stable code.
        code: &'static str,
        /// Human text.
        message: String,
        /// The bounds, for clients.
        detail: serde_json::Value,
    },
    /// 503 + `Retry-After`: overloaded, not ready, or a dependency is down.
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: &'static str,
        /// Human text naming what is unavailable.
        message: String,
        /// Seconds the client should wait.
        retry_after_secs: u64,
    },
    /// 307 + `Location`: another instance serves this request (method and body kept), e.g.
    /// the broker that owns a partition.
    #[error("{message}")]
    Redirect {
        /// Stable code.
        code: &'static str,
        /// Human text naming who serves it.
        message: String,
        /// The URL to repeat the request at.
        location: String,
    },
    /// 507: the disk is full.
    #[error("{message}")]
    InsufficientStorage {
        /// Human text naming the volume or file.
        message: String,
    },
    /// An upstream service's error answer, passed through with its status, code and
    /// `Retry-After` (see `From<ClientError>`).
    #[error("{message}")]
    Upstream {
        /// The upstream status.
        status: StatusCode,
        /// The upstream stable code.
        code: String,
        /// The upstream text, prefixed with the URL called.
        message: String,
        /// The upstream `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// 500: anything unclassified. Never a 400.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 404 with the given code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    /// A 401 with the given code.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }

    /// A 403 with the given code.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// A 409 with the given code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// A 503 with `Retry-After`.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self::Unavailable {
            code,
            message: message.into(),
            retry_after_secs,
        }
    }

    /// A 500 carrying an opaque cause.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Redirect { .. } => StatusCode::TEMPORARY_REDIRECT,
            Self::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::Upstream { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &str {
        match self {
            Self::BadRequest { code, .. }
            | Self::NotFound { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::PreconditionFailed { code, .. }
            | Self::RangeNotSatisfiable { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Redirect { code, .. } => code,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::InsufficientStorage { .. } => "insufficient_storage",
            Self::Upstream { code, .. } => code,
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // ERROR is kept for what needs a human: an unclassified failure (500). A 503 or 507 is
        // the service working as designed under a fault (not ready, fenced, a disk full): WARN.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                status = status.as_u16(),
                code = self.code(),
                "request failed: {self:#}"
            );
        } else if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                code = self.code(),
                "request failed: {self:#}"
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                code = self.code(),
                "request rejected: {self}"
            );
        }
        let detail = match &self {
            Self::RangeNotSatisfiable { detail, .. } => Some(detail.clone()),
            _ => None,
        };
        let retry_after = match &self {
            Self::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        };
        let location = match &self {
            Self::Redirect { location, .. } => HeaderValue::from_str(location).ok(),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code().to_owned(),
            detail,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<std::io::Error> for ApiError {
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::StorageFull {
            Self::InsufficientStorage {
                message: format!("disk full: {err}"),
            }
        } else {
            Self::Internal(err.into())
        }
    }
}

/// An upstream call's failure as this service's answer: an upstream error status passes through
/// with its code and `Retry-After` (a 503 keeps meaning "try again"); an unreachable upstream is
/// a 503 `upstream_unavailable`; an answer that breaks the contract is a 500.
impl From<crate::client::ClientError> for ApiError {
    fn from(err: crate::client::ClientError) -> Self {
        use crate::client::ClientError;
        let message = err.to_string();
        match err {
            ClientError::Api {
                status,
                code,
                retry_after,
                ..
            } => Self::Upstream {
                status,
                code,
                message,
                retry_after: retry_after
                    .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1)),
            },
            ClientError::Transport { .. } => Self::unavailable("upstream_unavailable", message, 1),
            ClientError::Decode { .. } => Self::internal(anyhow::anyhow!(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn test_upstream_error_passes_status_code_and_retry_after_through() {
        let upstream = crate::client::ClientError::Api {
            url: "http://v/3,01".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "volume_read_only".into(),
            message: "read-only".into(),
            retry_after: Some(7),
        };
        let resp = ApiError::from(upstream).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "volume_read_only");
        assert!(body.error.contains("http://v/3,01"), "{}", body.error);

        let gone = crate::client::ClientError::Api {
            url: "http://v/3,01".into(),
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            message: "no such needle".into(),
            retry_after: None,
        };
        let resp = ApiError::from(gone).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn test_api_error_renders_json_and_retry_after() {
        let resp =
            ApiError::unavailable("no_writable_volume", "no writable volume", 2).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "no_writable_volume");
        assert_eq!(body.error, "no writable volume");
    }

    #[test]
    fn test_api_error_unclassified_is_500() {
        let err = ApiError::internal(anyhow::anyhow!("boom"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let io = std::io::Error::other("eio");
        assert_eq!(
            ApiError::from(io).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
