//! `/dir/*` routes: assign, lookup and the topology status.

use axum::extract::State;
use common::api::master::{AssignQuery, AssignResponse, DirStatus, LookupQuery, LookupResponse};
use common::http::{ApiError, Json, Query};
use common::ids::{FileId, VolumeId};

use crate::http::AppState;
use crate::service::Master;

/// `GET|POST /dir/assign`: reserves `count` keys on a writable volume.
pub async fn assign(
    State(s): State<AppState>,
    Query(q): Query<AssignQuery>,
) -> Result<Json<AssignResponse>, ApiError> {
    let count = q.count.unwrap_or(1);
    Master::check_count(count)?;
    let collection = Master::collection(q.collection)?;
    let replication = s.master.replication(q.replication.as_deref())?;
    Ok(Json(
        s.master.assign(&collection, replication, count).await?,
    ))
}

/// `GET /dir/lookup?volumeId=|fileId=`: the live servers holding a volume.
pub async fn lookup(
    State(s): State<AppState>,
    Query(q): Query<LookupQuery>,
) -> Result<Json<LookupResponse>, ApiError> {
    let (what, vid): (String, VolumeId) = match (&q.volume_id, &q.file_id) {
        (Some(v), _) => {
            // Accept `3` and, like SeaweedFS, a full fid passed as volumeId.
            let vid = v
                .split(',')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_volume_id",
                        format!("volumeId {v:?} is not a volume id"),
                    )
                })?;
            (v.clone(), vid)
        }
        (None, Some(f)) => {
            let fid: FileId = f.parse().map_err(|e: common::ids::FileIdError| {
                ApiError::bad_request("bad_fid", e.to_string())
            })?;
            (f.clone(), fid.volume_id)
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_volume_id",
                "give volumeId or fileId",
            ));
        }
    };
    let locations = s.master.lookup(vid)?;
    Ok(Json(LookupResponse {
        volume_or_file_id: what,
        locations,
    }))
}

/// `GET /dir/status`: the id counters and every known volume server with its volumes.
pub async fn status(State(s): State<AppState>) -> Json<DirStatus> {
    let (max_volume_id, next_file_key) = s.master.counters().await;
    Json(DirStatus {
        max_volume_id,
        next_file_key,
        nodes: s.master.nodes(),
    })
}
