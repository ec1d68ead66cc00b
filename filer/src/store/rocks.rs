//! [`RocksStore`]: the durable [`MetaStore`] in RocksDB under `<dir>/meta`.
//!
//! Every batch is one `WriteBatch` written with `sync = true`, so it is on disk (WAL fsynced)
//! when `write` returns; RocksDB groups concurrent synced writers into one WAL sync. Listing
//! uses iterators bounded to the directory's key range (see [`super::codec`]).
//!
//! A batch's chunk → owner index rows are planned from reads of the current state just
//! before the `WriteBatch` is built (see [`super`]). Those reads are not under a store-wide
//! lock (that would serialize writers and defeat RocksDB's shared WAL syncs); the filer's
//! path and chunk locks make them safe instead: writers of one path, and claimers of one
//! chunk, are serialized by the service, and an entry only gives a chunk up in a write that
//! also removes or moves it under its path lock. The batch's guards are checked the same way,
//! just before the write: a RocksDB belongs to one filer process (the data-directory lock).

use std::path::{Path, PathBuf};

use common::api::filer::Entry;
use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use super::codec;
use super::{
    Batch, IndexView, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError, check_guards,
    plan_index,
};

/// The RocksDB-backed store.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksStore {
    /// Opens (creating if missing) the database at `path` and checks its format marker.
    ///
    /// The directory is created with `common::fs::create_dir_all`, which fsyncs its parent:
    /// RocksDB syncs what it writes inside the directory but not the directory's own entry,
    /// so a power cut could otherwise remove the whole store (found by the power-cut e2e test).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        common::fs::create_dir_all(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(4);
        // Prefix-bounded listings benefit from bloom-free block reads; the defaults are fine
        // for metadata sizes, so only bound RocksDB's own log growth here.
        let db = DB::open(&opts, path)?;
        match db.get(codec::FORMAT_KEY)? {
            Some(found) if found == codec::FORMAT => {}
            Some(found) if found == codec::FORMAT_V1 => upgrade_v1(&db)?,
            Some(found) => {
                return Err(StoreError::Format {
                    found: codec::show_key(&found),
                    expected: codec::show_key(codec::FORMAT),
                });
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put(codec::FORMAT_KEY, codec::FORMAT);
                db.write_opt(batch, &sync_write())?;
            }
        }
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Upgrades a v1 database: builds the chunk → owner index from every entry and writes the v2
/// marker, in one synced batch (a crash before it leaves v1, which is upgraded again).
fn upgrade_v1(db: &DB) -> Result<(), StoreError> {
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(vec![codec::ENTRY]);
    read.set_iterate_upper_bound(vec![codec::ENTRY + 1]);
    let mut wb = WriteBatch::default();
    let (mut entries, mut rows) = (0u64, 0u64);
    for item in db.iterator_opt(
        IteratorMode::From(&[codec::ENTRY], Direction::Forward),
        read,
    ) {
        let (k, v) = item?;
        let e = codec::decode_entry(&k, &v)?;
        entries += 1;
        for c in &e.chunks {
            wb.put(codec::owner_key(&c.fid, &e.full_path), codec::OWNER_VALUE);
            rows += 1;
        }
    }
    wb.put(codec::FORMAT_KEY, codec::FORMAT);
    db.write_opt(wb, &sync_write())?;
    tracing::info!(
        entries,
        chunks = rows,
        "upgraded filer metadata to format v2 (chunk owner index)"
    );
    Ok(())
}

/// The database, read by [`plan_index`].
struct DbView<'a>(&'a DB);

impl DbView<'_> {
    /// The pairs of the keys in `[lo, hi)`, in key order.
    fn between(&self, lo: Vec<u8>, hi: Vec<u8>) -> rocksdb::DBIterator<'_> {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(lo.clone());
        read.set_iterate_upper_bound(hi);
        self.0
            .iterator_opt(IteratorMode::From(&lo, Direction::Forward), read)
    }
}

impl IndexView for DbView<'_> {
    fn children(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .between(codec::dir_prefix(dir), codec::dir_upper(dir))
            .take(limit)
        {
            let (k, v) = item?;
            out.push(crate::path::name(&codec::decode_entry(&k, &v)?.full_path).to_owned());
        }
        Ok(out)
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        let key = codec::entry_key(path);
        self.0
            .get_pinned(&key)?
            .map(|v| codec::decode_entry(&key, &v))
            .transpose()
    }

    fn owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.between(codec::owners_prefix(fid), codec::owners_upper(fid)) {
            let (k, _) = item?;
            out.push(codec::owner_path(fid, &k)?);
        }
        Ok(out)
    }

    fn queued(&self, fid: &str) -> Result<Option<PendingDeletion>, StoreError> {
        let key = codec::gc_key(fid);
        self.0
            .get_pinned(&key)?
            .map(|v| codec::decode(&key, &v))
            .transpose()
    }
}

fn sync_write() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl MetaStore for RocksStore {
    fn get(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        if path == crate::path::ROOT {
            return Ok(None);
        }
        let key = codec::entry_key(path);
        self.db
            .get_pinned(&key)?
            .map(|v| codec::decode_entry(&key, &v))
            .transpose()
    }

    fn list(&self, dir: &str, opts: &ListOpts) -> Result<Page, StoreError> {
        let prefix = codec::dir_prefix(dir);
        let upper = codec::dir_upper(dir);
        let start = opts.start.as_deref().map(|s| codec::child_key(dir, s));
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(prefix.clone());
        read.set_iterate_upper_bound(upper.clone());
        let mode = match (&start, opts.reverse) {
            (None, false) => IteratorMode::From(&prefix, Direction::Forward),
            // Seek-for-prev to the (never stored) upper bound lands on the last child.
            (None, true) => IteratorMode::From(&upper, Direction::Reverse),
            (Some(s), false) => IteratorMode::From(s, Direction::Forward),
            (Some(s), true) => IteratorMode::From(s, Direction::Reverse),
        };
        let mut page = Page::default();
        for item in self.db.iterator_opt(mode, read) {
            let (k, v) = item?;
            // The bounds already restrict the range; this guards the invariant cheaply.
            if !(k.as_ref() >= prefix.as_slice() && k.as_ref() < upper.as_slice()) {
                break;
            }
            if !opts.inclusive && start.as_deref() == Some(k.as_ref()) {
                continue;
            }
            if page.entries.len() == opts.limit {
                page.has_more = true;
                break;
            }
            page.entries.push(codec::decode_entry(&k, &v)?);
        }
        Ok(page)
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        // Not under a store-wide lock (see the module doc): the filer's path locks serialize
        // every writer of a guarded path, so the state checked cannot change before the write.
        check_guards(&DbView(&self.db), batch)?;
        let plan = plan_index(&DbView(&self.db), batch)?;
        let mut wb = WriteBatch::default();
        for (i, op) in batch.ops.iter().enumerate() {
            if plan.skip.contains(&i) {
                continue;
            }
            match op {
                Op::Put(e) => wb.put(codec::entry_key(&e.full_path), codec::encode(e)),
                Op::Delete(p) => wb.delete(codec::entry_key(p)),
                Op::QueueDeletion(d) => wb.put(codec::gc_key(&d.fid), codec::encode(d)),
                Op::Dequeue(fid) => wb.delete(codec::gc_key(fid)),
            }
        }
        for (fid, path) in &plan.remove {
            wb.delete(codec::owner_key(fid, path));
        }
        for (fid, path) in &plan.add {
            wb.put(codec::owner_key(fid, path), codec::OWNER_VALUE);
        }
        self.db.write_opt(wb, &sync_write())?;
        Ok(())
    }

    fn chunk_owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        DbView(&self.db).owners(fid)
    }

    fn pending_deletions(&self, limit: usize) -> Result<Vec<PendingDeletion>, StoreError> {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(vec![codec::GC]);
        read.set_iterate_upper_bound(vec![codec::GC + 1]);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_opt(IteratorMode::From(&[codec::GC], Direction::Forward), read)
        {
            if out.len() == limit {
                break;
            }
            let (k, v) = item?;
            out.push(codec::decode(&k, &v)?);
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), StoreError> {
        self.db.get_pinned(codec::FORMAT_KEY)?;
        Ok(())
    }
}
