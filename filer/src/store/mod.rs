//! Metadata storage: the [`MetaStore`] trait, its RocksDB ([`RocksStore`]) and in-memory
//! ([`MemoryStore`]) implementations, and the batch planners shared by both.
//!
//! The trait is synchronous: RocksDB calls block, so async code calls it through
//! `tokio::task::spawn_blocking`. Every mutation is one [`Batch`], applied atomically (one
//! RocksDB `WriteBatch` written with `sync = true`).
//!
//! # Key layout
//! See [`codec`]: a directory's children share the key prefix `e<dir>\0`, so one directory
//! is listed in name order, forwards or backwards from any name, without touching another
//! directory (`/a` and `/ab` have the prefixes `e/a\0` and `e/ab\0`). Pending chunk
//! deletions live under `g<fid>` and are written in the same batch as the metadata change
//! that orphaned the chunk.

pub mod codec;
mod memory;
mod rocks;

#[cfg(test)]
mod conformance;

use common::api::filer::Entry;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use rocks::RocksStore;

use crate::path;

/// Why a store operation failed. All of these are server-side (500) errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value failed its checksum or could not be decoded.
    #[error("corrupt metadata at key {key}: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The store's format marker is from another version.
    #[error("metadata format {found} is not supported (expected {expected})")]
    Format {
        /// The marker found.
        found: String,
        /// The marker this build writes.
        expected: String,
    },
    /// The in-memory store's lock was poisoned by a panic.
    #[error("store lock poisoned")]
    Poisoned,
}

/// A chunk whose needle must be deleted from its volume, queued durably.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingDeletion {
    /// The needle's file id.
    pub fid: String,
    /// The path the chunk belonged to (for logs).
    pub path: String,
    /// When it was queued, ms since the epoch.
    pub queued_ms: u64,
}

/// One change in a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or replace the entry at `entry.full_path`.
    Put(Entry),
    /// Remove the entry at this path (a no-op if absent).
    Delete(String),
    /// Queue a chunk deletion.
    QueueDeletion(PendingDeletion),
    /// Forget a queued chunk deletion (done).
    Dequeue(String),
}

/// Changes applied atomically and durably.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The changes, applied in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, entry: Entry) {
        self.ops.push(Op::Put(entry));
    }

    /// Adds a delete.
    pub fn delete(&mut self, path: impl Into<String>) {
        self.ops.push(Op::Delete(path.into()));
    }

    /// Queues the deletion of each of `entry`'s chunks.
    pub fn queue_chunks(&mut self, entry: &Entry, now_ms: u64) {
        for c in &entry.chunks {
            self.ops.push(Op::QueueDeletion(PendingDeletion {
                fid: c.fid.clone(),
                path: entry.full_path.clone(),
                queued_ms: now_ms,
            }));
        }
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether this batch queues chunk deletions.
    pub fn queues_deletions(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::QueueDeletion(_)))
    }
}

/// Where and how to list a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOpts {
    /// Start after (or at, if `inclusive`) this name; from the first (last if `reverse`) if `None`.
    pub start: Option<String>,
    /// Whether `start` itself is included.
    pub inclusive: bool,
    /// At most this many entries.
    pub limit: usize,
    /// Descending name order.
    pub reverse: bool,
}

impl ListOpts {
    /// The first `limit` entries in name order.
    pub fn first(limit: usize) -> Self {
        Self {
            start: None,
            inclusive: false,
            limit,
            reverse: false,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// Entries in the requested order.
    pub entries: Vec<Entry>,
    /// Whether more entries follow the last one.
    pub has_more: bool,
}

/// Durable metadata storage. Implementations must make [`MetaStore::write`] atomic and
/// durable when it returns.
pub trait MetaStore: Send + Sync + 'static {
    /// The entry at `path` (the root is never stored).
    fn get(&self, path: &str) -> Result<Option<Entry>, StoreError>;

    /// One page of the children of `dir` (which is not checked to exist).
    fn list(&self, dir: &str, opts: &ListOpts) -> Result<Page, StoreError>;

    /// Applies a batch atomically and durably.
    fn write(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Up to `limit` queued chunk deletions, in fid order.
    fn pending_deletions(&self, limit: usize) -> Result<Vec<PendingDeletion>, StoreError>;

    /// Whether the store can serve (e.g. the database is open and readable).
    fn check(&self) -> Result<(), StoreError>;
}

/// Page size used when walking a subtree.
const WALK_PAGE: usize = 1024;

/// Every entry below `dir` (not `dir` itself), parents before children.
pub fn walk_subtree(store: &dyn MetaStore, dir: &str) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let mut opts = ListOpts::first(WALK_PAGE);
        loop {
            let page = store.list(&d, &opts)?;
            let last = page
                .entries
                .last()
                .map(|e| path::name(&e.full_path).to_owned());
            for e in page.entries {
                if e.is_dir {
                    dirs.push(e.full_path.clone());
                }
                out.push(e);
            }
            match (page.has_more, last) {
                (true, Some(last)) => opts.start = Some(last),
                _ => break,
            }
        }
    }
    Ok(out)
}

/// Whether `dir` has at least one child.
pub fn has_children(store: &dyn MetaStore, dir: &str) -> Result<bool, StoreError> {
    Ok(!store.list(dir, &ListOpts::first(1))?.entries.is_empty())
}

/// Adds to `batch` the removal of `entry` and (for a directory) everything below it, queueing
/// every chunk for deletion. Returns the number of entries removed.
pub fn plan_delete(
    store: &dyn MetaStore,
    entry: &Entry,
    now_ms: u64,
    batch: &mut Batch,
) -> Result<usize, StoreError> {
    let mut removed = vec![entry.clone()];
    if entry.is_dir {
        removed.extend(walk_subtree(store, &entry.full_path)?);
    }
    for e in &removed {
        batch.delete(e.full_path.clone());
        batch.queue_chunks(e, now_ms);
    }
    Ok(removed.len())
}

/// Adds to `batch` the move of `entry` (and, for a directory, its subtree) to `dst`. Moved
/// entries keep their content and get their version bumped. Returns the moved root entry.
pub fn plan_rename(
    store: &dyn MetaStore,
    entry: &Entry,
    dst: &str,
    batch: &mut Batch,
) -> Result<Entry, StoreError> {
    let src = entry.full_path.clone();
    let mut moved = vec![entry.clone()];
    if entry.is_dir {
        moved.extend(walk_subtree(store, &src)?);
    }
    let mut root = None;
    for e in moved {
        batch.delete(e.full_path.clone());
        let mut n = e;
        n.full_path = path::rebase(&n.full_path, &src, dst);
        n.version += 1;
        if root.is_none() {
            root = Some(n.clone());
        }
        batch.put(n);
    }
    Ok(root.unwrap_or_else(|| entry.clone()))
}
