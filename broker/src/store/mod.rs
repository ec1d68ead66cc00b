//! Where topics, segments and group offsets are kept: the [`Store`] trait, its HTTP
//! implementation over master, volume servers and filer ([`http::HttpStore`]) and an in-memory
//! one for tests ([`mem::MemStore`]).
//!
//! Filer layout, under `/topics/<ns>/<topic>/`:
//! - `topic.conf`: `extended.partitions` holds the partition count (created with
//!   `Expect::Absent`, so two brokers cannot create a topic differently);
//! - `p<partition:04>` (the directory entry itself): `extended.owner_epoch` and
//!   `extended.owner`, the partition's owner. A broker takes a partition by raising the epoch
//!   with a version precondition before it recovers it, and commits every segment with the
//!   filer's `parent_expect` on that epoch: a write of the directory excludes every write
//!   below it, so once another broker took over, a commit under the old epoch is refused
//!   (`fenced`) atomically, never interleaved. (The design's separate `owner` entry could not
//!   be checked atomically with a segment commit; the directory can.)
//! - `p<partition:04>/<first_offset:020>.seg`: one entry per segment, its one chunk the
//!   segment on a volume, `extended` = `offset_min`, `offset_max` (inclusive), `record_count`,
//!   `ts_min`, `ts_max` and, when traced, `trace_id` of the flush;
//! - `groups/<group>/p<partition:04>`: a consumer group's committed offset in `extended.offset`.
//!
//! Outside topics, `/broker/ids/<sequence>` holds the next unreserved id of a sequence (Kafka
//! producer ids) in `extended.next`, advanced with a version precondition.

pub mod http;
pub mod mem;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use common::ids::FileId;
use futures::future::BoxFuture;

/// A topic's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey {
    /// Namespace.
    pub ns: String,
    /// Topic name.
    pub name: String,
}

impl TopicKey {
    /// A key from its parts.
    pub fn new(ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            ns: ns.into(),
            name: name.into(),
        }
    }

    /// The topic's directory in the filer.
    pub fn dir(&self) -> String {
        format!("/topics/{}/{}", self.ns, self.name)
    }

    /// The directory of a partition's segments.
    pub fn partition_dir(&self, partition: u32) -> String {
        format!("{}/p{partition:04}", self.dir())
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

/// A topic's stored configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConf {
    /// The topic.
    pub key: TopicKey,
    /// Number of partitions.
    pub partitions: u32,
}

/// What creating a topic found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic was created.
    Created,
    /// It existed already, with this configuration.
    Exists(TopicConf),
}

/// Where the master said to write a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The file id.
    pub fid: FileId,
    /// The volume server.
    pub url: String,
}

/// A segment written to a volume server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    /// Its file id.
    pub fid: FileId,
    /// Bytes stored.
    pub size: u64,
    /// Its ETag.
    pub etag: String,
}

/// Everything a segment's filer entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// The topic.
    pub topic: TopicKey,
    /// The partition.
    pub partition: u32,
    /// First offset.
    pub offset_min: u64,
    /// Last offset (inclusive).
    pub offset_max: u64,
    /// Smallest record timestamp.
    pub ts_min: u64,
    /// Largest record timestamp.
    pub ts_max: u64,
    /// Trace id of the flush that wrote it.
    pub trace_id: Option<String>,
    /// The chunk holding it.
    pub chunk: ChunkRef,
    /// The owner epoch it is written under (see [`Store::take_partition`]).
    pub epoch: u64,
}

impl SegmentMeta {
    /// The entry's path: `/topics/<ns>/<topic>/p<partition:04>/<first_offset:020>.seg`.
    pub fn path(&self) -> String {
        format!(
            "{}/{}",
            self.topic.partition_dir(self.partition),
            segment_name(self.offset_min)
        )
    }

    /// The `extended` attributes of the entry.
    pub fn extended(&self) -> BTreeMap<String, String> {
        let mut ext = BTreeMap::new();
        ext.insert("offset_min".to_owned(), self.offset_min.to_string());
        ext.insert("offset_max".to_owned(), self.offset_max.to_string());
        ext.insert(
            "record_count".to_owned(),
            (self.offset_max - self.offset_min + 1).to_string(),
        );
        ext.insert("ts_min".to_owned(), self.ts_min.to_string());
        ext.insert("ts_max".to_owned(), self.ts_max.to_string());
        if let Some(t) = &self.trace_id {
            ext.insert("trace_id".to_owned(), t.clone());
        }
        ext.insert("epoch".to_owned(), self.epoch.to_string());
        ext
    }
}

/// The file name of the segment starting at `first_offset`.
pub fn segment_name(first_offset: u64) -> String {
    format!("{first_offset:020}.seg")
}

/// A stored segment, as its entry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// First offset.
    pub offset_min: u64,
    /// Last offset (inclusive).
    pub offset_max: u64,
    /// The chunk holding it.
    pub fid: FileId,
    /// Its size in bytes.
    pub size: u64,
    /// Timestamp (ms) of its newest record: retention by time deletes it once that is old.
    pub ts_max: u64,
}

impl SegmentRef {
    /// One past the last offset.
    pub fn end(&self) -> u64 {
        self.offset_max + 1
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A dependency could not be reached or answered with an error.
    #[error("{what}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// The client error.
        source: common::client::ClientError,
    },
    /// The object exists with different content.
    #[error("{0}")]
    Conflict(String),
    /// Another broker took the partition over: this one may no longer write it.
    #[error("{0}")]
    Fenced(String),
    /// Stored metadata or data is malformed.
    #[error("{0}")]
    Corrupt(String),
    /// Any other failure (used by test stores).
    #[error("{0}")]
    Other(String),
}

/// A future returned by a [`Store`].
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// The broker's durable storage.
pub trait Store: Send + Sync + 'static {
    /// Asks the master for a file id to write a segment to.
    fn assign(&self) -> StoreFuture<'_, Assignment>;

    /// Writes a segment where `assignment` says, fsynced before it answers.
    fn write<'a>(&'a self, assignment: &'a Assignment, data: Bytes) -> StoreFuture<'a, ChunkRef>;

    /// Takes ownership of a partition for `owner`: raises its owner epoch (durably, with a
    /// precondition, so two brokers never get the same epoch) and returns the new epoch.
    /// Segment commits of any older epoch are refused from then on.
    fn take_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        owner: &'a str,
    ) -> StoreFuture<'a, u64>;

    /// A partition's owner as [`Store::take_partition`] recorded it (empty once released) and
    /// its epoch; `None` while no broker ever took it.
    fn partition_owner<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<(String, u64)>>;

    /// Records that the owner at `epoch` gave the partition up (everything it accepted is
    /// durable), so another broker may take it without waiting for this one's lease to lapse.
    /// Does nothing when the epoch moved on (someone took it already).
    fn release_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        epoch: u64,
    ) -> StoreFuture<'a, ()>;

    /// Creates a segment's entry (durably), unless the partition was taken over since
    /// `meta.epoch` ([`StoreError::Fenced`]). Idempotent: when the entry already exists with
    /// the same chunk (a retry after a lost answer) this succeeds; with another chunk it is a
    /// [`StoreError::Conflict`].
    fn commit_segment<'a>(&'a self, meta: &'a SegmentMeta) -> StoreFuture<'a, ()>;

    /// The segment with the smallest first offset.
    fn first_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>>;

    /// The segment with the greatest first offset.
    fn last_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>>;

    /// The segment with the greatest first offset ≤ `offset`.
    fn find_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
    ) -> StoreFuture<'a, Option<SegmentRef>>;

    /// A segment's bytes.
    fn read_segment<'a>(&'a self, seg: &'a SegmentRef) -> StoreFuture<'a, Bytes>;

    /// Up to `limit` segments of a partition in offset order, from the first whose first
    /// offset is ≥ `from`.
    fn list_segments<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        from: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<SegmentRef>>;

    /// Deletes a segment's entry (durably); its chunk is then deleted from its volume by the
    /// filer's chunk collector, and vacuum gives the space back. An absent entry is no error.
    fn delete_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        seg: &'a SegmentRef,
    ) -> StoreFuture<'a, ()>;

    /// Every topic's configuration.
    fn list_topics(&self) -> StoreFuture<'_, Vec<TopicConf>>;

    /// Creates a topic's configuration unless one exists.
    fn create_topic<'a>(&'a self, conf: &'a TopicConf) -> StoreFuture<'a, CreateOutcome>;

    /// Deletes a topic's configuration, segment entries and group offsets (durably; the
    /// filer then deletes the segments' chunks). Deleting a missing topic succeeds.
    fn delete_topic<'a>(&'a self, topic: &'a TopicKey) -> StoreFuture<'a, ()>;

    /// Stores a consumer group's offset of one partition (durably) and returns the offset
    /// now stored: a commit below the stored offset keeps the stored one unless `reset`.
    /// Read-check-write under a version precondition, so concurrent or late (retried)
    /// commits never move the offset backwards.
    fn put_group_offset<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
        reset: bool,
    ) -> StoreFuture<'a, u64>;

    /// A consumer group's committed offsets of `topic`, by partition.
    fn group_offsets<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
    ) -> StoreFuture<'a, Vec<(u32, u64)>>;

    /// Reserves `count` ids of the sequence `name` durably and returns the first: no id is
    /// ever returned twice, across crashes too (an unanswered reservation is skipped).
    fn reserve_ids<'a>(&'a self, name: &'a str, count: u64) -> StoreFuture<'a, u64>;
}

/// Parses a segment entry's name and attributes into a [`SegmentRef`].
pub fn parse_segment_entry(entry: &common::api::filer::Entry) -> Result<SegmentRef, StoreError> {
    let path = &entry.full_path;
    let corrupt = |what: &str| StoreError::Corrupt(format!("segment entry {path}: {what}"));
    let num = |key: &str| -> Result<u64, StoreError> {
        entry
            .extended
            .get(key)
            .ok_or_else(|| corrupt(&format!("missing extended.{key}")))?
            .parse::<u64>()
            .map_err(|_| corrupt(&format!("extended.{key} is not a number")))
    };
    let offset_min = num("offset_min")?;
    let offset_max = num("offset_max")?;
    if offset_max < offset_min || offset_max == u64::MAX {
        return Err(corrupt("offset_max below offset_min"));
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    if name != segment_name(offset_min) {
        return Err(corrupt("name does not match offset_min"));
    }
    let chunk = match entry.chunks.as_slice() {
        [c] => c,
        _ => return Err(corrupt("expected exactly one chunk")),
    };
    let fid = chunk
        .fid
        .parse::<FileId>()
        .map_err(|e| corrupt(&format!("bad chunk fid: {e}")))?;
    Ok(SegmentRef {
        offset_min,
        offset_max,
        fid,
        size: chunk.size,
        ts_max: num("ts_max")?,
    })
}
