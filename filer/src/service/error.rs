//! Why a filer operation failed: the [`Error`] enum every service operation returns.
//!
//! Each variant maps to one HTTP status in `crate::http::error`, the only place that knows
//! status codes.

use common::client::ClientError;

use crate::store::StoreError;

/// Why a filer operation failed; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path breaks the path rules (400 `bad_path`).
    #[error("{0}")]
    BadPath(String),
    /// The entry is malformed (400 `bad_entry`).
    #[error("{0}")]
    BadEntry(String),
    /// The request body could not be read (400 `bad_body`).
    #[error("read the request body: {0}")]
    BadBody(String),
    /// Nothing at this path (404).
    #[error("no entry at {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A file operation hit a directory (409).
    #[error("{path} is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// A directory was needed but a file is there (409).
    #[error("{path} is a file, not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// The destination already exists (409).
    #[error("{path} already exists")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A non-recursive delete of a non-empty directory (409).
    #[error("directory {path} is not empty (use recursive=true)")]
    DirNotEmpty {
        /// The path.
        path: String,
    },
    /// An `expect` precondition did not hold (412).
    #[error("precondition failed on {path}: {message}")]
    PreconditionFailed {
        /// The path.
        path: String,
        /// What was expected and found.
        message: String,
    },
    /// A `parent_expect` fencing token did not hold (412 `fenced`).
    #[error("write to {path} is fenced: {message}")]
    Fenced {
        /// The path.
        path: String,
        /// What was expected and found.
        message: String,
    },
    /// The upload is over `--max-upload-mb` (413).
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Writing a chunk failed (503 when transient, else 500).
    #[error("write chunk at offset {offset} of {path}: {source}")]
    Upload {
        /// The file.
        path: String,
        /// The chunk's offset.
        offset: u64,
        /// The cause (boxed: it is large and errors are rare).
        source: Box<ClientError>,
    },
    /// Reading a chunk failed (503 when transient, else 500).
    #[error("read chunk {fid} of {path}: {reason}")]
    ChunkRead {
        /// The file.
        path: String,
        /// The chunk's fid.
        fid: String,
        /// What went wrong.
        reason: String,
        /// Whether retrying later may help.
        transient: bool,
        /// `Retry-After` hint.
        retry_after: Option<u64>,
    },
    /// The entry names a chunk another entry references, or one queued for deletion (409
    /// `chunk_in_use`; see [`crate::store`]).
    #[error("{0}")]
    ChunkInUse(StoreError),
    /// Concurrent writers (another filer on a shared store) kept changing what this
    /// mutation read; nothing was written and it may be retried (503 `write_conflict`).
    #[error("{0}")]
    Conflict(StoreError),
    /// The mutation does not fit in one atomic write of the store (etcd's transaction
    /// limits), and splitting it would break its atomicity (409 `too_large_for_store`).
    #[error("{0}")]
    StoreLimit(StoreError),
    /// The metadata store cannot be reached right now (503 `store_unavailable`).
    #[error("metadata store unavailable: {0}")]
    StoreUnavailable(StoreError),
    /// The metadata store failed (500).
    #[error("metadata store: {0}")]
    Store(StoreError),
    /// Anything else (500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ChunkInUse { .. } | StoreError::ChunkQueued { .. } => Self::ChunkInUse(e),
            StoreError::GuardFailed { .. } | StoreError::Contended { .. } => Self::Conflict(e),
            StoreError::TooLarge(_) => Self::StoreLimit(e),
            StoreError::Etcd(ref inner) if inner.is_transient() => Self::StoreUnavailable(e),
            other => Self::Store(other),
        }
    }
}
