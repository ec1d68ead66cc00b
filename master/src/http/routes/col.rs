//! `/col/*` routes in SeaweedFS's shape: delete a collection with all its volumes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use common::api::master::ColDeleteParams;
use common::http::{ApiError, Query};

use crate::http::AppState;
use crate::service::Master;

/// `GET|POST /col/delete?collection=NAME`: deletes every volume of the collection on every
/// live server holding it, then forgets them → 204, as SeaweedFS. 400 for an empty or unknown
/// collection (SeaweedFS answers an unknown one 400 too), 503 when some copies could not be
/// deleted (retry). Runs in its own task, so a client that hangs up does not leave it half done.
pub async fn delete(
    State(s): State<AppState>,
    Query(q): Query<ColDeleteParams>,
) -> Result<StatusCode, ApiError> {
    let collection = Master::collection(q.collection)?;
    let master = Arc::clone(&s.master);
    tokio::spawn(async move { master.delete_collection(&collection).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(StatusCode::NO_CONTENT)
}
