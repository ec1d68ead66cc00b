//! Blob handlers: write, read (Range, ETag), delete. The domain work (replication fan-out
//! included) is in [`crate::service`]; these extract, validate and map.
//!
//! Each checks its credentials first, before the body is read or the store touched (see
//! `common::security`): a write or delete needs a fid token for its fid (or its batch's base,
//! as SeaweedFS accepts) when the cluster signs them, a read one when it signs read tokens, and
//! a replica's copy (`?type=replicate`) the cluster token as well.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::api::volume::{DeleteResponse, UploadResponse};
use common::http::multipart::{file_field, multipart_error};
use common::http::range::{RangeRequest, parse_range};
use common::http::{ApiError, Json, Query};
use common::ids::FileId;
use serde::Deserialize;

use crate::http::fid::Fid;
use crate::http::{AppState, content};
use crate::service::{Error, Upload, WriteOptions};
use crate::store::needle::Needle;

/// Query parameters of writes and deletes.
#[derive(Debug, Default, Deserialize)]
pub struct WriteParams {
    /// `false` skips the fsync for this write (throwaway data).
    fsync: Option<bool>,
    /// `replicate` marks a copy forwarded by the primary.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// File name to keep with the needle.
    name: Option<String>,
    /// The primary's last-modified time (seconds), kept by a replica copy so both copies
    /// have the same checksum (ETag).
    #[serde(rename = "lastModified")]
    last_modified: Option<u64>,
    /// SeaweedFS's chunk-manifest flag: refused when true (see `refuse_chunk_manifest`).
    cm: Option<String>,
}

/// Refuses SeaweedFS's `?cm=true`. SeaweedFS marks such an upload as a chunk manifest (JSON
/// naming other fids) and serves a read of it by concatenating those chunks; Kelp does not,
/// and storing the manifest as an opaque blob would hand a later reader the JSON instead of
/// the file. So the upload is refused, loudly. The value is read as Go's `ParseBool` reads
/// it; anything else (`false`, a typo) is ignored, as SeaweedFS ignores it.
fn refuse_chunk_manifest(cm: Option<&str>) -> Result<(), ApiError> {
    match cm {
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Err(ApiError::bad_request(
            "chunk_manifest_unsupported",
            "cm=true (a SeaweedFS chunk manifest) is not supported: Kelp would store the manifest as an opaque blob and never serve the chunks it lists; upload the file whole",
        )),
        _ => Ok(()),
    }
}

/// Checks a write's or delete's credentials: the cluster token for a replica's copy, and the
/// fid token.
fn authorize_write(
    s: &AppState,
    headers: &HeaderMap,
    fid: &Fid,
    replicate: bool,
) -> Result<(), ApiError> {
    let sec = s.volume.security();
    if replicate {
        sec.check_cluster(headers)?;
    }
    check_token(fid, |f| sec.check_write_token(headers, f))
}

/// Passes when `check` accepts the token for one of the fids it may name (see
/// [`Fid::token_fids`]); else the refusal for the fid itself.
fn check_token(fid: &Fid, check: impl Fn(&FileId) -> Result<(), ApiError>) -> Result<(), ApiError> {
    let mut refusal = None;
    for f in fid.token_fids() {
        match check(f) {
            Ok(()) => return Ok(()),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    Err(refusal.expect("token_fids names the fid itself"))
}

async fn read_body(
    req: Request,
    limit: usize,
) -> Result<(Bytes, Option<String>, Option<String>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request("bad_multipart", e.body_text()))?;
        return file_field(&mut mp, async |field| {
            let name = field.file_name().map(str::to_owned);
            let mime = field.content_type().map(str::to_owned);
            let data = field.bytes().await.map_err(multipart_error)?;
            if data.len() > limit {
                return Err(too_large(limit));
            }
            Ok((data, name, mime))
        })
        .await;
    }
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|m| *m != "application/octet-stream")
        .map(str::to_owned);
    let data = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large(limit))?;
    Ok((data, None, mime))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge {
        message: format!("blob is larger than the limit of {limit} bytes"),
    }
}

/// `POST|PUT /{fid}`: stores a blob, durably (and on every replica) before answering 201.
pub async fn put_blob(
    State(s): State<AppState>,
    path_fid: Fid,
    Query(q): Query<WriteParams>,
    req: Request,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let replicate = q.kind.as_deref() == Some("replicate");
    authorize_write(&s, req.headers(), &path_fid, replicate)?;
    let fid = path_fid.0;
    refuse_chunk_manifest(q.cm.as_deref())?;
    // An unknown volume is refused before the body is read.
    s.volume
        .store()
        .get(fid.volume_id)
        .map_err(|e| Error::Blob { fid, source: e })?;
    let (data, part_name, mime) = read_body(req, s.volume.max_blob()).await?;
    let upload = Upload {
        data,
        name: q.name.or(part_name),
        mime,
    };
    let opts = WriteOptions {
        fsync: q.fsync,
        replicate,
        last_modified: q.last_modified,
    };
    let written = s.volume.write(fid, upload, opts).await?;
    Ok((StatusCode::CREATED, Json(written)))
}

/// `GET|HEAD /{fid}`: serves a blob after verifying its checksum; supports `Range` and
/// `If-None-Match`. `Content-Type`, `Content-Disposition` (`?dl=true`: `attachment`) and
/// `Last-Modified` (with `If-Modified-Since`) as SeaweedFS answers them (see [`content`]).
///
/// A satisfiable `Range` of a big blob is read by streaming the needle through its checksum,
/// keeping only the range in memory (see `VolumeServer::read_range`): a one-byte range of a
/// 256 MiB blob does not hold 256 MiB.
pub async fn get_blob(
    State(s): State<AppState>,
    path_fid: Fid,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sec = s.volume.security();
    check_token(&path_fid, |f| sec.check_read_token(&headers, f))?;
    let fid = path_fid.0;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(r) = range.clone() {
        let pick = move |total| match parse_range(Some(&r), total) {
            RangeRequest::Bytes { start, end } => Some((start, end)),
            _ => None,
        };
        if let Some(part) = s.volume.read_range(fid, pick).await? {
            let (mut resp_headers, not_modified) =
                blob_headers(&part.needle, part.checksum, &part.head, &uri, &headers);
            if not_modified {
                return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response());
            }
            let end = part.start + part.needle.data.len() as u64 - 1;
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{end}/{}", part.start, part.total))
                    .expect("ascii"),
            );
            return Ok(finish(
                StatusCode::PARTIAL_CONTENT,
                resp_headers,
                part.needle.data,
                &method,
            ));
        }
    }
    let read = s.volume.read(fid).await?;
    let n = read.needle;
    let (mut resp_headers, not_modified) = blob_headers(&n, read.checksum, &n.data, &uri, &headers);
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response());
    }
    let total = n.data.len() as u64;
    let range = range.as_deref();
    let (status, body) = match parse_range(range, total) {
        RangeRequest::Full => (StatusCode::OK, n.data),
        RangeRequest::Unsatisfiable => {
            // The body is the JSON error, not the blob: keep the error's Content-Type.
            resp_headers.remove(header::CONTENT_TYPE);
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).expect("ascii"),
            );
            let err = ApiError::RangeNotSatisfiable {
                code: "range_not_satisfiable",
                message: format!(
                    "range {} is outside file {fid} of {total} bytes",
                    range.unwrap_or_default()
                ),
                detail: serde_json::json!({ "size": total }),
            };
            return Ok((resp_headers, err).into_response());
        }
        RangeRequest::Bytes { start, end } => {
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).expect("ascii"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                n.data.slice(start as usize..=end as usize),
            )
        }
    };
    Ok(finish(status, resp_headers, body, &method))
}

/// The headers of a blob answer (ETag, ranges, type from `sniff`, disposition, last-modified)
/// and whether the request's conditions make it a 304.
fn blob_headers(
    n: &Needle,
    checksum: u32,
    sniff: &[u8],
    uri: &Uri,
    headers: &HeaderMap,
) -> (HeaderMap, bool) {
    let etag = format!("\"{checksum:08x}\"");
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // As SeaweedFS: the stored type, else the name's extension's, else sniffed (see content).
    let mime = content::content_type(n.mime.as_deref(), n.name.as_deref(), sniff);
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(name) = n.name.as_deref().filter(|n| !n.is_empty())
        && let Ok(v) = HeaderValue::from_str(&content::content_disposition(
            name,
            content::wants_download(uri.query()),
        ))
    {
        resp_headers.insert(header::CONTENT_DISPOSITION, v);
    }
    let last_modified = n.last_modified.filter(|t| *t != 0);
    if let Some(date) = last_modified.and_then(content::http_date) {
        resp_headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&date).expect("an HTTP date is a valid header"),
        );
    }
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return (resp_headers, true);
    }
    // If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3).
    let not_modified_since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(content::parse_http_date)
        .zip(last_modified)
        .is_some_and(|(since, lm)| since >= lm as i64);
    (resp_headers, if_none_match.is_none() && not_modified_since)
}

/// The answer with `body` (its length in `Content-Length`; no body for `HEAD`).
fn finish(
    status: StatusCode,
    mut resp_headers: HeaderMap,
    body: Bytes,
    method: &Method,
) -> Response {
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if *method == Method::HEAD {
        return (status, resp_headers).into_response();
    }
    (status, resp_headers, Body::from(body)).into_response()
}

/// `DELETE /{fid}`: appends a tombstone (cookie checked) here and on every replica (see
/// [`VolumeServer::delete`](crate::service::VolumeServer::delete)): 202 if any copy held the
/// needle, 404 if none did, 503 if a replica could not be reached (retry it).
pub async fn delete_blob(
    State(s): State<AppState>,
    path_fid: Fid,
    headers: HeaderMap,
    Query(q): Query<WriteParams>,
) -> Result<(StatusCode, Json<DeleteResponse>), ApiError> {
    let replicate = q.kind.as_deref() == Some("replicate");
    authorize_write(&s, &headers, &path_fid, replicate)?;
    let fid = path_fid.0;
    let size = s.volume.delete(fid, q.fsync, replicate).await?;
    Ok((StatusCode::ACCEPTED, Json(DeleteResponse { size })))
}
