//! `/dir/*` routes: assign, lookup and the topology status, accepting SeaweedFS's parameters.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use common::api::master::{
    AssignParams, DirStatus, LookupParams, LookupResponse, Replication, VolumeParams,
};
use common::http::{ApiError, Query};
use common::ids::{FileId, VolumeId};
use common::security::Scope;

use crate::http::{AppState, answer, pretty};
use crate::service::{AssignRequest, MAX_GROW, Master, Placement, VERSION};

/// Builds the service's assign request from `/dir/assign`'s (or `/submit`'s) parameters.
pub fn assign_request(s: &AppState, q: AssignParams) -> Result<AssignRequest, ApiError> {
    // SeaweedFS reads count=0 (and no count) as 1.
    let count = q.count.filter(|c| *c > 0).unwrap_or(1);
    Master::check_count(count)?;
    let grow = q.writable_volume_count.filter(|c| *c > 0).unwrap_or(1);
    if grow > MAX_GROW {
        return Err(ApiError::bad_request(
            "bad_writable_volume_count",
            format!("writableVolumeCount must be 1..={MAX_GROW}, got {grow}"),
        ));
    }
    let (collection, replication, placement) = volume_spec(s, q)?;
    Ok(AssignRequest {
        collection,
        replication,
        count,
        placement,
        grow,
    })
}

/// The collection, replication and placement of `/dir/assign`'s, `/submit`'s or `/vol/grow`'s
/// parameters, checked.
pub fn volume_spec(
    s: &AppState,
    q: VolumeParams,
) -> Result<(String, Replication, Placement), ApiError> {
    let collection = Master::collection(q.collection)?;
    let replication = s.master.replication(q.replication.as_deref())?;
    let placement = Placement::new(
        q.ttl.as_deref(),
        q.data_center.as_deref(),
        q.rack.as_deref(),
        q.data_node.as_deref(),
        q.disk_type.as_deref(),
    )?;
    Ok((collection, replication, placement))
}

/// `GET|POST /dir/assign`: reserves `count` keys on a writable volume.
pub async fn assign(
    State(s): State<AppState>,
    Query(q): Query<AssignParams>,
) -> Result<Response, ApiError> {
    let pretty = pretty(q.pretty.as_deref());
    let req = assign_request(&s, q)?;
    Ok(answer(&s.master.assign(&req).await?, pretty))
}

/// `GET /dir/lookup?volumeId=|fileId=`: the live servers holding a volume. For a `fileId`
/// (without `volumeId`), when the cluster signs fid tokens: `jwt`, the token a read of it
/// needs (with a read key), and `auth`, the token a delete needs, for a caller allowed to
/// write (a `write` API key or the cluster token, or anyone without API keys).
pub async fn lookup(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LookupParams>,
) -> Result<Response, ApiError> {
    let mut file_id = None;
    let vid: VolumeId = match (&q.volume_id, &q.file_id) {
        // Accept `3` and, like SeaweedFS, a full fid passed as volumeId.
        (Some(v), _) => v
            .split(',')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_volume_id",
                    format!("volumeId {v:?} is not a volume id"),
                )
            })?,
        (None, Some(f)) => {
            let fid: FileId = f.parse().map_err(|e: common::ids::FileIdError| {
                ApiError::bad_request("bad_fid", e.to_string())
            })?;
            file_id = Some(fid);
            fid.volume_id
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_volume_id",
                "give volumeId or fileId",
            ));
        }
    };
    let locations = s.master.lookup(vid, q.collection.as_deref())?;
    // As SeaweedFS: the volume id, also when a file id was given.
    let sec = s.master.security();
    let body = LookupResponse {
        volume_or_file_id: vid.to_string(),
        locations,
        jwt: file_id.as_ref().and_then(|f| sec.read_token(f)),
        auth: file_id
            .as_ref()
            .filter(|_| sec.check_client(&headers, Scope::Write).is_ok())
            .and_then(|f| sec.write_token(f)),
    };
    Ok(answer(&body, pretty(q.pretty.as_deref())))
}

/// Query of `/dir/status` and `/vol/status`. Other parameters are ignored, as SeaweedFS does:
/// a status page changes nothing, so a parameter it does not know cannot be misread.
#[derive(Debug, serde::Deserialize)]
pub struct StatusParams {
    /// Pretty-print the answer when non-empty.
    pub pretty: Option<String>,
}

/// `GET /dir/status`: Kelp's id counters and servers, and SeaweedFS's `Topology` and `Version`.
pub async fn status(State(s): State<AppState>, Query(q): Query<StatusParams>) -> Response {
    let (max_volume_id, next_file_key) = s.master.counters().await;
    let body = DirStatus {
        max_volume_id,
        next_file_key,
        nodes: s.master.nodes(),
        topology: s.master.seaweed_topology(),
        version: VERSION.to_owned(),
    };
    answer(&body, pretty(q.pretty.as_deref()))
}
