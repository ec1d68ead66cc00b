//! Forwarding of writes from an instance without the writer lease to the one holding it.
//!
//! A write is `POST /subjects/{s}/versions`, `DELETE /subjects/...`, `PUT|DELETE /config...`
//! and `PUT /mode`. On the writer it runs here; on a follower that knows the writer it is sent
//! there (same method, path, query, content type and body, through the traced client, with
//! `x-kelp-registry-forwarded` so it is never forwarded twice) and its answer returned as it
//! is; then the follower catches up with the log. Without a known writer the answer is a 503
//! with Confluent's 50004 (unknown leader); a writer that cannot be reached is a 503 with 50003.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::client::{Call, ClientError};

use super::AppState;
use super::error::{CONTENT_TYPE, SrError};
use crate::leader::Role;

/// Marks a request forwarded by another instance.
const FORWARDED: HeaderName = HeaderName::from_static("x-kelp-registry-forwarded");

/// Whether `method path` changes the registry.
pub fn is_write(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        (method, segments.as_slice()),
        (&Method::POST, ["subjects", _, "versions"])
            | (&Method::DELETE, ["subjects", ..])
            | (&Method::PUT | &Method::DELETE, ["config", ..])
            | (&Method::PUT, ["mode"])
    )
}

/// The middleware: runs writes here on the writer, forwards them from a follower.
pub async fn forward_writes(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !is_write(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let leader = match st.registry.leadership().role() {
        Role::Writer => return next.run(req).await,
        Role::Follower(Some(l))
            if !req.headers().contains_key(&FORWARDED) && l != st.registry.leadership().me() =>
        {
            l
        }
        Role::Follower(_) => {
            return SrError::from(crate::service::Error::NotWriter).into_response();
        }
    };
    let forwarded = forward(&st, &leader, req).await;
    if forwarded.status().is_success()
        && let Err(e) = st.registry.refresh().await
    {
        tracing::warn!("failed to catch up after a forwarded write: {e}");
    }
    forwarded
}

async fn forward(st: &AppState, leader: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = st.registry.cfg().max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return SrError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                413,
                "HTTP 413 Request Entity Too Large",
            )
            .into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut call = Call::new(
        parts.method.clone(),
        format!("{}{path}", leader.trim_end_matches('/')),
        "forward to the registry writer",
    )
    .body(body)
    .idempotent(false);
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        call.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    call.headers
        .insert(FORWARDED, HeaderValue::from_static("1"));
    match st.forwarder.send(call).await {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(bytes) => answer(status, bytes.to_vec()),
                Err(e) => unreachable_writer(leader, &e.to_string()),
            }
        }
        Err(ClientError::Api {
            status, message, ..
        }) => {
            // The writer's Confluent error body (the client keeps the text of bodies that are
            // not Kelp's error shape); a cut or foreign body is wrapped.
            let is_confluent = serde_json::from_str::<serde_json::Value>(&message)
                .is_ok_and(|v| v.get("error_code").is_some());
            if is_confluent {
                answer(status, message.into_bytes())
            } else {
                SrError::new(status, u32::from(status.as_u16()), message).into_response()
            }
        }
        Err(e) => unreachable_writer(leader, &e.to_string()),
    }
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, Body::from(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

fn unreachable_writer(leader: &str, error: &str) -> Response {
    SrError {
        retry_after: Some(1),
        ..SrError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            format!("Error while forwarding the request to the leader {leader}: {error}"),
        )
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_is_write_names_the_mutating_routes() {
        assert!(is_write(&Method::POST, "/subjects/s/versions"));
        assert!(is_write(&Method::DELETE, "/subjects/s"));
        assert!(is_write(&Method::DELETE, "/subjects/s/versions/1"));
        assert!(is_write(&Method::PUT, "/config"));
        assert!(is_write(&Method::DELETE, "/config/s"));
        assert!(is_write(&Method::PUT, "/mode"));
        assert!(!is_write(&Method::POST, "/subjects/s"));
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/s/versions/1"
        ));
        assert!(!is_write(&Method::GET, "/subjects/s/versions"));
        assert!(!is_write(&Method::GET, "/config"));
    }
}
