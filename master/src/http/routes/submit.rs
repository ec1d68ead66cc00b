//! `POST /submit`: SeaweedFS's one-call upload — a multipart file is assigned a file id and
//! written to its volume server → 201 `{fid, fileName, fileUrl, size, eTag}`.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::api::master::AssignParams;
use common::http::multipart::{file_field, multipart_error};
use common::http::{ApiError, Query};

use crate::http::routes::dir::assign_request;
use crate::http::{AppState, answer, pretty};

/// `POST /submit?collection=&replication=…` with a `multipart/form-data` body: the part named
/// `file` (any case), else the first part with a file name, is stored as one needle.
pub async fn submit(
    State(s): State<AppState>,
    Query(q): Query<AssignParams>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut mp = mp.map_err(|e| {
        ApiError::bad_request(
            "bad_multipart",
            format!("submit needs a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let pretty = pretty(q.pretty.as_deref());
    let req = assign_request(&s, q)?;
    let (name, data) = file_part(&mut mp).await?;
    let written = s.master.submit(&req, &name, data).await?;
    Ok((StatusCode::CREATED, answer(&written, pretty)).into_response())
}

/// The upload's file part (common's rule): its file name ("" when none) and bytes.
async fn file_part(mp: &mut Multipart) -> Result<(String, bytes::Bytes), ApiError> {
    file_field(mp, async |field| {
        let name = field.file_name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(multipart_error)?;
        Ok((name, data))
    })
    .await
}
