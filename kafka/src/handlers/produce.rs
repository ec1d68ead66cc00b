//! Produce and InitProducerId.
//!
//! Each partition's records are split into v2 batches and appended one by one through
//! [`Backend::produce`](crate::Backend::produce) inside a `kafka.produce` span (topic,
//! partition, records). Error codes: a partition of an unknown topic (auto-create off)
//! UNKNOWN_TOPIC_OR_PARTITION; bytes that are not whole checked batches CORRUPT_MESSAGE;
//! magic 0/1 message sets and Produce v0-2 UNSUPPORTED_FOR_MESSAGE_FORMAT; transactional
//! batches and transactional producers TRANSACTIONAL_ID_AUTHORIZATION_FAILED (transactions
//! are not supported); control batches INVALID_REQUEST; acks other than -1/0/1
//! INVALID_REQUIRED_ACKS; backend errors as [`crate::error::backend_code`] maps them.

use bytes::{Buf, BufMut, Bytes};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use tracing::Instrument;

use super::{Ctx, HandleError, Reply, decode, respond};
use crate::backend::{BackendError, Durability, ProduceOutcome, ProducedBatch};
use crate::batch::{self, BatchError};
use crate::codec::{self, Request};
use crate::error::{backend_code, code, log_backend_error};

/// Produce v3+. Every partition's batches are appended first; then `appended` is dropped,
/// so the connection's next produce can append while this one waits; then, for `acks=all`,
/// each partition waits until it is durable up to its last batch.
pub async fn handle(
    ctx: &Ctx,
    req: &Request,
    appended: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Reply, HandleError> {
    let produce: ProduceRequest = decode(req, "produce")?;
    let durability = match produce.acks {
        -1 => Some(Durability::Durable),
        0 | 1 => Some(Durability::Buffered),
        _ => None,
    };
    let transactional = produce
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty());
    // Phase 1: append, partitions concurrently, each partition's batches in order.
    let mut topics = Vec::new();
    for topic in &produce.topic_data {
        let name = topic.name.0.as_str().to_owned();
        let exists = if req.read_only {
            Err(code::TOPIC_AUTHORIZATION_FAILED)
        } else {
            super::admin::ensure_topic(ctx, &name, ctx.cfg.auto_create_topics)
                .await
                .map(|_| ())
        };
        let parts = topic.partition_data.iter().map(|p| {
            let name = name.clone();
            async move {
                let result = match (durability, transactional, exists) {
                    (None, _, _) => Err(code::INVALID_REQUIRED_ACKS),
                    (_, true, _) => Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                    (_, _, Err(c)) => Err(c),
                    (Some(d), false, Ok(())) => {
                        let records = p.records.clone().unwrap_or_default();
                        produce_partition(ctx, &name, p.index, &records, d).await
                    }
                };
                (p.index, result)
            }
        });
        let results = futures::future::join_all(parts).await;
        topics.push((topic.name.clone(), name, results));
    }
    drop(appended);
    // Phase 2: answer `acks=all` only once durable.
    let mut resp = ProduceResponse::default();
    for (topic_name, name, parts) in topics {
        let waits = parts.into_iter().map(|(index, result)| {
            let name = name.clone();
            async move {
                let mut out = PartitionProduceResponse::default();
                out.index = index;
                out.base_offset = -1;
                out.log_append_time_ms = -1;
                out.log_start_offset = -1;
                out.error_code = match result {
                    Err(c) => c,
                    Ok(appended) => {
                        match wait_durable(ctx, &name, index, &appended, durability).await {
                            Ok(()) => {
                                out.base_offset = appended.base;
                                out.log_start_offset = appended.log_start;
                                code::NONE
                            }
                            Err(c) => c,
                        }
                    }
                };
                out
            }
        });
        let mut t = TopicProduceResponse::default();
        t.name = topic_name;
        t.partition_responses = futures::future::join_all(waits).await;
        resp.responses.push(t);
    }
    if produce.acks == 0 {
        let failed = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .map(|p| p.error_code)
            .find(|&c| c != code::NONE);
        return match failed {
            Some(c) => Err(HandleError::UnacknowledgedFailure(c)),
            None => Ok(None),
        };
    }
    respond(req, &resp)
}

/// Where one partition's batches landed.
struct Appended {
    /// Base offset of the first batch.
    base: i64,
    /// The log start offset.
    log_start: i64,
    /// One past the last batch's last offset.
    end: i64,
}

/// For `acks=all`, waits until the partition is durable past the appended batches.
async fn wait_durable(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    appended: &Appended,
    durability: Option<Durability>,
) -> Result<(), i16> {
    if durability != Some(Durability::Durable) {
        return Ok(());
    }
    let Ok(partition) = u32::try_from(partition) else {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    ctx.backend
        .wait_durable(topic, partition, appended.end)
        .await
        .map_err(|e| {
            log_backend_error(&e);
            backend_code(&e)
        })
}

/// Appends every batch of one partition; returns where they landed, or the Kafka error code.
async fn produce_partition(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    records: &Bytes,
    durability: Durability,
) -> Result<Appended, i16> {
    let Ok(partition) = u32::try_from(partition) else {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let batches = batch::split_batches(records).map_err(|e| {
        tracing::debug!(topic, partition, error = %e, "refused produce records");
        match e {
            BatchError::BadMagic(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            _ => code::CORRUPT_MESSAGE,
        }
    })?;
    if batches.is_empty() {
        return Err(code::CORRUPT_MESSAGE);
    }
    let mut first: Option<Appended> = None;
    for (bytes, info) in batches {
        let span_count = i64::from(info.offset_count());
        if info.is_transactional() {
            return Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        if info.is_control() {
            return Err(code::INVALID_REQUEST);
        }
        let span = tracing::info_span!(
            "kafka.produce",
            topic,
            partition,
            records = info.record_count,
            acks = ?durability
        );
        let result = ctx
            .backend
            .produce(topic, partition, ProducedBatch { bytes, info }, durability)
            .instrument(span.clone())
            .await;
        let (base, start) = match result {
            Ok(ProduceOutcome::Appended {
                base_offset,
                log_start,
            }) => (base_offset, log_start),
            Ok(ProduceOutcome::Duplicate {
                base_offset,
                log_start,
            }) => {
                span.in_scope(|| tracing::debug!(base_offset, "duplicate batch not stored again"));
                (base_offset, log_start)
            }
            Err(e) => {
                span.in_scope(|| log_backend_error(&e));
                return Err(backend_code(&e));
            }
        };
        let end = base + span_count;
        match &mut first {
            Some(a) => a.end = a.end.max(end),
            None => {
                first = Some(Appended {
                    base,
                    log_start: start,
                    end,
                })
            }
        }
    }
    first.ok_or(code::CORRUPT_MESSAGE)
}

/// Produce v0-2: listed in ApiVersions (see the module doc of [`super`]) but refused with
/// UNSUPPORTED_FOR_MESSAGE_FORMAT per partition. `kafka-protocol` cannot decode these
/// versions, so the request and response are read and written here.
pub fn handle_legacy(req: &Request) -> Result<Reply, HandleError> {
    let malformed = |what: &str| HandleError::Malformed {
        api: "produce",
        version: req.api_version,
        reason: what.to_owned(),
    };
    let mut b = req.body.clone();
    // Header v1 is already stripped: acks, timeout, then the topics.
    if b.remaining() < 6 {
        return Err(malformed("truncated"));
    }
    let acks = b.get_i16();
    let _timeout = b.get_i32();
    let mut topics: Vec<(Bytes, Vec<i32>)> = Vec::new();
    let n = read_len(&mut b).ok_or_else(|| malformed("topic count"))?;
    for _ in 0..n {
        let name = read_str(&mut b).ok_or_else(|| malformed("topic name"))?;
        let parts = read_len(&mut b).ok_or_else(|| malformed("partition count"))?;
        let mut ids = Vec::new();
        for _ in 0..parts {
            if b.remaining() < 8 {
                return Err(malformed("partition"));
            }
            ids.push(b.get_i32());
            let size = b.get_i32();
            if size > 0 {
                let size = size as usize;
                if b.remaining() < size {
                    return Err(malformed("record set"));
                }
                b.advance(size);
            }
        }
        topics.push((name, ids));
    }
    if acks == 0 {
        return Ok(None);
    }
    let version = req.api_version;
    Ok(Some(codec::encode_raw(req.correlation_id, 0, |buf| {
        buf.put_i32(topics.len() as i32);
        for (name, ids) in &topics {
            buf.put_i16(name.len() as i16);
            buf.put_slice(name);
            buf.put_i32(ids.len() as i32);
            for id in ids {
                buf.put_i32(*id);
                buf.put_i16(code::UNSUPPORTED_FOR_MESSAGE_FORMAT);
                buf.put_i64(-1);
                if version >= 2 {
                    buf.put_i64(-1);
                }
            }
        }
        if version >= 1 {
            buf.put_i32(0);
        }
        Ok(())
    })?))
}

fn read_len(b: &mut Bytes) -> Option<usize> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    // Each element takes at least two bytes, which bounds a lying count.
    usize::try_from(n).ok().filter(|&n| n <= b.remaining())
}

fn read_str(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 2 {
        return None;
    }
    let n = usize::try_from(b.get_i16()).ok()?;
    (b.remaining() >= n).then(|| b.split_to(n))
}

/// InitProducerId: a fresh producer id at epoch 0. A transactional id is refused with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients report as a fatal, clear error.
pub async fn init_producer_id(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: kafka_protocol::messages::InitProducerIdRequest = decode(req, "init_producer_id")?;
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        resp.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return respond(req, &resp);
    }
    if req.read_only {
        resp.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return respond(req, &resp);
    }
    match ctx.backend.allocate_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            log_backend_error(&e);
            resp.error_code = match e {
                BackendError::Unavailable(_) => code::COORDINATOR_NOT_AVAILABLE,
                other => backend_code(&other),
            };
        }
    }
    respond(req, &resp)
}
