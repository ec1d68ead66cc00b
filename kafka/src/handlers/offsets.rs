//! ListOffsets, OffsetCommit and OffsetFetch. Committed offsets are stored by the backend
//! ([`Backend::commit_offset`](crate::Backend::commit_offset)); the group coordinator only
//! checks that a commit comes from a current member.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::{Ctx, HandleError, Reply, decode, respond, str_bytes, topic_name};
use crate::backend::{BackendError, CommittedOffset};
use crate::codec::Request;
use crate::error::{backend_code, code, log_backend_error};

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// The error code of a backend failure in a group api (unavailable → COORDINATOR_NOT_AVAILABLE,
/// which clients retry).
fn group_code(e: &BackendError) -> i16 {
    log_backend_error(e);
    match e {
        BackendError::Unavailable(_) => code::COORDINATOR_NOT_AVAILABLE,
        other => backend_code(other),
    }
}

/// ListOffsets: earliest (-2), latest (-1, the high watermark) or the first offset at or
/// after a timestamp (offset -1 when every record is older). Max-timestamp (-3) lookups are
/// refused with INVALID_REQUEST.
pub async fn list_offsets(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: ListOffsetsRequest = decode(req, "list_offsets")?;
    let mut resp = ListOffsetsResponse::default();
    for t in r.topics {
        let name = t.name.0.as_str().to_owned();
        let mut out = ListOffsetsTopicResponse::default();
        out.name = t.name.clone();
        for p in t.partitions {
            let mut po = ListOffsetsPartitionResponse::default();
            po.partition_index = p.partition_index;
            po.timestamp = -1;
            po.offset = -1;
            let result = match u32::try_from(p.partition_index) {
                Err(_) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Ok(part) => match p.timestamp {
                    EARLIEST | LATEST => match ctx.backend.offsets(&name, part).await {
                        Ok(o) if p.timestamp == EARLIEST => Ok((o.log_start, -1)),
                        Ok(o) => Ok((o.high_watermark, -1)),
                        Err(e) => Err(group_code(&e)),
                    },
                    ts if ts < 0 => Err(code::INVALID_REQUEST),
                    ts => match ctx.backend.offset_for_timestamp(&name, part, ts).await {
                        Ok(Some((offset, found))) => Ok((offset, found)),
                        Ok(None) => Ok((-1, -1)),
                        Err(e) => Err(group_code(&e)),
                    },
                },
            };
            match result {
                Ok((offset, ts)) => {
                    po.offset = offset;
                    po.timestamp = ts;
                }
                Err(c) => po.error_code = c,
            }
            out.partitions.push(po);
        }
        resp.topics.push(out);
    }
    respond(req, &resp)
}

/// OffsetCommit: checked against the group's generation when it comes from a member
/// (generation >= 0), then stored per partition.
pub async fn offset_commit(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: OffsetCommitRequest = decode(req, "offset_commit")?;
    let group = r.group_id.0.as_str().to_owned();
    let check = if super::admin::not_coordinator(ctx, &group) {
        code::NOT_COORDINATOR
    } else {
        ctx.groups.check_commit(
            &group,
            r.member_id.as_str(),
            r.generation_id_or_member_epoch,
        )
    };
    if check != code::NONE {
        tracing::info!(group = %group, member_id = r.member_id.as_str(),
            generation = r.generation_id_or_member_epoch, error = check, "offset commit refused");
    }
    let mut resp = OffsetCommitResponse::default();
    for t in r.topics {
        let name = t.name.0.as_str().to_owned();
        let mut out = OffsetCommitResponseTopic::default();
        out.name = t.name.clone();
        for p in t.partitions {
            let mut po = OffsetCommitResponsePartition::default();
            po.partition_index = p.partition_index;
            po.error_code = if check != code::NONE {
                check
            } else {
                match u32::try_from(p.partition_index) {
                    Err(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
                    Ok(partition) => {
                        let c = CommittedOffset {
                            partition,
                            offset: p.committed_offset,
                            metadata: p.committed_metadata.map(|m| m.as_str().to_owned()),
                        };
                        match ctx.backend.commit_offset(&group, &name, c).await {
                            Ok(()) => code::NONE,
                            Err(e) => group_code(&e),
                        }
                    }
                }
            };
            out.partitions.push(po);
        }
        resp.topics.push(out);
    }
    respond(req, &resp)
}

/// One partition's answer: (partition, offset, metadata, error).
type FetchedOffset = (i32, i64, Option<String>, i16);

/// A group's committed offsets for `topics` (all topics with commits when `None`).
async fn group_offsets(
    ctx: &Ctx,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    let explicit = topics.is_some();
    let topics = match topics {
        Some(t) => t,
        None => ctx
            .backend
            .list_topics()
            .await
            .map_err(|e| group_code(&e))?
            .into_iter()
            .map(|t| (t.name, Vec::new()))
            .collect(),
    };
    let mut out = Vec::new();
    for (name, partitions) in topics {
        let committed = match ctx.backend.committed_offsets(group, &name).await {
            Ok(c) => c,
            Err(BackendError::UnknownTopicOrPartition(_)) => Vec::new(),
            Err(e) => return Err(group_code(&e)),
        };
        let rows: Vec<FetchedOffset> = if explicit {
            partitions
                .iter()
                .map(|&p| {
                    match committed
                        .iter()
                        .find(|c| i64::from(c.partition) == i64::from(p))
                    {
                        Some(c) => (p, c.offset, c.metadata.clone(), code::NONE),
                        None => (p, -1, Some(String::new()), code::NONE),
                    }
                })
                .collect()
        } else {
            committed
                .iter()
                .map(|c| (c.partition as i32, c.offset, c.metadata.clone(), code::NONE))
                .collect()
        };
        if explicit || !rows.is_empty() {
            out.push((name, rows));
        }
    }
    Ok(out)
}

/// OffsetFetch: v1-7 for one group, v8 for several. Partitions without a commit get -1.
pub async fn offset_fetch(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: OffsetFetchRequest = decode(req, "offset_fetch")?;
    let mut resp = OffsetFetchResponse::default();
    if req.api_version >= 8 {
        for g in r.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            match group_offsets(ctx, g.group_id.0.as_str(), topics).await {
                Ok(rows) => {
                    out.topics = rows
                        .into_iter()
                        .map(|(name, parts)| {
                            let mut t = OffsetFetchResponseTopics::default();
                            t.name = topic_name(&name);
                            t.partitions = parts
                                .into_iter()
                                .map(|(p, offset, meta, err)| {
                                    let mut x = OffsetFetchResponsePartitions::default();
                                    x.partition_index = p;
                                    x.committed_offset = offset;
                                    x.committed_leader_epoch = -1;
                                    x.metadata = meta.map(|m| str_bytes(&m));
                                    x.error_code = err;
                                    x
                                })
                                .collect();
                            t
                        })
                        .collect();
                }
                Err(c) => out.error_code = c,
            }
            resp.groups.push(out);
        }
    } else {
        let topics = r.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
                .collect()
        });
        match group_offsets(ctx, r.group_id.0.as_str(), topics).await {
            Ok(rows) => {
                resp.topics = rows
                    .into_iter()
                    .map(|(name, parts)| {
                        let mut t = OffsetFetchResponseTopic::default();
                        t.name = topic_name(&name);
                        t.partitions = parts
                            .into_iter()
                            .map(|(p, offset, meta, err)| {
                                let mut x = OffsetFetchResponsePartition::default();
                                x.partition_index = p;
                                x.committed_offset = offset;
                                x.committed_leader_epoch = -1;
                                x.metadata = meta.map(|m| str_bytes(&m));
                                x.error_code = err;
                                x
                            })
                            .collect();
                        t
                    })
                    .collect();
            }
            Err(c) => resp.error_code = c,
        }
    }
    respond(req, &resp)
}
