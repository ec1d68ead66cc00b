//! Namespace operations: lookups, listings, entry writes with preconditions and fencing,
//! deletes and renames.
//!
//! Invariant: every mutation is one read-check-write under [`PathLocks`](crate::locks::PathLocks)
//! (the path exclusive, its ancestors shared; the chunks an entry takes are locked too), and
//! its effects — the entry, missing parents, and the chunks it orphans queued for deletion —
//! go to the store in one synced batch. So a crash leaves either the whole change or none of
//! it, a chunk has at most one owning entry, and no orphaned chunk is forgotten.

use std::collections::HashSet;
use std::sync::Arc;

use common::api::filer::{Entry, Expect, ParentExpect, PutEntryRequest};

use super::{DIR_MODE, Error, FILE_MODE, Filer, check_mutable, check_path, now_ms};
use crate::chunks;
use crate::path::{self, ROOT};
use crate::store::{self, Batch, ListOpts, MetaStore, Op, Page, PendingDeletion};

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

/// Checks that `p`'s parent directory holds the fencing token.
fn check_fence(s: &dyn MetaStore, p: &str, fence: &ParentExpect) -> Result<(), Error> {
    let parent = path::split(p).0;
    let found = s
        .get(parent)?
        .and_then(|e| e.extended.get(&fence.key).cloned());
    if found.as_deref() == Some(fence.value.as_str()) {
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

/// Adds the missing ancestors of `p` to `batch` as directories; fails if one is a file.
fn plan_parents(s: &dyn MetaStore, p: &str, now: u64, batch: &mut Batch) -> Result<(), Error> {
    for a in path::ancestors(p) {
        match s.get(a)? {
            None => batch.put(new_dir(a, now)),
            Some(e) if e.is_dir => {}
            Some(_) => return Err(Error::NotADirectory { path: a.to_owned() }),
        }
    }
    Ok(())
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
        mut entry: Entry,
        expect: Option<Expect>,
        parent_expect: Option<ParentExpect>,
    ) -> Result<Entry, Error> {
        let p = entry.full_path.clone();
        let _locks = self.locks.lock(&[&p]).await;
        let fids: Vec<String> = entry.chunks.iter().map(|c| c.fid.clone()).collect();
        let fids: Vec<&str> = fids.iter().map(String::as_str).collect();
        let _chunk_locks = self.chunk_locks.lock(&fids).await;
        let now = now_ms();
        let planned = {
            let entry = entry.clone();
            self.read(move |s| {
                if let Some(fence) = &parent_expect {
                    check_fence(s, &entry.full_path, fence)?;
                }
                let old = s.get(&entry.full_path)?;
                check_expect(&entry.full_path, old.as_ref(), expect)?;
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
                let mut batch = Batch::new();
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
            let now = now_ms();
            let (batch, n) = f
                .read(move |s| {
                    let entry = s
                        .get(&p)?
                        .ok_or_else(|| Error::NotFound { path: p.clone() })?;
                    if entry.is_dir && !recursive && store::has_children(s, &p)? {
                        return Err(Error::DirNotEmpty { path: p });
                    }
                    let mut batch = Batch::new();
                    let n = store::plan_delete(s, &entry, now, &mut batch)?;
                    Ok((batch, n))
                })
                .await?;
            f.commit(batch).await?;
            Ok(n)
        })
        .await
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
            let now = now_ms();
            let (batch, moved) = f
                .read(move |s| {
                    let entry = s
                        .get(&src)?
                        .ok_or_else(|| Error::NotFound { path: src.clone() })?;
                    if s.get(&dst)?.is_some() {
                        return Err(Error::AlreadyExists { path: dst });
                    }
                    let mut batch = Batch::new();
                    plan_parents(s, &dst, now, &mut batch)?;
                    let moved = store::plan_rename(s, &entry, &dst, &mut batch)?;
                    Ok((batch, moved))
                })
                .await?;
            f.commit(batch).await?;
            Ok(moved)
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
