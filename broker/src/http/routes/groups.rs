//! `PUT|GET /groups/{group}/offsets`.

use axum::extract::State;
use common::api::broker::{CommitOffsetRequest, GroupOffsets, GroupOffsetsQuery};
use common::http::{ApiError, Json, Path, Query};

use crate::http::AppState;

/// Commits a group's offset of one partition, durably.
pub async fn commit(
    State(broker): State<AppState>,
    Path(group): Path<String>,
    Json(req): Json<CommitOffsetRequest>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let offsets = broker
        .commit_offset(&group, &req.topic, req.partition, req.offset, req.reset)
        .await?;
    Ok(Json(offsets))
}

/// A group's committed offsets of one topic.
pub async fn get(
    State(broker): State<AppState>,
    Path(group): Path<String>,
    Query(q): Query<GroupOffsetsQuery>,
) -> Result<Json<GroupOffsets>, ApiError> {
    Ok(Json(broker.group_offsets(&group, &q.topic).await?))
}
