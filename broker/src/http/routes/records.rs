//! `GET /topics/{ns}/{topic}/partitions/{partition}/records?offset=&limit=&max_bytes=&wait_ms=&isolation=`.

use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use common::api::broker::FetchQuery;
use common::http::{ApiError, Path, Query};

use crate::http::{AppState, to_owner};
use crate::store::TopicKey;

/// Fetches records from an exact offset.
pub async fn fetch(
    State(broker): State<AppState>,
    Path((ns, topic, partition)): Path<(String, String, String)>,
    Query(q): Query<FetchQuery>,
    uri: Uri,
) -> Result<impl IntoResponse, ApiError> {
    let partition = partition.parse::<u32>().map_err(|_| {
        ApiError::bad_request(
            "bad_partition",
            format!("partition {partition:?} is not a non-negative number"),
        )
    })?;
    let body = broker
        .fetch(&TopicKey::new(ns, topic), partition, q)
        .await
        .map_err(|e| to_owner(e, &uri, q.redirected))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}
