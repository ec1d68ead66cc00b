//! Fetch, sessionless (session id 0): reads durable batches of every asked partition and,
//! while fewer than `min_bytes` are there, long-polls with
//! [`Backend::wait_for_data`](crate::Backend::wait_for_data) across the partitions until
//! `max_wait_ms`. The high watermark and the last stable offset are the backend's high
//! watermark (the durable end: consumers never see a record a crash could erase).

use std::time::Duration;

use bytes::Bytes;
use futures::future::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::{Ctx, HandleError, Reply, decode, respond};
use crate::error::{backend_code, code, log_backend_error};

/// FETCH_SESSION_ID_NOT_FOUND: this listener keeps no fetch sessions.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Longest wait honoured, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// One partition to read.
struct Want {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// Fetch v4-12.
pub async fn handle(ctx: &Ctx, req: &crate::codec::Request) -> Result<Reply, HandleError> {
    let r: FetchRequest = decode(req, "fetch")?;
    let mut resp = FetchResponse::default();
    if r.session_id != 0 {
        resp.error_code = FETCH_SESSION_ID_NOT_FOUND;
        return respond(req, &resp);
    }
    let names: Vec<String> = r
        .topics
        .iter()
        .map(|t| t.topic.0.as_str().to_owned())
        .collect();
    let wants: Vec<Want> = r
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.partitions.iter().map(move |p| Want {
                topic: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            })
        })
        .collect();
    let max_bytes = usize::try_from(r.max_bytes).unwrap_or(0);
    let min_bytes = usize::try_from(r.min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;

    let parts = loop {
        let parts = read_all(ctx, &names, &wants, max_bytes).await;
        let bytes: usize = parts
            .iter()
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        let any_error = parts.iter().any(|p| p.error_code != code::NONE);
        if bytes >= min_bytes.max(1) || any_error || wants.is_empty() || Instant::now() >= deadline
        {
            break parts;
        }
        // Wake when any partition gets data past the asked offset, or at the deadline.
        let waits: Vec<_> = wants
            .iter()
            .filter_map(|w| {
                let p = u32::try_from(w.partition).ok()?;
                Some(
                    ctx.backend
                        .wait_for_data(&names[w.topic], p, w.offset)
                        .boxed(),
                )
            })
            .collect();
        if waits.is_empty() {
            // select_all panics on nothing to select.
            break parts;
        }
        let any = futures::future::select_all(waits);
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            // Timed out: answer with what is there now.
            break read_all(ctx, &names, &wants, max_bytes).await;
        }
    };

    let mut by_topic: Vec<FetchableTopicResponse> = r
        .topics
        .iter()
        .map(|t| {
            let mut out = FetchableTopicResponse::default();
            out.topic = t.topic.clone();
            out
        })
        .collect();
    for (w, p) in wants.iter().zip(parts) {
        by_topic[w.topic].partitions.push(p);
    }
    resp.responses = by_topic;
    respond(req, &resp)
}

/// Reads every wanted partition within `max_bytes` overall (the first non-empty partition
/// gets at least one whole batch, as in Kafka).
async fn read_all(
    ctx: &Ctx,
    names: &[String],
    wants: &[Want],
    max_bytes: usize,
) -> Vec<PartitionData> {
    let mut left = max_bytes;
    let mut out = Vec::with_capacity(wants.len());
    let mut any_data = false;
    for w in wants {
        let mut p = PartitionData::default();
        p.partition_index = w.partition;
        p.high_watermark = -1;
        p.last_stable_offset = -1;
        p.log_start_offset = -1;
        p.preferred_read_replica = BrokerId(-1);
        p.records = Some(Bytes::new());
        let Ok(partition) = u32::try_from(w.partition) else {
            p.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
            out.push(p);
            continue;
        };
        let topic = &names[w.topic];
        let budget = w.max_bytes.min(left);
        let result = if budget == 0 && any_data {
            // No room left: report offsets only.
            ctx.backend
                .offsets(topic, partition)
                .await
                .map(|o| (Bytes::new(), o))
        } else {
            ctx.backend
                .fetch(topic, partition, w.offset, budget.max(1))
                .await
                .map(|f| (f.batches, f.offsets))
        };
        match result {
            Ok((batches, offsets)) => {
                p.high_watermark = offsets.high_watermark;
                p.last_stable_offset = offsets.high_watermark;
                p.log_start_offset = offsets.log_start;
                left = left.saturating_sub(batches.len());
                any_data |= !batches.is_empty();
                p.records = Some(batches);
            }
            Err(e) => {
                log_backend_error(&e);
                p.error_code = backend_code(&e);
                if let Ok(o) = ctx.backend.offsets(topic, partition).await {
                    p.high_watermark = o.high_watermark;
                    p.last_stable_offset = o.high_watermark;
                    p.log_start_offset = o.log_start;
                }
            }
        }
        out.push(p);
    }
    out
}
