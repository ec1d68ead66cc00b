//! The file API on `/{*path}`: upload, download (Range), directory listing, delete, rename —
//! SeaweedFS's filer routes, answering in SeaweedFS's JSON shapes ([`crate::http::seaweed`]).

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::api::filer::Entry;
use common::http::{ApiError, Json, Query};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use common::http::multipart::file_field;
use common::http::range::{RangeRequest, parse_range};

use crate::chunks;
use crate::http::{AppState, seaweed};
use crate::path;
use crate::service::Error;
use crate::store::ListOpts;

/// Default page size of a directory listing (as `weed filer`'s).
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size of a directory listing.
pub const MAX_LIMIT: usize = 10_000;

/// Query parameters of the file API (unknown ones are ignored, as SeaweedFS clients send
/// extras).
#[derive(Debug, Default, Deserialize)]
pub struct FileQuery {
    /// Rename: the source path.
    #[serde(rename = "mv.from")]
    pub mv_from: Option<String>,
    /// Delete: remove a non-empty directory with everything below it.
    pub recursive: Option<bool>,
    /// Listing: page size.
    pub limit: Option<usize>,
    /// Listing: continue after this name.
    #[serde(rename = "lastFileName")]
    pub last_file_name: Option<String>,
    /// `GET` of a file or directory: its entry (SeaweedFS's shape) instead of its content.
    pub metadata: Option<bool>,
    /// JSON answers indented (any value, as in SeaweedFS).
    pub pretty: Option<String>,
}

/// `value` as JSON, indented when `pretty` was asked for.
fn json<T: Serialize>(status: StatusCode, value: &T, pretty: bool) -> Result<Response, ApiError> {
    let body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|e| ApiError::internal(anyhow::anyhow!("encode json: {e}")))?;
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| ApiError::internal(anyhow::anyhow!("build response: {e}")))
}

fn request_path(uri: &Uri) -> Result<(String, bool), ApiError> {
    path::decode_uri_path(uri.path()).map_err(|m| ApiError::bad_request("bad_path", m))
}

/// `GET|HEAD /path`: a file's content (with Range), or a directory's listing as JSON; with
/// `?metadata=true`, the entry itself.
pub async fn get(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let (p, want_dir) = request_path(&uri)?;
    let entry = st
        .filer
        .lookup(p.clone())
        .await?
        .ok_or_else(|| Error::NotFound { path: p.clone() })?;
    let pretty = q.pretty.is_some();
    // A file addressed as a directory (`/file/`) stays a 409, as for its content.
    if q.metadata == Some(true) && (entry.is_dir || !want_dir) {
        return json(StatusCode::OK, &seaweed::entry(&entry), pretty);
    }
    if entry.is_dir {
        return list_dir(&st, entry, &q).await;
    }
    if want_dir {
        return Err(Error::NotADirectory { path: p }.into());
    }
    serve_file(&st, entry, method == Method::HEAD, &headers).await
}

async fn list_dir(st: &AppState, dir: Entry, q: &FileQuery) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let after = q.last_file_name.clone().filter(|s| !s.is_empty());
    let opts = ListOpts {
        start: after.clone(),
        inclusive: false,
        limit,
        reverse: false,
    };
    let page = st.filer.list(dir.full_path.clone(), opts, false).await?;
    let listing = seaweed::listing(&dir.full_path, &page, limit, after.as_deref());
    json(StatusCode::OK, &listing, q.pretty.is_some())
}

async fn serve_file(
    st: &AppState,
    entry: Entry,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = entry.size;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        // Inclusive `end` there, exclusive here.
        RangeRequest::Bytes { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeRequest::Unsatisfiable => {
            let mut resp = ApiError::RangeNotSatisfiable {
                code: "range_not_satisfiable",
                message: format!("range outside {} of {size} bytes", entry.full_path),
                detail: serde_json::json!({ "size": size }),
            }
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let mime = if is_media_type(&entry.mime) {
        entry.mime.as_str()
    } else {
        "application/octet-stream"
    };
    // HTTP dates stop at year 9999; a later mtime (possible through the meta API) is clamped.
    let mtime_ms = entry.mtime_ms.min(MAX_HTTP_DATE_MS);
    let builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, chunks::file_etag(&entry.chunks))
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(mtime_ms)),
        )
        .header(header::CONTENT_TYPE, mime);
    let mut builder = builder;
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    let body = if head || start == end {
        Body::empty()
    } else {
        let p = entry.full_path.clone();
        let stream = st.filer.read_stream(entry, start, end).await?;
        // Once the status line is sent, a chunk that cannot be read can only abort the body
        // (the client sees a short read against Content-Length, never silently short content).
        Body::from_stream(stream.map_err(move |e| {
            tracing::error!(path = %p, "failed to stream file: {e}");
            std::io::Error::other(e.to_string())
        }))
    };
    builder
        .body(body)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("build response: {e}")))
}

/// `POST|PUT /path`: upload (raw body, or the multipart file part, see
/// `common::http::multipart`) → 201
/// `{"name","size"}`; with `?mv.from=/src`, rename `/src` to `/path` → 200 with the entry.
pub async fn post(
    State(st): State<AppState>,
    uri: Uri,
    Query(q): Query<FileQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let (p, trailing) = request_path(&uri)?;
    if let Some(src) = q.mv_from {
        let moved = st.filer.rename(src, p).await?;
        return Ok(Json(moved).into_response());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request("bad_multipart", e.body_text()))?;
        let pretty = q.pretty.is_some();
        return file_field(&mut multipart, async |field| {
            let target = if trailing {
                let name = field.file_name().filter(|n| !n.is_empty()).ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_path",
                        format!("{p}/ is a directory path and the part has no file name"),
                    )
                })?;
                path::join(&p, name)
            } else {
                p.clone()
            };
            let mime = field.content_type().unwrap_or("").to_owned();
            let limit = st.filer.max_upload();
            let body = field.map_err(move |e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::TooLarge { limit }
                } else {
                    Error::BadBody(e.body_text())
                }
            });
            let resp = st.filer.upload(target, mime, body).await?;
            json(StatusCode::CREATED, &resp, pretty)
        })
        .await;
    }
    if trailing {
        return Err(ApiError::bad_request(
            "bad_path",
            format!("cannot write a file at the directory path {p}/"),
        ));
    }
    let mime = if content_type.is_empty()
        || content_type.starts_with("application/x-www-form-urlencoded")
    {
        String::new()
    } else {
        content_type
    };
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| Error::BadBody(e.to_string()))
        .boxed();
    let resp = st.filer.upload(p, mime, body).await?;
    json(StatusCode::CREATED, &resp, q.pretty.is_some())
}

/// `DELETE /path[?recursive=true]` → 204; the chunks are deleted in the background.
pub async fn delete(
    State(st): State<AppState>,
    uri: Uri,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, ApiError> {
    let (p, _) = request_path(&uri)?;
    st.filer.delete(p, q.recursive.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Milliseconds since the epoch of 9999-12-31T23:59:59Z, the last instant an HTTP date can name.
const MAX_HTTP_DATE_MS: u64 = 253_402_300_799_000;

/// Whether `m` is an ASCII `type/subtype[; params]` media type, safe to serve as Content-Type.
fn is_media_type(m: &str) -> bool {
    let essence = m.split(';').next().unwrap_or("").trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    m.is_ascii()
        && !m.bytes().any(|b| b.is_ascii_control())
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod media_tests {
    use super::*;

    #[test]
    fn test_is_media_type() {
        assert!(is_media_type("text/plain"));
        assert!(is_media_type("text/plain; charset=utf-8"));
        assert!(!is_media_type(""));
        assert!(!is_media_type("¥jc"));
        assert!(!is_media_type("textplain"));
        assert!(!is_media_type("text/"));
        assert!(!is_media_type("te xt/plain"));
    }

    #[test]
    fn test_max_http_date_formats() {
        let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(MAX_HTTP_DATE_MS));
        assert!(s.contains("9999"), "{s}");
    }
}
