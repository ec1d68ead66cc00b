//! Request dispatch: the api versions this listener advertises, one handler per api, and the
//! UNSUPPORTED_VERSION answers for everything else.
//!
//! # Version choices
//! The advertised ranges are Kafka 3.6's, cut to what `kafka-protocol` can decode, with
//! Produce and Fetch capped at 12 (no topic ids). Produce is listed from v0 because older
//! librdkafka (Debian's kcat) disables compression unless it is, but v0-2 requests are
//! answered with UNSUPPORTED_FOR_MESSAGE_FORMAT (see [`produce`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tracing::Instrument;

use crate::backend::Backend;
use crate::codec::{self, EncodeError, Request};
use crate::config::KafkaConfig;
use crate::error::code;
use crate::group::Coordinator;

pub mod admin;
pub mod fetch;
pub mod groups;
pub mod offsets;
pub mod produce;

/// `(api, min, max)` this listener advertises and serves.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 0),
];

/// What every handler needs.
pub struct Ctx {
    /// The log store.
    pub backend: Arc<dyn Backend>,
    /// Listener settings.
    pub cfg: KafkaConfig,
    /// Port advertised to clients.
    pub port: i32,
    /// Consumer groups.
    pub groups: Arc<Coordinator>,
}

/// A handler's answer: a whole response frame, or nothing (acks=0 produce).
pub type Reply = Option<Bytes>;

/// Why a request gets no answer and the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The body does not decode for its api and version.
    #[error("malformed {api} v{version} request: {reason}")]
    Malformed {
        /// Api name.
        api: &'static str,
        /// Version.
        version: i16,
        /// Decoder's complaint.
        reason: String,
    },
    /// A response failed to encode.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An acks=0 produce failed: there is no response to carry the error, so the connection
    /// is closed, as Kafka does, and the client refreshes its metadata and retries.
    #[error("acks=0 produce failed with error code {0}")]
    UnacknowledgedFailure(i16),
}

/// Decodes the body as `T` or fails with [`HandleError::Malformed`].
pub fn decode<T: Decodable>(req: &Request, api: &'static str) -> Result<T, HandleError> {
    codec::decode_body(req).map_err(|reason| HandleError::Malformed {
        api,
        version: req.api_version,
        reason,
    })
}

/// Encodes `body` as the response to `req`.
pub fn respond<R: Encodable + HeaderVersion>(
    req: &Request,
    body: &R,
) -> Result<Reply, HandleError> {
    Ok(Some(codec::encode_response(
        req.correlation_id,
        req.api_version,
        body,
    )?))
}

/// Whether this listener serves `key` at `version`.
pub fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

/// Handles one request inside its `kafka.<api>` span (Produce makes one `kafka.produce`
/// span per partition instead).
///
/// `appended`, when given, is dropped once the request's state changes are applied, which
/// lets the connection's next serialized request start: for Produce, once its batches are
/// appended, before it waits for durability; for the others, when they finish.
pub async fn handle(
    ctx: &Ctx,
    req: Request,
    appended: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Reply, HandleError> {
    let Some(key) = req.key() else {
        tracing::debug!(api_key = req.api_key, "unknown api key");
        return unsupported(&req);
    };
    if key == ApiKey::Produce && (0..3).contains(&req.api_version) {
        return produce::handle_legacy(&req);
    }
    if !supported(key, req.api_version) {
        tracing::debug!(api = ?key, version = req.api_version, "unsupported api version");
        return unsupported(&req);
    }
    macro_rules! span {
        ($name:literal) => {
            tracing::info_span!(
                $name,
                version = req.api_version,
                correlation_id = req.correlation_id,
                client_id = req.client_id.as_deref().unwrap_or("")
            )
        };
    }
    match key {
        ApiKey::Produce => produce::handle(ctx, &req, appended).await,
        ApiKey::Fetch => {
            fetch::handle(ctx, &req)
                .instrument(span!("kafka.fetch"))
                .await
        }
        ApiKey::ListOffsets => {
            offsets::list_offsets(ctx, &req)
                .instrument(span!("kafka.list_offsets"))
                .await
        }
        ApiKey::Metadata => {
            admin::metadata(ctx, &req)
                .instrument(span!("kafka.metadata"))
                .await
        }
        ApiKey::OffsetCommit => {
            offsets::offset_commit(ctx, &req)
                .instrument(span!("kafka.offset_commit"))
                .await
        }
        ApiKey::OffsetFetch => {
            offsets::offset_fetch(ctx, &req)
                .instrument(span!("kafka.offset_fetch"))
                .await
        }
        ApiKey::FindCoordinator => {
            span!("kafka.find_coordinator").in_scope(|| admin::find_coordinator(ctx, &req))
        }
        ApiKey::JoinGroup => {
            groups::join(ctx, &req)
                .instrument(span!("kafka.join_group"))
                .await
        }
        ApiKey::SyncGroup => {
            groups::sync(ctx, &req)
                .instrument(span!("kafka.sync_group"))
                .await
        }
        ApiKey::Heartbeat => span!("kafka.heartbeat").in_scope(|| groups::heartbeat(ctx, &req)),
        ApiKey::LeaveGroup => span!("kafka.leave_group").in_scope(|| groups::leave(ctx, &req)),
        ApiKey::DescribeGroups => {
            span!("kafka.describe_groups").in_scope(|| groups::describe(ctx, &req))
        }
        ApiKey::ListGroups => span!("kafka.list_groups").in_scope(|| groups::list(ctx, &req)),
        ApiKey::ApiVersions => {
            span!("kafka.api_versions").in_scope(|| api_versions(&req, ctx.cfg.sasl.is_some()))
        }
        ApiKey::CreateTopics => {
            admin::create_topics(ctx, &req)
                .instrument(span!("kafka.create_topics"))
                .await
        }
        ApiKey::DeleteTopics => {
            admin::delete_topics(ctx, &req)
                .instrument(span!("kafka.delete_topics"))
                .await
        }
        ApiKey::InitProducerId => {
            produce::init_producer_id(ctx, &req)
                .instrument(span!("kafka.init_producer_id"))
                .await
        }
        ApiKey::DescribeConfigs => {
            span!("kafka.describe_configs").in_scope(|| admin::describe_configs(ctx, &req))
        }
        ApiKey::DescribeCluster => {
            span!("kafka.describe_cluster").in_scope(|| admin::describe_cluster(ctx, &req))
        }
        _ => unsupported(&req),
    }
}

/// The advertised versions as an ApiVersions response body.
fn version_list() -> Vec<api_versions_response::ApiVersion> {
    versions(SUPPORTED.iter())
}

fn versions<'a>(
    list: impl Iterator<Item = &'a (ApiKey, i16, i16)>,
) -> Vec<api_versions_response::ApiVersion> {
    list.map(|&(k, min, max)| {
        let mut v = api_versions_response::ApiVersion::default();
        v.api_key = k as i16;
        v.min_version = min;
        v.max_version = max;
        v
    })
    .collect()
}

/// ApiVersions: the advertised ranges (with the SASL apis when the listener demands SASL).
fn api_versions(req: &Request, sasl: bool) -> Result<Reply, HandleError> {
    // The body (client software name and version) is informational; a client whose body
    // does not decode still gets the list.
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = if sasl {
        versions(SUPPORTED.iter().chain(crate::sasl::VERSIONS))
    } else {
        version_list()
    };
    respond(req, &resp)
}

/// The UNSUPPORTED_VERSION answer for an api or version this listener does not serve.
///
/// ApiVersions gets error 35 with a v0 body that still lists the supported versions (what
/// clients expect, to retry with a version they share). Other apis that `kafka-protocol` can
/// encode at that version get their response type with its top-level error code set (or, for
/// types without one, an empty response); anything else gets a response header followed by
/// the error code alone.
pub fn unsupported(req: &Request) -> Result<Reply, HandleError> {
    let key = req.key();
    if key == Some(ApiKey::ApiVersions) {
        let mut resp = ApiVersionsResponse::default();
        resp.error_code = code::UNSUPPORTED_VERSION;
        resp.api_keys = version_list();
        return Ok(Some(codec::encode_response(req.correlation_id, 0, &resp)?));
    }
    macro_rules! with_error {
        ($t:ty) => {{
            let mut r = <$t>::default();
            r.error_code = code::UNSUPPORTED_VERSION;
            respond(req, &r)
        }};
    }
    macro_rules! empty {
        ($t:ty) => {
            respond(req, &<$t>::default())
        };
    }
    if let Some(k) = key {
        let range = k.valid_versions();
        if (range.min..=range.max).contains(&req.api_version) {
            let encoded = match k {
                ApiKey::Produce => empty!(ProduceResponse),
                ApiKey::Fetch => with_error!(FetchResponse),
                ApiKey::SaslHandshake => with_error!(SaslHandshakeResponse),
                ApiKey::SaslAuthenticate => with_error!(SaslAuthenticateResponse),
                ApiKey::AddOffsetsToTxn => with_error!(AddOffsetsToTxnResponse),
                ApiKey::EndTxn => with_error!(EndTxnResponse),
                ApiKey::DescribeAcls => with_error!(DescribeAclsResponse),
                ApiKey::OffsetDelete => with_error!(OffsetDeleteResponse),
                ApiKey::ListTransactions => with_error!(ListTransactionsResponse),
                ApiKey::ConsumerGroupHeartbeat => with_error!(ConsumerGroupHeartbeatResponse),
                ApiKey::GetTelemetrySubscriptions => {
                    with_error!(GetTelemetrySubscriptionsResponse)
                }
                ApiKey::PushTelemetry => with_error!(PushTelemetryResponse),
                ApiKey::DescribeClientQuotas => with_error!(DescribeClientQuotasResponse),
                ApiKey::DeleteRecords => empty!(DeleteRecordsResponse),
                ApiKey::OffsetForLeaderEpoch => empty!(OffsetForLeaderEpochResponse),
                ApiKey::AddPartitionsToTxn => empty!(AddPartitionsToTxnResponse),
                ApiKey::TxnOffsetCommit => empty!(TxnOffsetCommitResponse),
                ApiKey::CreateAcls => empty!(CreateAclsResponse),
                ApiKey::DeleteAcls => empty!(DeleteAclsResponse),
                ApiKey::AlterConfigs => empty!(AlterConfigsResponse),
                ApiKey::IncrementalAlterConfigs => empty!(IncrementalAlterConfigsResponse),
                ApiKey::CreatePartitions => empty!(CreatePartitionsResponse),
                ApiKey::DeleteGroups => empty!(DeleteGroupsResponse),
                ApiKey::DescribeLogDirs => empty!(DescribeLogDirsResponse),
                ApiKey::DescribeProducers => empty!(DescribeProducersResponse),
                ApiKey::DescribeTransactions => empty!(DescribeTransactionsResponse),
                ApiKey::DescribeTopicPartitions => empty!(DescribeTopicPartitionsResponse),
                _ => raw_unsupported(req),
            };
            return encoded;
        }
    }
    raw_unsupported(req)
}

/// A response header followed by error code 35, for apis or versions the codec cannot
/// encode. Most responses that carry a top-level error code start with it (after the
/// throttle time in newer versions), which is the best an unknown shape can get.
fn raw_unsupported(req: &Request) -> Result<Reply, HandleError> {
    let header_version = req
        .key()
        .map(|k| k.response_header_version(req.api_version))
        .unwrap_or(0);
    Ok(Some(codec::encode_raw(
        req.correlation_id,
        header_version,
        |buf| {
            buf.put_i16(code::UNSUPPORTED_VERSION);
            Ok(())
        },
    )?))
}

/// A topic name as the codec carries it.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(kafka_protocol::protocol::StrBytes::from_string(
        s.to_owned(),
    ))
}

/// A string as the codec carries it.
pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::mem::MemBackend;

    fn ctx() -> Ctx {
        let cfg = KafkaConfig::default();
        let groups = Arc::new(Coordinator::new(crate::group::GroupLimits {
            session_min: std::time::Duration::from_millis(1),
            session_max: std::time::Duration::from_secs(60),
            initial_delay: std::time::Duration::ZERO,
        }));
        Ctx {
            backend: Arc::new(MemBackend::new()),
            cfg,
            port: 9092,
            groups,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random bodies for every served api and version: an answer or a clean
        /// "malformed" refusal, never a panic.
        #[test]
        fn test_handle_random_bodies_never_panic(
            which in 0..SUPPORTED.len(),
            version_pick in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let (key, min, max) = SUPPORTED[which];
            let version = min + (i16::from(version_pick) % (max - min + 1));
            let req = Request {
                api_key: key as i16,
                api_version: version,
                correlation_id: 1,
                client_id: None,
                client_host: String::new(),
                read_only: false,
                body: Bytes::from(body),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let ctx = ctx();
            // Long polls and group waits are bounded by the request's own (random) timeouts;
            // cap the whole call so a huge one does not stall the test.
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_millis(200), handle(&ctx, req, None)).await
            });
        }
    }

    #[test]
    fn test_supported_versions_are_within_the_codec() {
        for &(key, min, max) in SUPPORTED {
            let range = key.valid_versions();
            let low = if key == ApiKey::Produce { 3 } else { min };
            assert!(range.min <= low && max <= range.max, "{key:?} {min}..{max}");
        }
    }
}
