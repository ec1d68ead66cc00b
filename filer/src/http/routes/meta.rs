//! The metadata API other services use: `/__meta/entry` and `/__meta/list`.

use axum::extract::State;
use axum::http::StatusCode;
use common::api::filer::{Entry, EntryQuery, ListQuery, ListResponse, PutEntryRequest};
use common::http::{ApiError, Json, Query};

use crate::http::AppState;
use crate::store::ListOpts;

/// Default page size of `/__meta/list`.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size.
pub const MAX_LIMIT: usize = 10_000;

/// `GET /__meta/entry?path=`: the entry, or 404.
pub async fn get_entry(
    State(st): State<AppState>,
    Query(q): Query<EntryQuery>,
) -> Result<Json<Entry>, ApiError> {
    Ok(Json(st.filer.get_entry(q.path).await?))
}

/// `PUT /__meta/entry`: create or replace an entry (parents created, chunks kept as given),
/// answered after the synced write with the stored entry.
pub async fn put_entry(
    State(st): State<AppState>,
    Json(req): Json<PutEntryRequest>,
) -> Result<Json<Entry>, ApiError> {
    Ok(Json(st.filer.put_entry(req).await?))
}

/// `DELETE /__meta/entry?path=&recursive=`: 204, 404 if missing, 409 if a non-empty
/// directory without `recursive`.
pub async fn delete_entry(
    State(st): State<AppState>,
    Query(q): Query<EntryQuery>,
) -> Result<StatusCode, ApiError> {
    st.filer.delete(q.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /__meta/list?dir=&start=&inclusive=&limit=&reverse=`. A directory that does not
/// exist lists as empty (as in SeaweedFS), a file is a 409.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    let opts = ListOpts {
        start: q.start,
        inclusive: q.inclusive,
        limit,
        reverse: q.reverse,
    };
    let page = st.filer.list(q.dir, opts, true).await?;
    Ok(Json(ListResponse {
        entries: page.entries,
        has_more: page.has_more,
    }))
}
