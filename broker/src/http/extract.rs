//! A `Path` extractor whose rejection is a 400 `ApiError`, like the shared `Json` and `Query`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use common::http::ApiError;
use serde::de::DeserializeOwned;

/// Path parameters; a rejection is a 400 `bad_path` naming the problem.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rejection) => Err(ApiError::bad_request("bad_path", rejection.body_text())),
        }
    }
}
