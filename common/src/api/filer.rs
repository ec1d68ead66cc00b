//! The filer's wire contract: entries, chunks, listings and the `/__meta/` API other services use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One chunk of a file's content, stored as a needle on a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chunk {
    /// The needle's file id.
    pub fid: String,
    /// Offset of this chunk within the file.
    pub offset: u64,
    /// Bytes in this chunk.
    pub size: u64,
    /// The needle's ETag.
    #[serde(default)]
    pub etag: String,
}

/// A file or directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Entry {
    /// Absolute path, `/` separated, no trailing slash (the root is `/`).
    pub full_path: String,
    /// Whether this is a directory.
    #[serde(default)]
    pub is_dir: bool,
    /// Unix permission bits.
    #[serde(default)]
    pub mode: u32,
    /// Last modification, milliseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ms: u64,
    /// Content length in bytes.
    #[serde(default)]
    pub size: u64,
    /// MIME type ("" if unknown).
    #[serde(default)]
    pub mime: String,
    /// Content chunks, ordered by offset.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// Free-form attributes (the broker keeps segment offsets and trace ids here).
    #[serde(default)]
    pub extended: BTreeMap<String, String>,
    /// Bumped by the filer on every write of this entry; used by preconditions.
    #[serde(default)]
    pub version: u64,
}

/// A precondition on a metadata write, so two writers cannot silently overwrite each other.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The entry must not exist yet.
    Absent,
    /// The entry must exist at exactly this version.
    Version(u64),
}

/// Body of `PUT /__meta/entry`: create or replace an entry (parents are created).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PutEntryRequest {
    /// The entry to store; `version` is ignored and assigned by the filer.
    pub entry: Entry,
    /// Optional precondition; a failed one is a 412 `precondition_failed`.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Optional fencing precondition on the parent directory, checked atomically with the
    /// write; a failed one is a 412 `fenced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_expect: Option<ParentExpect>,
}

/// A fencing token: the parent directory's `extended[key]` must equal `value`. A writer that
/// takes over the directory changes the value (its own write of the directory excludes every
/// write below it), so a writer holding an older token can no longer write there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParentExpect {
    /// Attribute name.
    pub key: String,
    /// Expected value.
    pub value: String,
}

/// Query of `GET /__meta/entry` and `DELETE /__meta/entry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    /// Absolute path.
    pub path: String,
    /// For delete: remove a non-empty directory and everything under it.
    #[serde(default)]
    pub recursive: bool,
}

/// Query of `GET /__meta/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Directory to list.
    pub dir: String,
    /// Start after (or at, if `inclusive`) this name; from the first (or last) if absent.
    #[serde(default)]
    pub start: Option<String>,
    /// Whether `start` itself is included.
    #[serde(default)]
    pub inclusive: bool,
    /// At most this many entries (default 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// List in descending name order.
    #[serde(default)]
    pub reverse: bool,
}

/// Answer of `GET /__meta/list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListResponse {
    /// Entries in name order (descending when reversed).
    pub entries: Vec<Entry>,
    /// Whether more entries follow the last one returned.
    pub has_more: bool,
}

/// Answer of `GET /dir/` with `Accept: application/json` (SeaweedFS-compatible names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirListing {
    /// The directory.
    #[serde(rename = "Path")]
    pub path: String,
    /// Its entries, in name order.
    #[serde(rename = "Entries")]
    pub entries: Vec<Entry>,
    /// The limit applied.
    #[serde(rename = "Limit")]
    pub limit: usize,
    /// Name of the last entry returned, to pass as `lastFileName` for the next page.
    #[serde(rename = "LastFileName")]
    pub last_file_name: String,
    /// Whether another page follows.
    #[serde(rename = "ShouldDisplayLoadMore")]
    pub should_display_load_more: bool,
}

/// Answer of a file upload `POST|PUT /path`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileUploadResponse {
    /// The file's name (last path segment).
    pub name: String,
    /// Bytes stored.
    pub size: u64,
}
