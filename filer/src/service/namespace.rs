//! Namespace operations: lookups, listings, entry writes with preconditions and fencing,
//! deletes and renames.
//!
//! Invariant: every mutation is one read-check-write under [`PathLocks`](crate::locks::PathLocks)
//! (the path exclusive, its ancestors shared; the chunks an entry takes are locked too), and
//! its effects — the entry, missing parents, and the chunks it orphans queued for deletion —
//! go to the store in one synced batch. So a crash leaves either the whole change or none of
//! it, a chunk has at most one owning entry, and no orphaned chunk is forgotten.
//!
//! The path locks only exclude writers in this process. So that several filers can share one
//! store (etcd), every batch also carries a [`Guard`](crate::store::Guard) for each entry whose
//! state the mutation decided on — the entry itself (its version is the new version's base),
//! its parents (they exist as directories; the parent holds the fencing token), the subtree a
//! delete or rename walked — and the store applies it only if they all still hold. A lost race
//! ([`StoreError::GuardFailed`]) makes the mutation read and decide again: an `expect` or
//! `parent_expect` that no longer holds then fails with 412 exactly as it would have in one
//! filer, and a mutation without a precondition simply goes through on the new state. So two
//! filers racing on one path behave like one: one winner, versions never repeat or go back.
//!
//! A recursive delete is the one mutation that need not be atomic: when its batch is over
//! the store's limit (etcd's transaction size), it removes the subtree in pieces, children
//! before their directory, each piece guarded. A crash or a lost race leaves part of the
//! subtree, never an entry without its parent or a chunk without its queued deletion.

use std::collections::HashSet;
use std::sync::Arc;

use common::api::filer::{Entry, Expect, ParentExpect, PutEntryRequest};

use super::{DIR_MODE, Error, FILE_MODE, Filer, check_mutable, check_path, now_ms};
use crate::chunks;
use crate::path::{self, ROOT};
use crate::store::{self, Batch, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError};

/// Read-check-writes of one mutation before a lost race is reported (503 `write_conflict`);
/// between attempts a jittered backoff (1 ms doubling to 50 ms) breaks the symmetry of two
/// filers retrying in step.
const GUARD_ATTEMPTS: u32 = 24;

/// Entries per piece of a recursive delete too large for one batch (halved while a piece is
/// still too large).
const DELETE_PIECE: usize = 32;

fn root_entry() -> Entry {
    Entry {
        full_path: ROOT.to_owned(),
        is_dir: true,
        mode: DIR_MODE,
        ..Entry::default()
    }
}

fn new_dir(p: &str, now: u64) -> Entry {
    Entry {
        full_path: p.to_owned(),
        is_dir: true,
        mode: DIR_MODE,
        mtime_ms: now,
        version: 1,
        ..Entry::default()
    }
}

/// Checks that `p`'s parent directory holds the fencing token, and guards the parent at the
/// version that held it (a takeover raising the token bumps the version, so a commit racing
/// with it in another filer fails and re-checks).
fn check_fence(
    s: &dyn MetaStore,
    p: &str,
    fence: &ParentExpect,
    batch: &mut Batch,
) -> Result<(), Error> {
    let parent = path::split(p).0;
    let entry = s.get(parent)?;
    let found = entry
        .as_ref()
        .and_then(|e| e.extended.get(&fence.key).cloned());
    if found.as_deref() == Some(fence.value.as_str()) {
        batch.guard_entry(parent, entry.as_ref());
        return Ok(());
    }
    Err(Error::Fenced {
        path: p.to_owned(),
        message: format!(
            "{parent} has {}={}, not {}",
            fence.key,
            found.as_deref().unwrap_or("(none)"),
            fence.value
        ),
    })
}

fn check_expect(p: &str, old: Option<&Entry>, expect: Option<Expect>) -> Result<(), Error> {
    let fail = |message: String| Error::PreconditionFailed {
        path: p.to_owned(),
        message,
    };
    match (expect, old) {
        (None, _) | (Some(Expect::Absent), None) => Ok(()),
        (Some(Expect::Absent), Some(e)) => Err(fail(format!(
            "expected absent, found version {}",
            e.version
        ))),
        (Some(Expect::Version(v)), Some(e)) if e.version == v => Ok(()),
        (Some(Expect::Version(v)), Some(e)) => Err(fail(format!(
            "expected version {v}, found version {}",
            e.version
        ))),
        (Some(Expect::Version(v)), None) => {
            Err(fail(format!("expected version {v}, found no entry")))
        }
    }
}

/// Adds the missing ancestors of `p` to `batch` as directories, guarding each ancestor as
/// found (absent, or a directory at its version); fails if one is a file.
fn plan_parents(s: &dyn MetaStore, p: &str, now: u64, batch: &mut Batch) -> Result<(), Error> {
    for a in path::ancestors(p) {
        let found = s.get(a)?;
        match &found {
            None => batch.put(new_dir(a, now)),
            Some(e) if e.is_dir => {}
            Some(_) => return Err(Error::NotADirectory { path: a.to_owned() }),
        }
        batch.guard_entry(a, found.as_ref());
    }
    Ok(())
}

/// Whether `e` is a lost race on a shared store that deciding again may resolve; if so,
/// waits the backoff before the next attempt.
async fn lost_race(e: &Error, attempt: u32, what: &str) -> bool {
    if let Error::Conflict(StoreError::GuardFailed { path, .. }) = e
        && attempt < GUARD_ATTEMPTS
    {
        tracing::debug!(attempt, changed = %path, what, "lost a race with another writer, deciding again");
        tokio::time::sleep(common::retry::backoff(
            attempt,
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(50),
        ))
        .await;
        return true;
    }
    false
}

impl Filer {
    /// The entry at `p` (the root is a synthetic directory), or `None`.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p))]
    pub async fn lookup(&self, p: String) -> Result<Option<Entry>, Error> {
        check_path(&p)?;
        if p == ROOT {
            return Ok(Some(root_entry()));
        }
        self.read(move |s| Ok(s.get(&p)?)).await
    }

    /// The entry at `p`, or [`Error::NotFound`].
    pub async fn get_entry(&self, p: String) -> Result<Entry, Error> {
        let path = p.clone();
        self.lookup(p).await?.ok_or(Error::NotFound { path })
    }

    /// One page of `dir`'s children. A missing directory is an empty page when `missing_ok`,
    /// else [`Error::NotFound`].
    #[tracing::instrument(level = "debug", skip_all, fields(dir = %dir))]
    pub async fn list(&self, dir: String, opts: ListOpts, missing_ok: bool) -> Result<Page, Error> {
        check_path(&dir)?;
        self.read(move |s| {
            if dir != ROOT {
                match s.get(&dir)? {
                    None if missing_ok => return Ok(Page::default()),
                    None => return Err(Error::NotFound { path: dir }),
                    Some(e) if !e.is_dir => return Err(Error::NotADirectory { path: dir }),
                    Some(_) => {}
                }
            }
            Ok(s.list(&dir, &opts)?)
        })
        .await
    }

    /// Creates or replaces an entry as given (chunks kept exactly), creating parents.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %req.entry.full_path))]
    pub async fn put_entry(self: &Arc<Self>, req: PutEntryRequest) -> Result<Entry, Error> {
        let mut e = req.entry;
        check_mutable(&e.full_path)?;
        if e.is_dir && !e.chunks.is_empty() {
            return Err(Error::BadEntry(format!(
                "directory {} cannot have chunks",
                e.full_path
            )));
        }
        if e.size == 0 {
            e.size = chunks::chunks_end(&e.chunks);
        }
        // Holes read as zeros, so without this bound one small request could declare a file
        // of 2^64 bytes that every GET would then stream.
        if e.size > self.upload.max_upload {
            return Err(Error::BadEntry(format!(
                "entry {}: size {} is over the largest file this filer holds ({} bytes, --max-upload-mb)",
                e.full_path, e.size, self.upload.max_upload
            )));
        }
        chunks::check_layout(&e.chunks, e.size)
            .map_err(|err| Error::BadEntry(format!("entry {}: {err}", e.full_path)))?;
        if e.mtime_ms == 0 {
            e.mtime_ms = now_ms();
        }
        if e.mode == 0 {
            e.mode = if e.is_dir { DIR_MODE } else { FILE_MODE };
        }
        let (expect, parent_expect) = (req.expect, req.parent_expect);
        self.critical(move |f| async move { f.commit_entry(e, expect, parent_expect).await })
            .await
    }

    /// Read-check-write of one entry under its path lock. Queues the chunks the new entry no
    /// longer references for deletion, in the same batch; the store refuses the write if a
    /// chunk belongs to another entry (its chunks' locks are held, so no other writer can
    /// claim one of them between the store's check and its write).
    /// The parent's fencing token is checked under the same locks: a writer of the parent
    /// waits for this write, and this write for it.
    pub(crate) async fn commit_entry(
        &self,
        entry: Entry,
        expect: Option<Expect>,
        parent_expect: Option<ParentExpect>,
    ) -> Result<Entry, Error> {
        let p = entry.full_path.clone();
        let _locks = self.locks.lock(&[&p]).await;
        let fids: Vec<String> = entry.chunks.iter().map(|c| c.fid.clone()).collect();
        let fids: Vec<&str> = fids.iter().map(String::as_str).collect();
        let _chunk_locks = self.chunk_locks.lock(&fids).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .try_commit_entry(entry.clone(), expect, parent_expect.clone())
                .await
            {
                Err(e) if lost_race(&e, attempt, "commit entry").await => continue,
                other => return other,
            }
        }
    }

    /// One read-check-write of [`Filer::commit_entry`], guarded by everything it read.
    async fn try_commit_entry(
        &self,
        mut entry: Entry,
        expect: Option<Expect>,
        parent_expect: Option<ParentExpect>,
    ) -> Result<Entry, Error> {
        let p = entry.full_path.clone();
        let now = now_ms();
        let planned = {
            let entry = entry.clone();
            self.read(move |s| {
                let mut batch = Batch::new();
                if let Some(fence) = &parent_expect {
                    check_fence(s, &entry.full_path, fence, &mut batch)?;
                }
                let old = s.get(&entry.full_path)?;
                check_expect(&entry.full_path, old.as_ref(), expect)?;
                batch.guard_entry(&entry.full_path, old.as_ref());
                match &old {
                    Some(o) if o.is_dir && !entry.is_dir => {
                        return Err(Error::IsADirectory {
                            path: entry.full_path,
                        });
                    }
                    Some(o) if !o.is_dir && entry.is_dir => {
                        return Err(Error::NotADirectory {
                            path: entry.full_path,
                        });
                    }
                    _ => {}
                }
                plan_parents(s, &entry.full_path, now, &mut batch)?;
                Ok((old, batch))
            })
            .await?
        };
        let (old, mut batch) = planned;
        entry.version = old.as_ref().map_or(1, |o| o.version.saturating_add(1));
        batch.put(entry.clone());
        if let Some(old) = &old {
            let kept: HashSet<&str> = entry.chunks.iter().map(|c| c.fid.as_str()).collect();
            for c in old.chunks.iter().filter(|c| !kept.contains(c.fid.as_str())) {
                batch.ops.push(Op::QueueDeletion(PendingDeletion {
                    fid: c.fid.clone(),
                    path: p.clone(),
                    queued_ms: now,
                }));
            }
        }
        self.commit(batch).await?;
        Ok(entry)
    }

    /// Deletes the entry at `p` (a non-empty directory only with `recursive`); its chunks are
    /// queued for deletion in the same write. Returns the number of entries removed.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p, recursive))]
    pub async fn delete(self: &Arc<Self>, p: String, recursive: bool) -> Result<usize, Error> {
        check_mutable(&p)?;
        self.critical(move |f| async move {
            let _locks = f.locks.lock(&[&p]).await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match f.try_delete(p.clone(), recursive).await {
                    Err(e) if lost_race(&e, attempt, "delete").await => continue,
                    other => return other,
                }
            }
        })
        .await
    }

    /// One read-check-write of [`Filer::delete`]: the whole subtree in one batch, or in
    /// pieces when that batch is over the store's limit.
    async fn try_delete(&self, p: String, recursive: bool) -> Result<usize, Error> {
        let now = now_ms();
        let (batch, removed) = self
            .read(move |s| {
                let entry = s
                    .get(&p)?
                    .ok_or_else(|| Error::NotFound { path: p.clone() })?;
                if entry.is_dir && !recursive && store::has_children(s, &p)? {
                    return Err(Error::DirNotEmpty { path: p });
                }
                let mut removed = vec![entry.clone()];
                if entry.is_dir {
                    removed.extend(store::walk_subtree(s, &p)?);
                }
                let mut batch = Batch::new();
                store::plan_delete_entries(&removed, now, &mut batch);
                Ok((batch, removed))
            })
            .await?;
        match self.commit(batch).await {
            Ok(()) => Ok(removed.len()),
            Err(Error::StoreLimit(e)) if removed.len() > 1 => {
                tracing::info!(entries = removed.len(), error = %e, "recursive delete too large for one write, deleting in pieces");
                self.delete_in_pieces(removed, now).await
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a walked subtree (`removed`, its root first, parents before children) in
    /// guarded pieces, children before their directory, so every state in between is a
    /// consistent namespace.
    async fn delete_in_pieces(&self, mut removed: Vec<Entry>, now: u64) -> Result<usize, Error> {
        let total = removed.len();
        removed.reverse();
        let mut size = DELETE_PIECE;
        let mut done = 0;
        while done < total {
            let take = size.min(total - done);
            let mut batch = Batch::new();
            store::plan_delete_entries(&removed[done..done + take], now, &mut batch);
            match self.commit(batch).await {
                Ok(()) => done += take,
                Err(Error::StoreLimit(_)) if take > 1 => size = take / 2,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Moves the file or directory (with its subtree) at `src` to `dst`, creating `dst`'s
    /// parents. Returns the moved entry.
    #[tracing::instrument(level = "debug", skip_all, fields(src = %src, dst = %dst))]
    pub async fn rename(self: &Arc<Self>, src: String, dst: String) -> Result<Entry, Error> {
        check_mutable(&src)?;
        check_mutable(&dst)?;
        if src == dst {
            return Err(Error::AlreadyExists { path: dst });
        }
        if path::is_within(&dst, &src) {
            return Err(Error::BadPath(format!(
                "cannot move {src} into itself ({dst})"
            )));
        }
        self.critical(move |f| async move {
            let _locks = f.locks.lock(&[&src, &dst]).await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let now = now_ms();
                let (src, dst) = (src.clone(), dst.clone());
                let (batch, moved) = f
                    .read(move |s| {
                        let entry = s
                            .get(&src)?
                            .ok_or_else(|| Error::NotFound { path: src.clone() })?;
                        if s.get(&dst)?.is_some() {
                            return Err(Error::AlreadyExists { path: dst });
                        }
                        let mut batch = Batch::new();
                        batch.guard(dst.clone(), None);
                        plan_parents(s, &dst, now, &mut batch)?;
                        let moved = store::plan_rename(s, &entry, &dst, &mut batch)?;
                        Ok((batch, moved))
                    })
                    .await?;
                match f.commit(batch).await {
                    Err(e) if lost_race(&e, attempt, "rename").await => continue,
                    Err(e) => return Err(e),
                    Ok(()) => return Ok(moved),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_check_expect() {
        let e = Entry {
            version: 3,
            ..Entry::default()
        };
        assert!(check_expect("/x", None, Some(Expect::Absent)).is_ok());
        assert!(check_expect("/x", Some(&e), Some(Expect::Absent)).is_err());
        assert!(check_expect("/x", Some(&e), Some(Expect::Version(3))).is_ok());
        assert!(check_expect("/x", Some(&e), Some(Expect::Version(2))).is_err());
        assert!(check_expect("/x", None, Some(Expect::Version(1))).is_err());
        assert!(check_expect("/x", None, None).is_ok());
    }
}
