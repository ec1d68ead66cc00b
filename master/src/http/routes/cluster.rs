//! Cluster routes: `POST /heartbeat` (volume servers report) and `GET /cluster/status`.

use axum::extract::State;
use common::api::master::{ClusterStatus, Heartbeat, HeartbeatResponse};
use common::http::{ApiError, Json};

use crate::http::AppState;

/// `POST /heartbeat`: records a volume server's report.
pub async fn heartbeat(
    State(s): State<AppState>,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    s.master.heartbeat(&beat).await?;
    Ok(Json(HeartbeatResponse {
        volume_size_limit: s.master.size_limit(),
    }))
}

/// `GET /cluster/status`: whether this master leads, the leader's address ("" while none is
/// elected) and the volume servers this master knows.
pub async fn status(State(s): State<AppState>) -> Json<ClusterStatus> {
    let (alive_nodes, known_nodes) = s.master.node_counts();
    let leadership = s.master.leadership();
    Json(ClusterStatus {
        is_leader: leadership.leads(),
        leader: leadership.leader().unwrap_or_default(),
        alive_nodes,
        known_nodes,
    })
}
