//! Admin routes the master calls: `POST /admin/volume` (allocate), `DELETE /admin/volume`
//! (delete a whole volume, for `/col/delete`), `POST /admin/vacuum`.

use axum::extract::State;
use axum::http::StatusCode;
use common::api::master::AllocateQuery;
use common::api::volume::{DeleteVolumeQuery, VacuumQuery, VacuumResponse};
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

/// `DELETE /admin/volume?volumeId=`: deletes the volume and its files → 204; 404 when this
/// server does not hold it, 409 while it is being vacuumed.
pub async fn delete(
    State(s): State<AppState>,
    Query(q): Query<DeleteVolumeQuery>,
) -> Result<StatusCode, ApiError> {
    s.volume.delete_volume(q.volume_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/vacuum?garbageThreshold=<f>`: compacts, online, each local volume whose
/// garbage ratio exceeds the threshold; answers `{"compacted":[{"volume","before","after"}]}`.
pub async fn vacuum(
    State(s): State<AppState>,
    Query(q): Query<VacuumQuery>,
) -> Result<Json<VacuumResponse>, ApiError> {
    Ok(Json(s.volume.vacuum(q.garbage_threshold).await?))
}
