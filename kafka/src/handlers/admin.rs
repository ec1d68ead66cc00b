//! Cluster and topic administration: Metadata, FindCoordinator, CreateTopics, DeleteTopics,
//! DescribeConfigs, DescribeCluster. A broker alone presents itself as a one-node cluster
//! that leads every partition and coordinates every group; brokers sharing partitions
//! (`Backend::nodes`) list each other, and name each partition's leader and each group's
//! coordinator as the backend says.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::{Ctx, HandleError, Reply, decode, respond, str_bytes, topic_name};
use crate::backend::{BackendError, Node, TopicMeta};
use crate::codec::Request;
use crate::error::{backend_code, code, log_backend_error};
use crate::mem::validate_topic_name;

/// Makes sure `name` exists, creating it when `create` allows; the Kafka error code otherwise.
pub async fn ensure_topic(ctx: &Ctx, name: &str, create: bool) -> Result<TopicMeta, i16> {
    match ctx.backend.topic(name).await {
        Ok(Some(meta)) => return Ok(meta),
        Ok(None) => {}
        Err(e) => {
            log_backend_error(&e);
            return Err(backend_code(&e));
        }
    }
    if !create {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    match ctx
        .backend
        .create_topic(name, ctx.cfg.auto_create_partitions)
        .await
    {
        Ok(meta) => {
            tracing::info!(
                topic = name,
                partitions = meta.partitions,
                "auto-created topic"
            );
            Ok(meta)
        }
        Err(BackendError::TopicAlreadyExists(_)) => match ctx.backend.topic(name).await {
            Ok(Some(meta)) => Ok(meta),
            _ => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
        },
        Err(e) => {
            log_backend_error(&e);
            Err(backend_code(&e))
        }
    }
}

/// Every broker of the cluster (this one alone unless the backend shares partitions).
pub fn nodes(ctx: &Ctx) -> Vec<Node> {
    let mut nodes = ctx.backend.nodes();
    if !nodes.iter().any(|n| n.node_id == ctx.cfg.node_id) {
        nodes.push(Node {
            node_id: ctx.cfg.node_id,
            host: ctx.cfg.advertised_host.clone(),
            port: ctx.port,
        });
    }
    nodes
}

/// The broker coordinating `group`.
pub fn coordinator(ctx: &Ctx, group: &str) -> Node {
    let id = ctx.backend.coordinator(group).unwrap_or(ctx.cfg.node_id);
    let nodes = nodes(ctx);
    nodes
        .iter()
        .find(|n| n.node_id == id)
        .or_else(|| nodes.iter().find(|n| n.node_id == ctx.cfg.node_id))
        .cloned()
        .unwrap_or(Node {
            node_id: ctx.cfg.node_id,
            host: ctx.cfg.advertised_host.clone(),
            port: ctx.port,
        })
}

/// Whether another broker coordinates `group` (the request gets NOT_COORDINATOR).
pub fn not_coordinator(ctx: &Ctx, group: &str) -> bool {
    ctx.backend
        .coordinator(group)
        .is_some_and(|id| id != ctx.cfg.node_id)
}

fn broker(n: &Node) -> MetadataResponseBroker {
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(n.node_id);
    b.host = str_bytes(&n.host);
    b.port = n.port;
    b
}

fn topic_entry(ctx: &Ctx, name: &str, meta: Result<TopicMeta, i16>) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(topic_name(name));
    match meta {
        Ok(meta) => {
            t.partitions = (0..meta.partitions as i32)
                .map(|i| {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i;
                    let leader = BrokerId(
                        ctx.backend
                            .leader(name, i as u32)
                            .unwrap_or(ctx.cfg.node_id),
                    );
                    p.leader_id = leader;
                    p.replica_nodes = vec![leader];
                    p.isr_nodes = vec![leader];
                    p
                })
                .collect();
        }
        Err(c) => t.error_code = c,
    }
    t
}

/// Metadata: this node, and the topics asked for (all when `topics` is null), creating
/// unknown ones when both the request (v4+) and the config allow it.
pub async fn metadata(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: MetadataRequest = decode(req, "metadata")?;
    let mut resp = MetadataResponse::default();
    resp.brokers = nodes(ctx).iter().map(broker).collect();
    resp.cluster_id = Some(str_bytes(&ctx.cfg.cluster_id));
    resp.controller_id = BrokerId(ctx.cfg.node_id);
    // v0 asks for all topics with an empty list; v1+ with null.
    let all = match &r.topics {
        None => true,
        Some(t) => t.is_empty() && req.api_version == 0,
    };
    if all {
        match ctx.backend.list_topics().await {
            Ok(topics) => {
                for meta in topics {
                    let name = meta.name.clone();
                    resp.topics.push(topic_entry(ctx, &name, Ok(meta)));
                }
            }
            Err(e) => {
                log_backend_error(&e);
                resp.error_code = backend_code(&e);
            }
        }
    } else {
        let create = ctx.cfg.auto_create_topics
            && !req.read_only
            && (req.api_version < 4 || r.allow_auto_topic_creation);
        for t in r.topics.unwrap_or_default() {
            let Some(name) = t.name else { continue };
            let name = name.0.as_str().to_owned();
            let meta = if validate_topic_name(&name).is_err() {
                Err(code::INVALID_TOPIC_EXCEPTION)
            } else {
                ensure_topic(ctx, &name, create).await
            };
            resp.topics.push(topic_entry(ctx, &name, meta));
        }
    }
    respond(req, &resp)
}

/// FindCoordinator: this node for every group; transactions are refused with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub fn find_coordinator(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: FindCoordinatorRequest = decode(req, "find_coordinator")?;
    let error = if r.key_type == 0 {
        code::NONE
    } else {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    };
    let mut resp = FindCoordinatorResponse::default();
    if req.api_version >= 4 {
        resp.coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let n = coordinator(ctx, k.as_str());
                let mut c = FoundCoordinator::default();
                c.key = k.clone();
                c.node_id = BrokerId(n.node_id);
                c.host = str_bytes(&n.host);
                c.port = n.port;
                c.error_code = error;
                c
            })
            .collect();
    } else {
        let n = coordinator(ctx, r.key.as_str());
        resp.error_code = error;
        resp.node_id = BrokerId(n.node_id);
        resp.host = str_bytes(&n.host);
        resp.port = n.port;
    }
    respond(req, &resp)
}

/// CreateTopics. `num_partitions` -1 means the auto-create count; any replication factor is
/// accepted (Kelp replicates below the log) and reported as 1.
pub async fn create_topics(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: CreateTopicsRequest = decode(req, "create_topics")?;
    let mut resp = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.0.as_str().to_owned();
        let partitions = if t.num_partitions == -1 {
            Ok(ctx.cfg.auto_create_partitions)
        } else {
            u32::try_from(t.num_partitions).map_err(|_| code::INVALID_PARTITIONS)
        };
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        out.num_partitions = -1;
        out.replication_factor = -1;
        let result = match partitions {
            _ if req.read_only => Err(code::TOPIC_AUTHORIZATION_FAILED),
            Err(c) => Err(c),
            Ok(_) if t.replication_factor == 0 || t.replication_factor < -1 => {
                Err(code::INVALID_REPLICATION_FACTOR)
            }
            Ok(n) if r.validate_only => match validate_topic_name(&name) {
                Err(e) => Err(backend_code(&e)),
                Ok(()) => match ctx.backend.topic(&name).await {
                    Ok(Some(_)) => Err(code::TOPIC_ALREADY_EXISTS),
                    Ok(None) if n == 0 => Err(code::INVALID_PARTITIONS),
                    Ok(None) => Ok(n),
                    Err(e) => Err(backend_code(&e)),
                },
            },
            Ok(n) => match ctx.backend.create_topic(&name, n).await {
                Ok(meta) => {
                    tracing::info!(topic = %name, partitions = meta.partitions, "created topic");
                    Ok(meta.partitions)
                }
                Err(e) => {
                    log_backend_error(&e);
                    out.error_message = Some(str_bytes(&e.to_string()));
                    Err(backend_code(&e))
                }
            },
        };
        match result {
            // Fields of v5+; older versions refuse to encode them.
            Ok(n) if req.api_version >= 5 => {
                out.num_partitions = n as i32;
                out.replication_factor = 1;
            }
            Ok(_) => {}
            Err(c) => out.error_code = c,
        }
        resp.topics.push(out);
    }
    respond(req, &resp)
}

/// DeleteTopics (by name; topic ids are not supported). A backend that cannot delete answers
/// TOPIC_DELETION_DISABLED.
pub async fn delete_topics(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: DeleteTopicsRequest = decode(req, "delete_topics")?;
    let names: Vec<Option<TopicName>> = if req.api_version >= 6 {
        r.topics.into_iter().map(|t| t.name).collect()
    } else {
        r.topic_names.into_iter().map(Some).collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for name in names {
        let mut out = DeletableTopicResult::default();
        out.name = name.clone();
        out.error_code = match name {
            _ if req.read_only => code::TOPIC_AUTHORIZATION_FAILED,
            None => code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(n) => match ctx.backend.delete_topic(n.0.as_str()).await {
                Ok(()) => {
                    tracing::info!(topic = n.0.as_str(), "deleted topic");
                    code::NONE
                }
                Err(BackendError::Unsupported(_)) => code::TOPIC_DELETION_DISABLED,
                Err(e) => {
                    log_backend_error(&e);
                    backend_code(&e)
                }
            },
        };
        resp.responses.push(out);
    }
    respond(req, &resp)
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs `config_source`: a default value.
const SOURCE_DEFAULT: i8 = 5;

/// The static configs reported for a topic or this broker.
fn static_configs(ctx: &Ctx, resource_type: i8) -> Vec<(&'static str, String)> {
    let max = ctx.cfg.max_request_bytes.to_string();
    if resource_type == RESOURCE_TOPIC {
        vec![
            ("cleanup.policy", "delete".into()),
            ("compression.type", "producer".into()),
            ("max.message.bytes", max),
            ("message.timestamp.type", "CreateTime".into()),
            ("min.insync.replicas", "1".into()),
            ("retention.bytes", "-1".into()),
            ("retention.ms", "-1".into()),
            ("unclean.leader.election.enable", "false".into()),
        ]
    } else {
        vec![
            (
                "advertised.listeners",
                format!("PLAINTEXT://{}:{}", ctx.cfg.advertised_host, ctx.port),
            ),
            (
                "auto.create.topics.enable",
                ctx.cfg.auto_create_topics.to_string(),
            ),
            ("broker.id", ctx.cfg.node_id.to_string()),
            ("delete.topic.enable", "true".into()),
            (
                "group.max.session.timeout.ms",
                ctx.cfg.group_session_max_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                ctx.cfg.group_session_min_ms.to_string(),
            ),
            ("message.max.bytes", max.clone()),
            ("num.partitions", ctx.cfg.auto_create_partitions.to_string()),
            ("socket.request.max.bytes", max),
        ]
    }
}

/// DescribeConfigs: read-only static configs of topics and of this broker.
pub fn describe_configs(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let r: DescribeConfigsRequest = decode(req, "describe_configs")?;
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        if res.resource_type != RESOURCE_TOPIC && res.resource_type != RESOURCE_BROKER {
            out.error_code = code::INVALID_REQUEST;
            out.error_message = Some(str_bytes("only topic and broker configs are described"));
        } else {
            out.configs = static_configs(ctx, res.resource_type)
                .into_iter()
                .filter(|(k, _)| {
                    // Null or empty: every config.
                    res.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.is_empty() || keys.iter().any(|x| x.as_str() == *k))
                })
                .map(|(k, v)| {
                    let mut c = DescribeConfigsResourceResult::default();
                    c.name = str_bytes(k);
                    c.value = Some(str_bytes(&v));
                    c.read_only = true;
                    c.config_source = SOURCE_DEFAULT;
                    c
                })
                .collect();
        }
        resp.results.push(out);
    }
    respond(req, &resp)
}

/// DescribeCluster: every node.
pub fn describe_cluster(ctx: &Ctx, req: &Request) -> Result<Reply, HandleError> {
    let _r: DescribeClusterRequest = decode(req, "describe_cluster")?;
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&ctx.cfg.cluster_id);
    resp.controller_id = BrokerId(ctx.cfg.node_id);
    resp.brokers = nodes(ctx)
        .iter()
        .map(|n| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(n.node_id);
            b.host = str_bytes(&n.host);
            b.port = n.port;
            b
        })
        .collect();
    respond(req, &resp)
}
