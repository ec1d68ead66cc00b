//! `/vol/*` routes in SeaweedFS's shape: grow volumes and list each server's volumes.

use axum::extract::State;
use axum::response::Response;
use common::api::master::{GrowParams, GrowResponse, VacuumParams};
use common::http::{ApiError, Query};

use crate::http::routes::dir::{StatusParams, volume_spec};
use crate::http::{AppState, answer, pretty};

/// `GET|POST /vol/grow?count=&collection=&replication=`: grows `count` volumes (each with
/// all its copies) → `{"count": N}`.
pub async fn grow(
    State(s): State<AppState>,
    Query(q): Query<GrowParams>,
) -> Result<Response, ApiError> {
    let Some(count) = q.count else {
        return Err(ApiError::bad_request(
            "missing_count",
            "give count, the number of volumes to grow",
        ));
    };
    let pretty = pretty(q.pretty.as_deref());
    let (collection, replication, placement) = volume_spec(&s, q)?;
    let count = s
        .master
        .grow_volumes(&collection, replication, &placement, count)
        .await?;
    Ok(answer(&GrowResponse { count }, pretty))
}

/// `GET /vol/status`: the volumes of each live server, as SeaweedFS lists them.
pub async fn status(State(s): State<AppState>, Query(q): Query<StatusParams>) -> Response {
    answer(&s.master.vol_status(), pretty(q.pretty.as_deref()))
}

/// `GET|POST /vol/vacuum?garbageThreshold=`: every live volume server compacts its volumes
/// whose garbage ratio exceeds the threshold; answers what was compacted and which servers
/// failed (200 either way, as SeaweedFS; the failures are listed).
pub async fn vacuum(
    State(s): State<AppState>,
    Query(q): Query<VacuumParams>,
) -> Result<Response, ApiError> {
    let threshold = q.garbage_threshold.unwrap_or(s.garbage_threshold);
    let answer_body = s.master.vacuum(threshold).await?;
    Ok(answer(&answer_body, pretty(q.pretty.as_deref())))
}
