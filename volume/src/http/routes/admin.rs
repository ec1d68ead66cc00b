//! Admin routes the master calls: `POST /admin/volume` (allocate).

use axum::extract::State;
use common::api::master::AllocateQuery;
use common::http::{ApiError, Json, Query};

use crate::http::AppState;
use crate::service::Allocated;

/// `POST /admin/volume?volumeId=&collection=&replication=`: the master grows a volume here.
pub async fn allocate(
    State(s): State<AppState>,
    Query(q): Query<AllocateQuery>,
) -> Result<Json<Allocated>, ApiError> {
    Ok(Json(s.volume.allocate(q).await?))
}
