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

/// A page of a directory in Kelp's entry shape, as [`FilerClient::list_dir`] returns it
/// (`lastFileName` paging; built from `GET /__meta/list`). The file API itself answers
/// [`SeaweedListing`].
///
/// [`FilerClient::list_dir`]: crate::client::filer::FilerClient::list_dir
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

/// The directory bit of [`SeaweedEntry::mode`] (Go's `os.ModeDir`).
pub const SEAWEED_MODE_DIR: u32 = 1 << 31;

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Answer of `GET /dir/` with `Accept: application/json` on the file API: SeaweedFS's listing
/// shape, field for field (`weed filer` 4.48), so SeaweedFS clients read it unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedListing {
    /// The server's version string.
    pub version: String,
    /// The directory; the root is `""`.
    pub path: String,
    /// Its entries in name order; `null` when there are none.
    pub entries: Option<Vec<SeaweedEntry>>,
    /// The limit applied.
    pub limit: usize,
    /// Name of the last entry returned (or the `lastFileName` asked for, on an empty page).
    pub last_file_name: String,
    /// Whether another page follows.
    pub should_display_load_more: bool,
    /// Whether this page is empty.
    pub empty_folder: bool,
}

/// An entry in SeaweedFS's JSON shape (its `filer.Entry` with the embedded `Attr`): the
/// listing's `Entries[]` and the answer of `GET /file?metadata=true`. Times are RFC 3339;
/// `Mode` carries [`SEAWEED_MODE_DIR`] for directories; `Md5` and `Extended` values are base64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedEntry {
    /// Absolute path.
    pub full_path: String,
    /// Last modification (RFC 3339, nanoseconds).
    pub mtime: String,
    /// Creation (RFC 3339, seconds).
    pub crtime: String,
    /// Status change (Go's zero time when unset).
    pub ctime: String,
    /// Last access.
    pub atime: String,
    /// Go `os.FileMode`: permission bits, plus [`SEAWEED_MODE_DIR`] for a directory.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// MIME type.
    pub mime: String,
    /// Time to live in seconds (0: none).
    pub ttl_sec: i32,
    /// Owner name.
    pub user_name: String,
    /// Group names (`null` when none).
    pub group_names: Option<Vec<String>>,
    /// Symlink target ("" for none).
    pub symlink_target: String,
    /// MD5 of the content, base64 (`null` when not known).
    pub md5: Option<String>,
    /// Content length in bytes.
    pub file_size: u64,
    /// Device number.
    pub rdev: u32,
    /// Inode number.
    pub inode: u64,
    /// Extended attributes, values base64 (`null` when none).
    pub extended: Option<BTreeMap<String, String>>,
    /// Content chunks (absent when none).
    #[serde(rename = "chunks", default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<SeaweedChunk>,
    /// Hard link id (`null`: none).
    pub hard_link_id: Option<String>,
    /// Hard link count.
    pub hard_link_counter: i32,
    /// Inline content, base64 (`null`: none).
    pub content: Option<String>,
    /// Remote storage entry (`null`: none).
    pub remote: Option<serde_json::Value>,
    /// Quota in bytes (0: none).
    pub quota: i64,
    /// WORM enforcement time (0: none).
    #[serde(rename = "WORMEnforcedAtTsNs")]
    pub worm_enforced_at_ts_ns: i64,
}

/// A chunk in SeaweedFS's JSON shape (its `filer_pb.FileChunk`; zero fields are omitted, as
/// protobuf's JSON tags do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeaweedChunk {
    /// The needle's file id, `vid,keycookie`.
    pub file_id: String,
    /// Offset within the file.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Bytes in this chunk.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    /// When the chunk was written, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub modified_ts_ns: i64,
    /// The chunk's ETag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e_tag: String,
    /// The file id, parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<SeaweedFid>,
}

/// A parsed file id in SeaweedFS's JSON shape (`filer_pb.FileId`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeaweedFid {
    /// Volume id.
    pub volume_id: u32,
    /// Needle key.
    pub file_key: u64,
    /// Cookie.
    pub cookie: u32,
}

/// Answer of a file upload `POST|PUT /path`, as SeaweedFS's (`size` is omitted when 0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileUploadResponse {
    /// The file's name (last path segment).
    pub name: String,
    /// Bytes stored.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
}
