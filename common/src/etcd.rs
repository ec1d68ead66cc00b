//! A small typed async client of etcd's v3 API through its JSON gRPC gateway: ranges, puts,
//! deletes, transactions with compares, and leases.
//!
//! # Why the gateway and not `etcd-client`
//! The `etcd-client` crate speaks gRPC through tonic, and its build runs `tonic-prost-build`,
//! which needs `protoc` on the build machine. Kelp's quick start must work on a machine that has
//! only Rust, and serde and reqwest are already in the tree, so this module speaks the JSON
//! gateway every etcd ≥ 3.4 serves on its client port (`POST /v3/kv/range`, `/v3/kv/put`,
//! `/v3/kv/deleterange`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/revoke`). The cost is JSON instead of protobuf on the wire (and base64 for keys and
//! values), which for metadata-sized requests is noise beside etcd's own raft and fsync.
//!
//! # Wire encoding
//! The gateway maps the protobuf messages to JSON with protobuf's canonical mapping: `bytes`
//! fields (keys, values, range ends) are base64 strings, `int64`/`uint64` fields are JSON
//! strings (`"revision":"42"`), enums are their names (`"MOD"`, `"EQUAL"`), and fields at their
//! default value (0, false, empty) are left out of answers. The types here hide all of that:
//! keys are `Vec<u8>`, revisions `i64`.
//!
//! # Endpoints and retries
//! The client is built with every endpoint of the cluster and sends each call to the one that
//! answered last. A call that could not connect goes on to the next endpoint (it was never
//! sent, so that is safe for any call). A read also goes on after any other transport error
//! or a 5xx; a write does not: it may have been applied, so the error goes back to the caller
//! ([`EtcdError::Transport`]), whose compare-guarded transaction can be re-planned safely.
//!
//! Calls go through [`HttpClient`], so they are traced like every
//! other outbound call; TLS (an `https://` endpoint) uses the client configuration that client
//! was built with.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Call, ClientError, HttpClient};

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint list is empty or malformed.
    #[error("etcd endpoints: {0}")]
    Config(String),
    /// No endpoint could be reached.
    #[error("no etcd endpoint reachable ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last connection error.
        last: String,
    },
    /// etcd answered with an error (a gRPC status through the gateway).
    #[error("etcd at {endpoint} answered {status}: {message} (grpc code {code})")]
    Server {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The gRPC status code (e.g. 3 invalid argument, 11 out of range, 14 unavailable).
        code: i32,
        /// etcd's message, e.g. `etcdserver: mvcc: required revision has been compacted`.
        message: String,
    },
    /// The connection broke or timed out after the request may have been sent: a write may or
    /// may not have been applied.
    #[error("call etcd at {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: Box<ClientError>,
    },
    /// The answer was not what the gateway's contract says.
    #[error("decode the answer of etcd at {endpoint}: {message}")]
    Decode {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
}

impl EtcdError {
    /// Whether etcd refused a read at a revision it has already compacted away.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Self::Server { message, .. } if message.contains("compacted"))
    }

    /// Whether etcd refused a transaction with more operations than its `--max-txn-ops`.
    pub fn is_too_many_ops(&self) -> bool {
        matches!(self, Self::Server { message, .. } if message.contains("too many operations"))
    }

    /// Whether etcd refused a request over its `--max-request-bytes`.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::Server { message, .. } if message.contains("too large"))
    }

    /// Whether repeating the call later may succeed (unreachable, transport errors, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Transport { .. } => true,
            Self::Server { status, .. } => *status >= 500,
            Self::Config(_) | Self::Decode { .. } => false,
        }
    }
}

/// Serde of `bytes` fields: base64 strings, absent meaning empty.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Serde of `int64` fields: JSON strings (a number is accepted too), absent meaning 0.
mod i64s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Option::<Num>::deserialize(d)? {
            None => Ok(0),
            Some(Num::N(n)) => Ok(n),
            Some(Num::S(s)) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Serde of `uint64` fields (ids, terms): like [`i64s`].
mod u64s {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Option::<Num>::deserialize(d)? {
            None => Ok(0),
            Some(Num::N(n)) => Ok(n),
            Some(Num::S(s)) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The header of every answer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[serde(default, with = "u64s")]
    pub cluster_id: u64,
    /// The member that answered.
    #[serde(default, with = "u64s")]
    pub member_id: u64,
    /// The store's revision when the request was applied (for a read at a revision, the
    /// store's current revision, not the one read).
    #[serde(default, with = "i64s")]
    pub revision: i64,
    /// The raft term.
    #[serde(default, with = "u64s")]
    pub raft_term: u64,
}

/// One key and its value, with its revisions.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    #[serde(default, with = "b64")]
    pub key: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    #[serde(default, with = "i64s")]
    pub create_revision: i64,
    /// The revision of the key's last modification.
    #[serde(default, with = "i64s")]
    pub mod_revision: i64,
    /// The number of modifications since its creation (1 for a new key).
    #[serde(default, with = "i64s")]
    pub version: i64,
    /// The value.
    #[serde(default, with = "b64")]
    pub value: Vec<u8>,
    /// The lease the key is attached to (0 for none).
    #[serde(default, with = "i64s")]
    pub lease: i64,
}

/// The order of a range's answer.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortOrder {
    /// etcd's default (by key, ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a range is sorted by.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// A read of one key or a range of keys.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RangeRequest {
    /// The key, or the start of the range.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// The exclusive end of the range; empty for the single key `key`, `[0]` for every key
    /// from `key` on.
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    /// At most this many keys (0: no limit).
    #[serde(with = "i64s", skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// Read the store as of this revision (0: the latest).
    #[serde(with = "i64s", skip_serializing_if = "is_zero")]
    pub revision: i64,
    /// The order of the answer.
    #[serde(skip_serializing_if = "is_default_order")]
    pub sort_order: SortOrder,
    /// What the answer is sorted by.
    #[serde(skip_serializing_if = "is_default_target")]
    pub sort_target: SortTarget,
    /// Serve from the answering member's state without a quorum read (may be stale).
    #[serde(skip_serializing_if = "is_false")]
    pub serializable: bool,
    /// Only keys, no values.
    #[serde(skip_serializing_if = "is_false")]
    pub keys_only: bool,
    /// Only the count.
    #[serde(skip_serializing_if = "is_false")]
    pub count_only: bool,
}

fn is_default_order(o: &SortOrder) -> bool {
    *o == SortOrder::None
}

fn is_default_target(t: &SortTarget) -> bool {
    *t == SortTarget::Key
}

impl RangeRequest {
    /// A read of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// A read of every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self {
            key,
            range_end,
            ..Self::default()
        }
    }

    /// A read of the keys in `[start, end)`.
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: start.into(),
            range_end: end.into(),
            ..Self::default()
        }
    }

    /// At most `limit` keys.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// As of `revision`.
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Sorted by `target` in `order`.
    pub fn sorted(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort_target = target;
        self.sort_order = order;
        self
    }
}

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RangeResponse {
    /// The header; `revision` is the store's current revision.
    #[serde(default)]
    pub header: ResponseHeader,
    /// The keys read.
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    /// Whether more keys are in the range than `limit` returned.
    #[serde(default)]
    pub more: bool,
    /// The number of keys in the range.
    #[serde(default, with = "i64s")]
    pub count: i64,
}

/// A write of one key.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// Attach the key to this lease (0: none).
    #[serde(with = "i64s", skip_serializing_if = "is_zero")]
    pub lease: i64,
    /// Answer the previous value.
    #[serde(skip_serializing_if = "is_false")]
    pub prev_kv: bool,
}

impl PutRequest {
    /// A put of `value` at `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    /// Attached to `lease`.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }
}

/// The answer to a [`PutRequest`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct PutResponse {
    /// The header; `revision` is the put's revision.
    #[serde(default)]
    pub header: ResponseHeader,
    /// The previous value, when asked for and present.
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

/// A deletion of one key or a range.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The key, or the start of the range.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// The exclusive end of the range; empty for the single key.
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    /// Answer the deleted values.
    #[serde(skip_serializing_if = "is_false")]
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A deletion of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// A deletion of every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self {
            key,
            range_end,
            prev_kv: false,
        }
    }
}

/// The answer to a [`DeleteRangeRequest`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The header.
    #[serde(default)]
    pub header: ResponseHeader,
    /// How many keys were deleted.
    #[serde(default, with = "i64s")]
    pub deleted: i64,
    /// The deleted values, when asked for.
    #[serde(default)]
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompareOp {
    /// `=`.
    Equal,
    /// `>`.
    Greater,
    /// `<`.
    Less,
    /// `!=`.
    NotEqual,
}

/// The field of a key a compare looks at, with the value it is compared to. An absent key has
/// 0 for every revision and version (so `CreateRevision(0)` with [`CompareOp::Equal`] means
/// "absent"), and fails every [`CompareTarget::Value`] compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The number of modifications since creation.
    Version(i64),
    /// The revision that created the key.
    CreateRevision(i64),
    /// The revision of the last modification.
    ModRevision(i64),
    /// The value.
    Value(Vec<u8>),
}

/// One condition of a [`TxnRequest`]. With a `range_end`, it must hold for every key of
/// `[key, range_end)`; an empty range compares as one absent key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key (or the start of the range).
    pub key: Vec<u8>,
    /// The exclusive end of the range; empty for the single key.
    pub range_end: Vec<u8>,
    /// The relation.
    pub op: CompareOp,
    /// The field and the value.
    pub target: CompareTarget,
}

impl Compare {
    /// `key`'s `target` field `op` the target's value.
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Self {
            key: key.into(),
            range_end: Vec::new(),
            op,
            target,
        }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::CreateRevision(0))
    }

    /// The key was last modified at `rev` (so it exists and is unchanged since).
    pub fn unchanged(key: impl Into<Vec<u8>>, rev: i64) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(rev))
    }

    /// Applies to every key in `[self.key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = end.into();
        self
    }
}

impl Serialize for Compare {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("key", &STANDARD.encode(&self.key))?;
        if !self.range_end.is_empty() {
            m.serialize_entry("range_end", &STANDARD.encode(&self.range_end))?;
        }
        m.serialize_entry("result", &self.op)?;
        match &self.target {
            CompareTarget::Version(v) => {
                m.serialize_entry("target", "VERSION")?;
                m.serialize_entry("version", &v.to_string())?;
            }
            CompareTarget::CreateRevision(v) => {
                m.serialize_entry("target", "CREATE")?;
                m.serialize_entry("create_revision", &v.to_string())?;
            }
            CompareTarget::ModRevision(v) => {
                m.serialize_entry("target", "MOD")?;
                m.serialize_entry("mod_revision", &v.to_string())?;
            }
            CompareTarget::Value(v) => {
                m.serialize_entry("target", "VALUE")?;
                m.serialize_entry("value", &STANDARD.encode(v))?;
            }
        }
        m.end()
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub enum TxnOp {
    /// A read.
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    /// A write.
    #[serde(rename = "request_put")]
    Put(PutRequest),
    /// A deletion.
    #[serde(rename = "request_delete_range")]
    DeleteRange(DeleteRangeRequest),
}

/// The answer to one [`TxnOp`], in the order of the branch that ran.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// Of a [`TxnOp::Range`].
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    /// Of a [`TxnOp::Put`].
    #[serde(rename = "response_put")]
    Put(PutResponse),
    /// Of a [`TxnOp::DeleteRange`].
    #[serde(rename = "response_delete_range")]
    DeleteRange(DeleteRangeResponse),
}

/// An atomic transaction: if every compare holds, `success` runs, else `failure`. etcd limits
/// each of the three lists to `--max-txn-ops` (128 by default) and the request to
/// `--max-request-bytes` (1.5 MiB by default); a key may be written at most once per branch.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TxnRequest {
    /// The conditions (all must hold).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Compare>,
    /// The operations when they do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub success: Vec<TxnOp>,
    /// The operations when they do not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<TxnOp>,
}

/// The answer to a [`TxnRequest`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct TxnResponse {
    /// The header; `revision` is the transaction's revision if it wrote.
    #[serde(default)]
    pub header: ResponseHeader,
    /// Whether the compares held (and `success` ran).
    #[serde(default)]
    pub succeeded: bool,
    /// The answers of the branch that ran.
    #[serde(default)]
    pub responses: Vec<TxnOpResponse>,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub id: i64,
    /// Its time to live, in seconds.
    pub ttl: i64,
}

#[derive(Serialize)]
struct LeaseGrantRequest {
    #[serde(rename = "TTL", with = "i64s")]
    ttl: i64,
    #[serde(rename = "ID", with = "i64s")]
    id: i64,
}

#[derive(Deserialize)]
struct LeaseGrantResponse {
    #[serde(rename = "ID", default, with = "i64s")]
    id: i64,
    #[serde(rename = "TTL", default, with = "i64s")]
    ttl: i64,
    #[serde(default)]
    error: String,
}

#[derive(Serialize)]
struct LeaseIdRequest {
    #[serde(rename = "ID", with = "i64s")]
    id: i64,
}

/// A keepalive answer arrives wrapped in `result` (it is a gRPC stream on the gateway).
#[derive(Deserialize)]
struct KeepAliveEnvelope {
    #[serde(default)]
    result: Option<KeepAliveResult>,
}

#[derive(Deserialize)]
struct KeepAliveResult {
    #[serde(rename = "TTL", default, with = "i64s")]
    ttl: i64,
}

/// The body of a gateway error.
#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff incremented and what follows dropped; `[0]` (every key
/// from the start on) when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// Whether a call may be repeated on another endpoint after an error that is not a failure to
/// connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// The client: a set of endpoints and the traced HTTP client calls go through.
#[derive(Debug)]
pub struct EtcdClient {
    http: HttpClient,
    endpoints: Vec<String>,
    /// The endpoint that answered last (calls start there).
    current: AtomicUsize,
}

impl EtcdClient {
    /// A client of the cluster at `endpoints` (`host:port`, `http://host:port` or
    /// `https://host:port`), calling through `http`. `http` should not retry on its own
    /// ([`HttpClient::with_attempts`] `(1)`): this client chooses what to repeat, and where.
    pub fn new(endpoints: &[String], http: HttpClient) -> Result<Self, EtcdError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(crate::client::base_url)
            .collect();
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoint given".to_owned()));
        }
        Ok(Self {
            http,
            endpoints,
            current: AtomicUsize::new(0),
        })
    }

    /// The client a Kelp service uses for its `--etcd-endpoints`: one attempt per call (this
    /// client chooses what to repeat) with `timeout` each, speaking TLS trusting `--tls-ca`
    /// when an endpoint is `https://`.
    pub fn for_service(
        endpoints: &[String],
        security: &crate::security::Security,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut http = HttpClient::new(timeout).with_attempts(1);
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            let tls = security
                .client_tls()?
                .context("https:// etcd endpoints need --tls-ca")?;
            http = http.with_tls(tls);
        }
        Self::new(endpoints, http).context("configure the etcd client")
    }

    /// The endpoints, as base URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Reads a key or a range.
    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.call("/v3/kv/range", "POST /v3/kv/range", req, Kind::Read)
            .await
    }

    /// Reads one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, EtcdError> {
        Ok(self.range(&RangeRequest::key(key)).await?.kvs.pop())
    }

    /// Writes one key.
    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.call("/v3/kv/put", "POST /v3/kv/put", req, Kind::Write)
            .await
    }

    /// Deletes a key or a range.
    pub async fn delete_range(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.call(
            "/v3/kv/deleterange",
            "POST /v3/kv/deleterange",
            req,
            Kind::Write,
        )
        .await
    }

    /// Runs a transaction. A transaction with only range operations is a read, repeated on
    /// another endpoint after a transport error; any other is sent to one endpoint only
    /// (unless it could not connect).
    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let read_only = req
            .success
            .iter()
            .chain(&req.failure)
            .all(|op| matches!(op, TxnOp::Range(_)));
        let kind = if read_only { Kind::Read } else { Kind::Write };
        self.call("/v3/kv/txn", "POST /v3/kv/txn", req, kind).await
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<Lease, EtcdError> {
        let r: LeaseGrantResponse = self
            .call(
                "/v3/lease/grant",
                "POST /v3/lease/grant",
                &LeaseGrantRequest { ttl, id: 0 },
                Kind::Write,
            )
            .await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Server {
                endpoint: self.endpoints[self.current.load(Ordering::Relaxed)].clone(),
                status: 200,
                code: 0,
                message: r.error,
            });
        }
        Ok(Lease {
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Renews a lease once; returns its new time to live in seconds, or `None` if it has
    /// expired (or never existed).
    pub async fn lease_keepalive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let r: KeepAliveEnvelope = self
            .call(
                "/v3/lease/keepalive",
                "POST /v3/lease/keepalive",
                &LeaseIdRequest { id },
                Kind::Read,
            )
            .await?;
        Ok(r.result.map(|r| r.ttl).filter(|ttl| *ttl > 0))
    }

    /// Revokes a lease, deleting the keys attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: serde_json::Value = self
            .call(
                "/v3/lease/revoke",
                "POST /v3/lease/revoke",
                &LeaseIdRequest { id },
                Kind::Write,
            )
            .await?;
        Ok(())
    }

    /// Sends `body` to `path` on the current endpoint, going on to the next ones as the module
    /// doc says.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        route: &'static str,
        body: &B,
        kind: Kind,
    ) -> Result<T, EtcdError> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last_error = None;
        for i in 0..n {
            let at = (first + i) % n;
            let endpoint = &self.endpoints[at];
            let call = Call::new(Method::POST, format!("{endpoint}{path}"), route)
                .json(body)
                .idempotent(false);
            match self.http.bytes(call).await {
                Ok(bytes) => {
                    self.current.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    });
                }
                Err(ClientError::Api {
                    status, message, ..
                }) => {
                    let e = match serde_json::from_str::<GatewayError>(&message) {
                        Ok(g) => EtcdError::Server {
                            endpoint: endpoint.clone(),
                            status: status.as_u16(),
                            code: g.code,
                            message: if g.message.is_empty() {
                                g.error
                            } else {
                                g.message
                            },
                        },
                        Err(_) => EtcdError::Server {
                            endpoint: endpoint.clone(),
                            status: status.as_u16(),
                            code: 0,
                            message,
                        },
                    };
                    if kind == Kind::Read && status.is_server_error() && i + 1 < n {
                        tracing::debug!(endpoint = %endpoint, error = %e, "etcd read failed, trying the next endpoint");
                        last_error = Some(e.to_string());
                        continue;
                    }
                    return Err(e);
                }
                Err(ClientError::Transport { url, source }) => {
                    let connect = source.is_connect();
                    let e = ClientError::Transport { url, source };
                    if connect || kind == Kind::Read {
                        tracing::debug!(endpoint = %endpoint, error = %e, "etcd endpoint failed, trying the next");
                        last_error = Some(e.to_string());
                        continue;
                    }
                    return Err(EtcdError::Transport {
                        endpoint: endpoint.clone(),
                        source: Box::new(e),
                    });
                }
                Err(e @ ClientError::Decode { .. }) => {
                    return Err(EtcdError::Decode {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints.join(","),
            last: last_error.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_etcd_range_request_encodes_base64_and_string_int64() {
        let r = RangeRequest::prefix(b"/k/".to_vec())
            .with_limit(10)
            .at_revision(42)
            .sorted(SortTarget::Key, SortOrder::Descend);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"key": "L2sv", "range_end": "L2sw", "limit": "10", "revision": "42",
                   "sort_order": "DESCEND"})
        );
        // Defaults are left out, as the gateway's own encoder does.
        assert_eq!(
            serde_json::to_value(RangeRequest::key(b"a".to_vec())).unwrap(),
            json!({"key": "YQ=="})
        );
    }

    #[test]
    fn test_etcd_prefix_end() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"e/a\0"), b"e/a\x01");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn test_etcd_txn_request_encodes_compares_and_ops() {
        let t = TxnRequest {
            compare: vec![
                Compare::absent(b"a".to_vec()),
                Compare::unchanged(b"b".to_vec(), 7),
                Compare::new(
                    b"c".to_vec(),
                    CompareOp::Less,
                    CompareTarget::ModRevision(9),
                )
                .with_range_end(b"d".to_vec()),
                Compare::new(
                    b"v".to_vec(),
                    CompareOp::NotEqual,
                    CompareTarget::Value(b"x".to_vec()),
                ),
                Compare::new(b"w".to_vec(), CompareOp::Greater, CompareTarget::Version(2)),
            ],
            success: vec![
                TxnOp::Put(PutRequest::new(b"a".to_vec(), b"1".to_vec()).with_lease(5)),
                TxnOp::DeleteRange(DeleteRangeRequest::key(b"b".to_vec())),
            ],
            failure: vec![TxnOp::Range(RangeRequest::key(b"a".to_vec()))],
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({
                "compare": [
                    {"key": "YQ==", "result": "EQUAL", "target": "CREATE", "create_revision": "0"},
                    {"key": "Yg==", "result": "EQUAL", "target": "MOD", "mod_revision": "7"},
                    {"key": "Yw==", "range_end": "ZA==", "result": "LESS", "target": "MOD", "mod_revision": "9"},
                    {"key": "dg==", "result": "NOT_EQUAL", "target": "VALUE", "value": "eA=="},
                    {"key": "dw==", "result": "GREATER", "target": "VERSION", "version": "2"},
                ],
                "success": [
                    {"request_put": {"key": "YQ==", "value": "MQ==", "lease": "5"}},
                    {"request_delete_range": {"key": "Yg=="}},
                ],
                "failure": [{"request_range": {"key": "YQ=="}}],
            })
        );
    }

    #[test]
    fn test_etcd_responses_decode_string_int64_and_omitted_defaults() {
        let body = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1","value":"Yg=="}],"count":"1"}"#;
        let r: RangeResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.header.revision, 2);
        assert_eq!(r.header.cluster_id, 324952591200643719);
        assert_eq!(r.count, 1);
        assert!(!r.more);
        assert_eq!(
            r.kvs,
            [KeyValue {
                key: b"a".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"b".to_vec(),
                lease: 0,
            }]
        );
        // An empty range: no kvs, no count; a failed txn: no `succeeded`.
        let r: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"9"}}"#).unwrap();
        assert!(r.kvs.is_empty() && r.count == 0);
        let t: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"3"},"responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"YQ==","value":""}],"count":"1"}},{"response_put":{"header":{}}},{"response_delete_range":{"header":{},"deleted":"2"}}]}"#,
        )
        .unwrap();
        assert!(!t.succeeded);
        assert!(matches!(&t.responses[0], TxnOpResponse::Range(r) if r.kvs[0].value.is_empty()));
        assert!(matches!(
            &t.responses[2],
            TxnOpResponse::DeleteRange(d) if d.deleted == 2
        ));
        // Plain JSON numbers are accepted too.
        let h: ResponseHeader = serde_json::from_str(r#"{"revision":5}"#).unwrap();
        assert_eq!(h.revision, 5);
    }
}

/// Tests against a real etcd (see `testkit::etcd`).
#[cfg(test)]
mod live_tests {
    use std::time::Duration;

    use testkit::etcd::Etcd;

    use super::*;

    fn client(endpoints: &[String]) -> EtcdClient {
        EtcdClient::new(
            endpoints,
            HttpClient::new(Duration::from_secs(5)).with_attempts(1),
        )
        .unwrap()
    }

    fn put(k: &str, v: &str) -> PutRequest {
        PutRequest::new(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn keys(r: &RangeResponse) -> Vec<String> {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn test_etcd_put_range_prefix_limit_sort_and_revisions() {
        let etcd = Etcd::start();
        let c = client(&[etcd.endpoint().to_owned()]);
        let first = c.put(&put("/p/a", "1")).await.unwrap().header.revision;
        c.put(&put("/p/b", "2")).await.unwrap();
        c.put(&put("/p/c", "3")).await.unwrap();
        c.put(&put("/q/a", "x")).await.unwrap();
        // Binary keys and values survive base64.
        c.put(&PutRequest::new(b"/p/\0\xff".to_vec(), vec![0u8, 1, 255]))
            .await
            .unwrap();
        let all = c
            .range(&RangeRequest::prefix(b"/p/".to_vec()))
            .await
            .unwrap();
        assert_eq!(all.count, 4);
        assert_eq!(all.kvs[0].key, b"/p/\0\xff");
        assert_eq!(all.kvs[0].value, [0, 1, 255]);
        assert_eq!(keys(&all)[1..], ["/p/a", "/p/b", "/p/c"]);
        let page = c
            .range(
                &RangeRequest::prefix(b"/p/".to_vec())
                    .with_limit(2)
                    .sorted(SortTarget::Key, SortOrder::Descend),
            )
            .await
            .unwrap();
        assert_eq!(keys(&page), ["/p/c", "/p/b"]);
        assert!(page.more);
        let span = c
            .range(&RangeRequest::range(b"/p/b".to_vec(), b"/q/b".to_vec()))
            .await
            .unwrap();
        assert_eq!(keys(&span), ["/p/b", "/p/c", "/q/a"]);
        // A read at the first put's revision sees only that key, with its revisions.
        c.put(&put("/p/a", "changed")).await.unwrap();
        let old = c
            .range(&RangeRequest::prefix(b"/p/".to_vec()).at_revision(first))
            .await
            .unwrap();
        assert_eq!(keys(&old), ["/p/a"]);
        assert_eq!(old.kvs[0].value, b"1");
        assert_eq!(old.kvs[0].create_revision, first);
        assert_eq!(old.kvs[0].mod_revision, first);
        let now = c.get(b"/p/a".to_vec()).await.unwrap().unwrap();
        assert_eq!((now.value.as_slice(), now.version), (&b"changed"[..], 2));
        assert!(c.get(b"/nope".to_vec()).await.unwrap().is_none());
        // A future revision is an error etcd names.
        let err = c
            .range(&RangeRequest::key(b"/p/a".to_vec()).at_revision(1_000_000))
            .await
            .unwrap_err();
        assert!(matches!(err, EtcdError::Server { code: 11, .. }), "{err}");
        let d = c
            .delete_range(&DeleteRangeRequest::prefix(b"/p/".to_vec()))
            .await
            .unwrap();
        assert_eq!(d.deleted, 4);
        assert!(keys(&c.range(&RangeRequest::prefix(b"/".to_vec())).await.unwrap()) == ["/q/a"]);
    }

    #[tokio::test]
    async fn test_etcd_txn_compares_pick_the_branch() {
        let etcd = Etcd::start();
        let c = client(&[etcd.endpoint().to_owned()]);
        let rev = c.put(&put("k", "v1")).await.unwrap().header.revision;
        let run = |compare: Vec<Compare>| {
            let c = &c;
            async move {
                c.txn(&TxnRequest {
                    compare,
                    success: vec![TxnOp::Range(RangeRequest::key(b"k".to_vec()))],
                    failure: vec![],
                })
                .await
                .unwrap()
                .succeeded
            }
        };
        let k = || b"k".to_vec();
        use CompareOp::*;
        use CompareTarget::*;
        for (cmp, want) in [
            (Compare::unchanged(k(), rev), true),
            (Compare::unchanged(k(), rev - 1), false),
            (Compare::absent(k()), false),
            (Compare::absent(b"other".to_vec()), true),
            (Compare::new(k(), Equal, Value(b"v1".to_vec())), true),
            (Compare::new(k(), NotEqual, Value(b"v1".to_vec())), false),
            (Compare::new(k(), Equal, Version(1)), true),
            (Compare::new(k(), Greater, Version(1)), false),
            (Compare::new(k(), Less, Version(2)), true),
            (Compare::new(k(), Greater, CreateRevision(rev - 1)), true),
            (Compare::new(k(), Less, ModRevision(rev)), false),
            // A value compare on an absent key fails.
            (
                Compare::new(b"other".to_vec(), NotEqual, Value(b"x".to_vec())),
                false,
            ),
            // A range compare holds for every key in it; an empty range is one absent key.
            (
                Compare::new(b"a".to_vec(), Less, ModRevision(rev + 1))
                    .with_range_end(b"z".to_vec()),
                true,
            ),
            (
                Compare::new(b"a".to_vec(), Less, ModRevision(rev)).with_range_end(b"z".to_vec()),
                false,
            ),
            (
                Compare::absent(b"x".to_vec()).with_range_end(b"y".to_vec()),
                true,
            ),
        ] {
            assert_eq!(run(vec![cmp.clone()]).await, want, "{cmp:?}");
        }
        // Success writes atomically; failure runs the else branch and writes nothing.
        let t = c
            .txn(&TxnRequest {
                compare: vec![Compare::unchanged(k(), rev), Compare::absent(b"n".to_vec())],
                success: vec![
                    TxnOp::Put(put("k", "v2")),
                    TxnOp::Put(put("n", "new")),
                    TxnOp::DeleteRange(DeleteRangeRequest::key(b"gone".to_vec())),
                ],
                failure: vec![TxnOp::Range(RangeRequest::key(k()))],
            })
            .await
            .unwrap();
        assert!(t.succeeded);
        assert!(matches!(t.responses[0], TxnOpResponse::Put(_)));
        let t = c
            .txn(&TxnRequest {
                compare: vec![Compare::unchanged(k(), rev)],
                success: vec![TxnOp::Put(put("k", "v3")), TxnOp::Put(put("m", "x"))],
                failure: vec![TxnOp::Range(RangeRequest::key(k()))],
            })
            .await
            .unwrap();
        assert!(!t.succeeded);
        match &t.responses[..] {
            [TxnOpResponse::Range(r)] => assert_eq!(r.kvs[0].value, b"v2"),
            other => panic!("{other:?}"),
        }
        assert!(c.get(b"m".to_vec()).await.unwrap().is_none());
        // Over etcd's default limit of 128 operations: refused, named.
        let too_many = TxnRequest {
            success: (0..129)
                .map(|i| TxnOp::Put(put(&format!("many/{i}"), "x")))
                .collect(),
            ..TxnRequest::default()
        };
        let err = c.txn(&too_many).await.unwrap_err();
        assert!(err.is_too_many_ops(), "{err}");
    }

    #[tokio::test]
    async fn test_etcd_leases_expire_keys_on_revoke() {
        let etcd = Etcd::start();
        let c = client(&[etcd.endpoint().to_owned()]);
        let lease = c.lease_grant(30).await.unwrap();
        assert!(lease.id != 0 && lease.ttl == 30);
        c.put(&put("leased", "x").with_lease(lease.id))
            .await
            .unwrap();
        assert_eq!(
            c.get(b"leased".to_vec()).await.unwrap().unwrap().lease,
            lease.id
        );
        let ttl = c.lease_keepalive(lease.id).await.unwrap();
        assert!(ttl.is_some_and(|t| t > 0), "{ttl:?}");
        c.lease_revoke(lease.id).await.unwrap();
        assert!(c.get(b"leased".to_vec()).await.unwrap().is_none());
        assert_eq!(c.lease_keepalive(lease.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn test_etcd_client_fails_over_to_the_next_endpoint() {
        let etcd = Etcd::start();
        // Nothing listens on the first endpoint: reads and writes go on to the second.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let c = client(&[dead.clone(), etcd.endpoint().to_owned()]);
        c.put(&put("f", "1")).await.unwrap();
        assert!(c.get(b"f".to_vec()).await.unwrap().is_some());
        let only_dead = client(&[dead]);
        let err = only_dead.get(b"f".to_vec()).await.unwrap_err();
        assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
        assert!(matches!(
            EtcdClient::new(&[" ".to_owned()], HttpClient::new(Duration::from_secs(1))),
            Err(EtcdError::Config(_))
        ));
    }
}
