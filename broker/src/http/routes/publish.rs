//! `POST /topics/{ns}/{topic}/publish?acks=durable|buffered`, JSON or the binary batch.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use common::api::broker::{
    BATCH_CONTENT_TYPE, PublishQuery, PublishRequest, PublishResponse, decode_batch,
};
use common::http::{ApiError, Json, Path, Query};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::http::{AppState, body_limit, to_owner};
use crate::publish::{InRecord, from_json};
use crate::store::TopicKey;

/// Publishes records; answers once they are durable (`acks=durable`, the default) or
/// buffered (`acks=buffered`).
pub async fn publish(
    State(broker): State<AppState>,
    Path((ns, topic)): Path<(String, String)>,
    Query(q): Query<PublishQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let key = TopicKey::new(ns, topic);
    let acks = q.acks.unwrap_or_default();
    // The request span: the flush that persists these records links to it.
    let server_span = tracing::Span::current();
    let link = common::telemetry::span_context(&server_span);
    // Bodies being read and appended count against the buffer bound too: reserve what the
    // request announces before reading it (or what it turned out to be, when unannounced).
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut permit = match announced {
        Some(n) => Some(reserve_body(&broker, &key, n)?),
        None => None,
    };
    let body = axum::body::to_bytes(body, body_limit(&broker))
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge {
                    message: format!(
                        "publish body to {key} is over {} bytes",
                        body_limit(&broker)
                    ),
                }
            } else {
                ApiError::bad_request("bad_body", format!("read publish body: {e}"))
            }
        })?;
    if permit.is_none() {
        permit = Some(reserve_body(&broker, &key, body.len() as u64)?);
    }
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(BATCH_CONTENT_TYPE));
    let records: Vec<InRecord<'_>> = if binary {
        decode_batch(&body)
            .map_err(|e| ApiError::bad_request("bad_batch", e.to_string()))?
            .into_iter()
            .map(InRecord::from)
            .collect()
    } else {
        let req: PublishRequest<'_> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_json", format!("publish body is not valid JSON: {e}"))
        })?;
        from_json(req)?
    };
    let span = tracing::info_span!(
        "broker.publish",
        topic = %key,
        acks = acks.as_str(),
        records = records.len(),
        flush_trace_id = tracing::field::Empty,
    );
    let appended = span
        .in_scope(|| broker.append_records(&key, &records, acks, link, q.if_log_end))
        .map_err(|e| to_owner(e, &uri, q.redirected))?;
    // The records are in the partitions' logs now, counted by the buffer budget: drop the
    // request's bytes and their decoded views before waiting for durability.
    drop(records);
    drop(body);
    drop(permit);
    let published = broker
        .finish_publish(appended)
        .instrument(span.clone())
        .await?;
    if !published.flush_trace_ids.is_empty() {
        let ids = published.flush_trace_ids.join(",");
        span.record("flush_trace_id", ids.as_str());
        server_span.set_attribute("flush_trace_id", ids);
    }
    Ok(Json(published.response))
}

/// Reserves `n` bytes of the publish-body bound, or answers 503 `buffer_full`.
fn reserve_body<'a>(
    broker: &'a AppState,
    key: &TopicKey,
    n: u64,
) -> Result<tokio::sync::SemaphorePermit<'a>, ApiError> {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    broker.body_budget.try_acquire_many(n).map_err(|_| {
        broker.metrics.buffer_full.inc();
        ApiError::unavailable(
            "buffer_full",
            format!(
                "publish to {key}: request bodies being appended already hold the buffer bound \
                 ({} bytes); retry later",
                broker.budget.limit()
            ),
            1,
        )
    })
}
