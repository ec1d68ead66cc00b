//! Blob handlers: write (with synchronous replication), read (Range, ETag), delete.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::api::volume::{DeleteResponse, UploadResponse};
use common::client::master::urlencode;
use common::client::{Call, HttpClient, base_url};
use common::http::{ApiError, Json, Query};
use common::ids::FileId;
use serde::Deserialize;
use tracing::Instrument;

use super::AppState;
use crate::store::VolumeError;
use crate::store::needle::Needle;

/// Reads above this size run on the blocking pool.
const INLINE_READ_MAX: u32 = 256 << 10;

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
}

/// The `{fid}` path segment, parsed. Every rejection is a JSON 400 `bad_fid`, including
/// axum's own (a percent-escape that is not UTF-8), which would otherwise be plain text.
pub struct Fid(FileId);

impl<S: Send + Sync> FromRequestParts<S> for Fid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("bad_fid", e.body_text()))?;
        raw.parse::<FileId>()
            .map(Self)
            .map_err(|e| ApiError::bad_request("bad_fid", e.to_string()))
    }
}

/// Maps a volume error to an API error whose text names the file id.
fn fid_error(fid: &FileId, e: VolumeError) -> ApiError {
    match ApiError::from(e) {
        ApiError::NotFound { code, message } => {
            ApiError::not_found(code, format!("file {fid}: {message}"))
        }
        ApiError::Internal(err) => ApiError::internal(anyhow::anyhow!("file {fid}: {err:#}")),
        other => other,
    }
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
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?
        {
            if field.name() == Some("file") || field.file_name().is_some() {
                let name = field.file_name().map(str::to_owned);
                let mime = field.content_type().map(str::to_owned);
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(e.status(), e.body_text()))?;
                if data.len() > limit {
                    return Err(too_large(limit));
                }
                return Ok((data, name, mime));
            }
        }
        return Err(ApiError::bad_request(
            "bad_multipart",
            "multipart body has no `file` part",
        ));
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

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { message: text }
    } else {
        ApiError::bad_request("bad_multipart", text)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge {
        message: format!("blob is larger than the limit of {limit} bytes"),
    }
}

/// `POST|PUT /{fid}`: stores a blob, durably (and on every replica) before answering 201.
pub async fn put_blob(
    State(s): State<AppState>,
    Fid(fid): Fid,
    Query(q): Query<WriteParams>,
    req: Request,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let vol = s.store.get(fid.volume_id).map_err(|e| fid_error(&fid, e))?;
    let limit = usize::try_from(common::config::mib(s.cfg.max_blob_mb)).unwrap_or(usize::MAX);
    let (data, part_name, mime) = read_body(req, limit).await?;
    let name = q.name.clone().or(part_name);
    let fsync = s.cfg.fsync && q.fsync != Some(false);
    let replicate = q.kind.as_deref() == Some("replicate");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    let needle = Needle {
        cookie: fid.cookie,
        key: fid.key,
        data: data.clone(),
        name: name.clone(),
        mime: mime.clone(),
        last_modified: if replicate {
            q.last_modified.or(now)
        } else {
            now
        },
    };

    let local = async {
        let mut pending = vol
            .write(&needle, fsync, s.store.size_limit())
            .await
            .map_err(|e| fid_error(&fid, e))?;
        let checksum = pending.checksum;
        pending
            .appended()
            .instrument(tracing::info_span!(
                "needle.append",
                otel.name = "needle.append",
                volume = fid.volume_id,
                bytes = data.len()
            ))
            .await;
        pending
            .done()
            .instrument(tracing::info_span!(
                "volume.fsync",
                otel.name = "volume.fsync",
                volume = fid.volume_id,
                fsync
            ))
            .await
            .map_err(|e| fid_error(&fid, e))?;
        Ok::<u32, ApiError>(checksum)
    };
    let checksum = if replicate || vol.replication.copies() == 1 {
        local.await?
    } else {
        let replicas = replica_urls(&s, fid.volume_id, vol.replication.copies()).await?;
        let copy = ReplicaCopy {
            fsync,
            name: name.as_deref(),
            mime: mime.as_deref(),
            last_modified: needle.last_modified,
        };
        let forwards = replicas.iter().map(|url| {
            let (http, data, copy) = (&s.http, data.clone(), &copy);
            async move {
                replicate_write(http, url, &fid, data, copy)
                    .await
                    .map_err(|e| replica_error(&fid, url, e))
            }
        });
        let (checksum, forwarded) = tokio::join!(local, futures::future::join_all(forwards));
        let checksum = checksum?;
        for (f, url) in forwarded.into_iter().zip(&replicas) {
            let copy = f?;
            if copy.etag != format!("{checksum:08x}") {
                tracing::error!(fid = %fid, replica = %url, local = format_args!("{checksum:08x}"), replica_etag = %copy.etag, "replica stored a needle with a different checksum; the copies differ");
            }
        }
        checksum
    };
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            name: needle.name.unwrap_or_default(),
            size: data.len() as u64,
            etag: format!("{checksum:08x}"),
        }),
    ))
}

/// What a replica copy must keep identical to the primary's needle.
struct ReplicaCopy<'a> {
    fsync: bool,
    name: Option<&'a str>,
    mime: Option<&'a str>,
    last_modified: Option<u64>,
}

/// Forwards a write to a replica with the needle's metadata (name, MIME type as
/// `Content-Type`, last-modified), so both copies hold the same bytes and the same ETag.
async fn replicate_write(
    http: &HttpClient,
    server: &str,
    fid: &FileId,
    data: Bytes,
    copy: &ReplicaCopy<'_>,
) -> Result<UploadResponse, common::client::ClientError> {
    let mut params = vec!["type=replicate".to_owned()];
    if !copy.fsync {
        params.push("fsync=false".to_owned());
    }
    if let Some(n) = copy.name {
        params.push(format!("name={}", urlencode(n)));
    }
    if let Some(t) = copy.last_modified {
        params.push(format!("lastModified={t}"));
    }
    let mut call = Call::new(
        Method::POST,
        format!("{}/{fid}?{}", base_url(server), params.join("&")),
        "POST /{fid}",
    )
    .body(data)
    .idempotent(true);
    let mime = copy
        .mime
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    call.headers.insert(header::CONTENT_TYPE, mime);
    http.json(call).await
}

fn replica_error(fid: &FileId, url: &str, e: common::client::ClientError) -> ApiError {
    s_unavailable(format!("replica write of {fid} to {url} failed: {e}"))
}

fn s_unavailable(message: String) -> ApiError {
    ApiError::unavailable("replica_unavailable", message, 1)
}

/// The other servers holding `vid`, which must number `copies - 1`.
async fn replica_urls(s: &AppState, vid: u32, copies: usize) -> Result<Vec<String>, ApiError> {
    let locations = s
        .master
        .lookup(vid)
        .await
        .map_err(|e| s_unavailable(format!("cannot find the replicas of volume {vid}: {e}")))?;
    let others: Vec<String> = locations
        .into_iter()
        .map(|l| l.url)
        .filter(|u| *u != s.url)
        .collect();
    if others.len() + 1 < copies {
        s.master.invalidate(vid);
        return Err(s_unavailable(format!(
            "volume {vid} needs {copies} copies but only {} servers hold it; refusing a write with fewer copies",
            others.len() + 1
        )));
    }
    Ok(others)
}

/// `GET|HEAD /{fid}`: serves a blob after verifying its checksum; supports `Range` and
/// `If-None-Match`.
pub async fn get_blob(
    State(s): State<AppState>,
    Fid(fid): Fid,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let vol = s.store.get(fid.volume_id).map_err(|e| fid_error(&fid, e))?;
    let read = if vol.needle_size(fid.key).unwrap_or(0) > INLINE_READ_MAX {
        let v = vol.clone();
        tokio::task::spawn_blocking(move || v.read(fid.key, fid.cookie))
            .await
            .map_err(ApiError::internal)?
    } else {
        vol.read(fid.key, fid.cookie)
    }
    .map_err(|e| fid_error(&fid, e))?;
    let etag = format!("\"{:08x}\"", read.checksum);
    let n = read.needle;
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let mime = n.mime.as_deref().unwrap_or("application/octet-stream");
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response());
    }
    let total = n.data.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, body) = match range.map(|r| parse_range(r, total)) {
        None | Some(RangeSpec::Ignore) => (StatusCode::OK, n.data),
        Some(RangeSpec::Unsatisfiable) => {
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
        Some(RangeSpec::Bytes(start, end)) => {
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
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if method == Method::HEAD {
        return Ok((status, resp_headers).into_response());
    }
    Ok((status, resp_headers, Body::from(body)).into_response())
}

/// A parsed `Range` header.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole blob (malformed or multi-range headers are ignored, as RFC 9110 allows).
    Ignore,
    /// No byte of the range exists.
    Unsatisfiable,
    /// Inclusive byte range.
    Bytes(u64, u64),
}

fn parse_range(h: &str, total: u64) -> RangeSpec {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeSpec::Ignore,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeSpec::Unsatisfiable,
            Ok(n) => (total.saturating_sub(n), total.checked_sub(1)),
            Err(_) => return RangeSpec::Ignore,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeSpec::Ignore;
            };
            let end = if b.is_empty() {
                total.checked_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => Some(e.min(total.saturating_sub(1))),
                    _ => return RangeSpec::Ignore,
                }
            };
            (start, end)
        }
    };
    match parsed {
        (start, Some(end)) if start < total && start <= end => RangeSpec::Bytes(start, end),
        _ => RangeSpec::Unsatisfiable,
    }
}

/// `DELETE /{fid}`: appends a tombstone (cookie checked) here and on every replica.
///
/// On a replicated volume the delete reaches every replica even when the needle is already
/// gone here: a retry after a replica failed (503) must still delete the replica's copy, or it
/// would serve the blob after a failover. The answer is 202 if any copy held the needle, 404
/// if none did, 503 if a replica could not be reached (retry it).
pub async fn delete_blob(
    State(s): State<AppState>,
    Fid(fid): Fid,
    Query(q): Query<WriteParams>,
) -> Result<(StatusCode, Json<DeleteResponse>), ApiError> {
    let vol = s.store.get(fid.volume_id).map_err(|e| fid_error(&fid, e))?;
    let fsync = s.cfg.fsync && q.fsync != Some(false);
    let replicate = q.kind.as_deref() == Some("replicate");
    let local = vol.delete(fid.key, fid.cookie, fsync).await;
    if replicate || vol.replication.copies() == 1 {
        let size = local.map_err(|e| fid_error(&fid, e))?;
        return Ok((StatusCode::ACCEPTED, Json(DeleteResponse { size })));
    }
    let mut size = match local {
        Ok(size) => Some(size),
        Err(VolumeError::NeedleNotFound { .. }) => None,
        Err(e) => return Err(fid_error(&fid, e)),
    };
    let replicas = replica_urls(&s, fid.volume_id, vol.replication.copies()).await?;
    let volumes = &s.volumes;
    let deletes = replicas
        .iter()
        .map(|url| async move { (url, volumes.delete(url, &fid, true).await) });
    for (url, res) in futures::future::join_all(deletes).await {
        match res {
            Ok(r) => size = size.or(Some(r.size)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(e) => {
                return Err(s_unavailable(format!(
                    "replica delete of {fid} on {url} failed: {e}"
                )));
            }
        }
    }
    match size {
        Some(size) => Ok((StatusCode::ACCEPTED, Json(DeleteResponse { size }))),
        None => Err(ApiError::not_found(
            "needle_not_found",
            format!(
                "file {fid}: not found on any copy of volume {}",
                fid.volume_id
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_range_forms() {
        assert_eq!(parse_range("bytes=0-4", 10), RangeSpec::Bytes(0, 4));
        assert_eq!(parse_range("bytes=5-", 10), RangeSpec::Bytes(5, 9));
        assert_eq!(parse_range("bytes=-3", 10), RangeSpec::Bytes(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=8-100", 10), RangeSpec::Bytes(8, 9));
        assert_eq!(parse_range("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 10), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-1", 10), RangeSpec::Ignore);
    }
}
