//! One module per resource: `/schemas`, `/subjects`, `/compatibility`, `/config` and `/mode`,
//! and the operational routes.

pub mod compatibility;
pub mod config;
pub mod ops;
pub mod schemas;
pub mod subjects;

use std::future::Future;

use axum::http::StatusCode;

use super::error::SrError;
use crate::service::Result;

/// Runs a mutation in its own task, so a client that disconnects cannot cancel it half-way.
pub async fn spawned<T, F>(fut: F) -> Result<T, SrError>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r.map_err(SrError::from),
        Err(e) => Err(SrError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("the operation failed: {e}"),
        )),
    }
}
