//! Extractors whose rejections are Confluent error bodies: [`SrBody`] (a JSON body in one of
//! the registry's content types), [`Path`] and [`Params`] (the query string).
//!
//! Accepted request content types, as Confluent's registry accepts them:
//! `application/vnd.schemaregistry.v1+json`, `application/vnd.schemaregistry+json`,
//! `application/json` and `application/octet-stream` (parameters such as `charset` allowed); a
//! request without one is read as JSON. Anything else is a 415.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::SrError;

/// Content types a body may have.
pub const ACCEPTED: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// A JSON body.
#[derive(Debug, Clone)]
pub struct SrBody<T>(pub T);

impl<T, S> FromRequest<S> for SrBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = SrError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !ACCEPTED.contains(&essence.as_str()) {
                return Err(SrError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    415,
                    format!(
                        "HTTP 415 Unsupported Media Type: {:?}; send one of {}",
                        ct.chars().take(100).collect::<String>(),
                        ACCEPTED.join(", ")
                    ),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                SrError::new(status, 413, "HTTP 413 Request Entity Too Large")
            } else {
                SrError::bad_json(rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(SrError::unprocessable("the request body is empty"));
        }
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            if e.is_data() {
                SrError::unprocessable(format!("Unprocessable entity: {e}"))
            } else {
                SrError::bad_json(format!("Malformed JSON: {e}"))
            }
        })
    }
}

/// Path parameters; a rejection is a 404 (`error_code` 404), as an unmatched route would be.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = SrError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rejection) => Err(SrError::new(
                StatusCode::NOT_FOUND,
                404,
                rejection.body_text(),
            )),
        }
    }
}

/// The query string as a map; a malformed one is a 400.
#[derive(Debug, Clone, Default)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// A boolean parameter: `true` (any case) is true, anything else false.
    pub fn flag(&self, name: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// A text parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = SrError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Query(m)) => Ok(Self(m)),
            Err(rejection) => Err(SrError::new(
                StatusCode::BAD_REQUEST,
                400,
                rejection.body_text(),
            )),
        }
    }
}
