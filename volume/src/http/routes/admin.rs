//! Admin routes the master calls: `POST /admin/volume` (allocate), `POST /admin/vacuum`.

use axum::extract::State;
use common::api::master::AllocateQuery;
use common::api::volume::{VacuumQuery, VacuumResponse};
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

/// `POST /admin/vacuum?garbageThreshold=<f>`: compacts, online, each local volume whose
/// garbage ratio exceeds the threshold; answers `{"compacted":[{"volume","before","after"}]}`.
pub async fn vacuum(
    State(s): State<AppState>,
    Query(q): Query<VacuumQuery>,
) -> Result<Json<VacuumResponse>, ApiError> {
    Ok(Json(s.volume.vacuum(q.garbage_threshold).await?))
}
