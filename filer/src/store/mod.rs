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
//!
//! # Chunk ownership
//! A chunk (a needle on a volume) belongs to exactly one entry. The store keeps a chunk →
//! owner index (`c<fid>\0<path>`) that every [`MetaStore::write`] derives from the batch's
//! puts and deletes (`plan_index`) and writes in the same atomic, synced batch as the
//! entries, so it can never disagree with them after a crash. With it a write:
//! - that makes an entry reference a chunk another entry references is refused
//!   ([`StoreError::ChunkInUse`], 409 `chunk_in_use` naming the other path), and so is one
//!   referencing a chunk already queued for deletion ([`StoreError::ChunkQueued`]);
//! - that queues a chunk for deletion while an entry still references it drops that queue op
//!   (a live chunk is never queued).
//!
//! Refusing shared chunks was chosen over reference counts: no Kelp writer means to share
//! a chunk (uploads assign fresh fids, the broker writes one segment per fid), so a second
//! reference is a bug or a misuse that should fail loudly, and the index names the owner,
//! which a count cannot. Writes that keep ownership are unaffected: re-committing an entry
//! with its own chunks (the broker's idempotent segment commit) and renames (the delete of
//! the source and the put of the destination are in one batch, so the chunk changes owner
//! without ever being shared). The index is nonetheless a multiset of owners per fid, so a
//! database upgraded from format v1 in which two entries already shared a chunk stays safe:
//! the chunk is queued only once its last owner is gone.
//!
//! # Guards
//! A [`Batch`] carries [`Guard`]s: the state of the namespace the caller decided on ("`/a` is
//! still at version 3", "`/d` has exactly these children"). A store applies the batch only if
//! every guard still holds, atomically with the write, and otherwise refuses it with
//! [`StoreError::GuardFailed`] and writes nothing. With one filer on a RocksDB the service's
//! path locks already exclude every other writer of a guarded path, so the check is a cheap
//! re-read; with several filers on one [`EtcdStore`] the guards become compares of the etcd
//! transaction, and they are what makes a read-check-write atomic across filers.

pub mod codec;
mod etcd;
mod memory;
mod rocks;

#[cfg(test)]
mod conformance;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::api::filer::Entry;
use serde::{Deserialize, Serialize};

pub use etcd::{EtcdLimits, EtcdStore};
pub use memory::MemoryStore;
pub use rocks::RocksStore;

use crate::path;

/// Why a store operation failed. Unless a variant says otherwise, a server-side (500) error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A guard of the batch no longer holds: another writer changed the state the batch was
    /// planned on. Nothing was written; the caller re-reads and decides again.
    #[error("{path} changed since it was read: expected {expected}, found {found}")]
    GuardFailed {
        /// The guarded path.
        path: String,
        /// What the guard expected.
        expected: String,
        /// What the store holds.
        found: String,
    },
    /// Other writers kept changing what the batch depends on; nothing was written (503).
    #[error(
        "metadata write gave up after {attempts} attempts: concurrent writers kept changing the keys it read"
    )]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// The batch does not fit in one atomic write of the store (etcd's limits); nothing was
    /// written, and it is never split.
    #[error("metadata batch too large for one atomic etcd transaction: {0}")]
    TooLarge(String),
    /// etcd failed or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] common::etcd::EtcdError),
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The database directory could not be created durably.
    #[error("create the metadata directory: {0}")]
    Io(#[from] std::io::Error),
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
    /// The write would make a second entry reference a chunk (409 `chunk_in_use`).
    #[error("chunk {fid} of {path} is in use by {owner}")]
    ChunkInUse {
        /// The chunk's file id.
        fid: String,
        /// The entry that was to reference it.
        path: String,
        /// The entry that references it.
        owner: String,
    },
    /// The write would reference a chunk queued for deletion (409 `chunk_in_use`).
    #[error("chunk {fid} of {path} is queued for deletion (it belonged to {was})")]
    ChunkQueued {
        /// The chunk's file id.
        fid: String,
        /// The entry that was to reference it.
        path: String,
        /// The entry it belonged to.
        was: String,
    },
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

/// A condition a [`Batch`] is applied under (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The entry at `path` is at `version` (`None`: there is no entry).
    Entry {
        /// The path.
        path: String,
        /// The version, or `None` for absent.
        version: Option<u64>,
    },
    /// The directory `dir` has exactly the children `names` (no other child was added).
    Children {
        /// The directory.
        dir: String,
        /// Its children's names, sorted.
        names: Vec<String>,
    },
}

/// Changes applied atomically and durably, under guards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The changes, applied in order.
    pub ops: Vec<Op>,
    /// The conditions, all checked against the state before the batch.
    pub guards: Vec<Guard>,
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

    /// Applies the batch only if the entry at `path` is still at `version` (`None`: absent).
    /// A guard already in the batch is not repeated; two different guards of one path (the
    /// path was read twice and changed in between) make the batch fail, as they should.
    pub fn guard(&mut self, path: impl Into<String>, version: Option<u64>) {
        let g = Guard::Entry {
            path: path.into(),
            version,
        };
        if !self.guards.contains(&g) {
            self.guards.push(g);
        }
    }

    /// Guards `entry` at the version it was read at, or its absence.
    pub fn guard_entry(&mut self, path: &str, entry: Option<&Entry>) {
        self.guard(path, entry.map(|e| e.version));
    }

    /// Applies the batch only if `dir`'s children are exactly `names`.
    pub fn guard_children(&mut self, dir: impl Into<String>, mut names: Vec<String>) {
        names.sort();
        names.dedup();
        self.guards.push(Guard::Children {
            dir: dir.into(),
            names,
        });
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

    /// The paths of the entries that reference chunk `fid`, in path order (at most one,
    /// unless the database was upgraded with chunks already shared).
    fn chunk_owners(&self, fid: &str) -> Result<Vec<String>, StoreError>;

    /// Whether the store can serve (e.g. the database is open and readable).
    fn check(&self) -> Result<(), StoreError>;
}

/// What [`plan_index`] and [`check_guards`] need to read: the state before the batch.
pub(crate) trait IndexView {
    /// The names of `dir`'s children, in name order, at most `limit`.
    fn children(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// The entry at `path`.
    fn entry(&self, path: &str) -> Result<Option<Entry>, StoreError>;
    /// The owners of chunk `fid`.
    fn owners(&self, fid: &str) -> Result<Vec<String>, StoreError>;
    /// The queued deletion of chunk `fid`, if any.
    fn queued(&self, fid: &str) -> Result<Option<PendingDeletion>, StoreError>;
}

/// The chunk → owner index rows a batch adds and removes, and the queue ops it must skip.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct IndexPlan {
    /// `(fid, path)` rows to add.
    pub add: Vec<(String, String)>,
    /// `(fid, path)` rows to remove.
    pub remove: Vec<(String, String)>,
    /// Indexes (into `batch.ops`) of `QueueDeletion`s of chunks still referenced after the
    /// batch; they are not written.
    pub skip: BTreeSet<usize>,
}

/// Checks every guard of `batch` against `view`.
pub(crate) fn check_guards(view: &dyn IndexView, batch: &Batch) -> Result<(), StoreError> {
    let show = |v: Option<u64>| v.map_or_else(|| "no entry".to_owned(), |v| format!("version {v}"));
    for g in &batch.guards {
        match g {
            Guard::Entry { path, version } => {
                let found = if path == path::ROOT {
                    None
                } else {
                    view.entry(path)?.map(|e| e.version)
                };
                if found != *version {
                    return Err(StoreError::GuardFailed {
                        path: path.clone(),
                        expected: show(*version),
                        found: show(found),
                    });
                }
            }
            Guard::Children { dir, names } => {
                let found = view.children(dir, names.len() + 1)?;
                if found != *names {
                    return Err(StoreError::GuardFailed {
                        path: dir.clone(),
                        expected: format!("children {names:?}"),
                        found: format!("children {found:?}"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Derives the index changes of `batch` against `view` (see the module doc), refusing a
/// batch that would make two entries share a chunk or reference a queued one.
pub(crate) fn plan_index(view: &dyn IndexView, batch: &Batch) -> Result<IndexPlan, StoreError> {
    // The batch's own view: entries and owner sets as of the op being planned.
    let mut entries: HashMap<String, Option<Entry>> = HashMap::new();
    let mut before: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut queued: HashMap<String, Option<String>> = HashMap::new();
    fn load<'a>(
        view: &dyn IndexView,
        before: &mut BTreeMap<String, BTreeSet<String>>,
        owners: &'a mut BTreeMap<String, BTreeSet<String>>,
        fid: &str,
    ) -> Result<&'a mut BTreeSet<String>, StoreError> {
        if !owners.contains_key(fid) {
            let set: BTreeSet<String> = view.owners(fid)?.into_iter().collect();
            before.insert(fid.to_owned(), set.clone());
            owners.insert(fid.to_owned(), set);
        }
        Ok(owners.get_mut(fid).expect("inserted above"))
    }
    let mut queue_ops = Vec::new();
    for (i, op) in batch.ops.iter().enumerate() {
        let (p, new) = match op {
            Op::Put(e) => (e.full_path.as_str(), Some(e)),
            Op::Delete(p) => (p.as_str(), None),
            Op::QueueDeletion(d) => {
                queued.insert(d.fid.clone(), Some(d.path.clone()));
                queue_ops.push((i, d.fid.clone()));
                continue;
            }
            Op::Dequeue(fid) => {
                queued.insert(fid.clone(), None);
                continue;
            }
        };
        let old = match entries.get(p) {
            Some(o) => o.clone(),
            None => view.entry(p)?,
        };
        let had: BTreeSet<&str> = old
            .iter()
            .flat_map(|o| o.chunks.iter().map(|c| c.fid.as_str()))
            .collect();
        for fid in &had {
            load(view, &mut before, &mut owners, fid)?.remove(p);
        }
        let Some(e) = new else {
            entries.insert(p.to_owned(), None);
            continue;
        };
        for c in &e.chunks {
            let fid = c.fid.as_str();
            let set = load(view, &mut before, &mut owners, fid)?;
            if had.contains(fid) {
                // Kept by its own entry (even with a legacy second owner).
                set.insert(p.to_owned());
                continue;
            }
            if let Some(other) = set.iter().find(|o| o.as_str() != p) {
                return Err(StoreError::ChunkInUse {
                    fid: fid.to_owned(),
                    path: p.to_owned(),
                    owner: other.clone(),
                });
            }
            set.insert(p.to_owned());
            // Owners are read before the queue (see `RocksStore`): a racing release is
            // then seen either as the old owner or as the queued deletion.
            let was = match queued.get(fid) {
                Some(q) => q.clone(),
                None => view.queued(fid)?.map(|d| d.path),
            };
            if let Some(was) = was {
                return Err(StoreError::ChunkQueued {
                    fid: fid.to_owned(),
                    path: p.to_owned(),
                    was,
                });
            }
        }
        entries.insert(p.to_owned(), Some(e.clone()));
    }
    let mut plan = IndexPlan::default();
    for (i, fid) in queue_ops {
        if !load(view, &mut before, &mut owners, &fid)?.is_empty() {
            plan.skip.insert(i);
        }
    }
    for (fid, after) in &owners {
        let was = &before[fid];
        for p in after.difference(was) {
            plan.add.push((fid.clone(), p.clone()));
        }
        for p in was.difference(after) {
            plan.remove.push((fid.clone(), p.clone()));
        }
    }
    Ok(plan)
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
/// every chunk for deletion, guarded as read ([`guard_subtree`]). Returns the number of
/// entries removed.
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
    plan_delete_entries(&removed, now_ms, batch);
    Ok(removed.len())
}

/// Adds to `batch` the removal of `entries` as read (guarded by [`guard_subtree`]), queueing
/// their chunks for deletion. A directory among them must have no children but those among
/// them (children deleted earlier are gone by then).
pub fn plan_delete_entries(entries: &[Entry], now_ms: u64, batch: &mut Batch) {
    guard_subtree(entries, batch);
    for e in entries {
        batch.delete(e.full_path.clone());
        batch.queue_chunks(e, now_ms);
    }
}

/// Guards entries as they were read (a subtree, or a piece of one): every entry at its
/// version, and every directory among them with exactly the children among them, so a child added meanwhile (by another filer)
/// fails the write instead of being left without its parent.
pub fn guard_subtree(entries: &[Entry], batch: &mut Batch) {
    let mut children: BTreeMap<&str, Vec<String>> = entries
        .iter()
        .filter(|e| e.is_dir)
        .map(|e| (e.full_path.as_str(), Vec::new()))
        .collect();
    for e in entries {
        batch.guard(e.full_path.clone(), Some(e.version));
        let (parent, name) = path::split(&e.full_path);
        if let Some(names) = children.get_mut(parent) {
            names.push(name.to_owned());
        }
    }
    for (dir, names) in children {
        batch.guard_children(dir, names);
    }
}

/// Adds to `batch` the move of `entry` (and, for a directory, its subtree) to `dst`, guarded
/// as read ([`guard_subtree`]). Moved entries keep their content and get their version
/// bumped. Returns the moved root entry.
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
    guard_subtree(&moved, batch);
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
