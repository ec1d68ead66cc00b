//! One volume: the handle to a `.dat` file of needles, its `.idx` and the in-memory key map;
//! opening it (superblock check, recovery, start of its group-commit threads), the state it
//! shares with those threads, and the entry points of writes, deletes and compaction. Reads and
//! scrubs are in `super::read`.
//!
//! # Write path and when data is on disk
//! Requests are encoded (and checksummed) by the caller and sent to the volume's appender
//! thread (`super::writer`). It takes every request waiting in its queue and appends the
//! records to the `.dat`, then hands the batch to the syncer thread (`super::syncer`), which
//! calls `fdatasync` once for every batch appended since its last sync (group commit:
//! concurrent writers share one sync, and the next batch is appended while the previous one is
//! being synced), appends the batches' `.idx` rows, publishes the keys in the in-memory map
//! and only then answers. A needle is therefore on disk before anyone can read it or be told
//! it was written. The `.idx` is not synced: it is a cache that recovery rebuilds from the
//! `.dat`.
//!
//! A failed append truncates the `.dat` back to where the batch began, so no half-written
//! needle is ever indexed. A failed fdatasync poisons the volume (the kernel may have dropped
//! the dirty pages, so nothing written since the last good sync can be trusted to be on disk):
//! it refuses writes, keeps serving checksummed reads, and the error names the volume.
//!
//! # Recovery
//! On open, the superblock's checksum is verified (a bad one is `Corrupt`: the store
//! quarantines the files), then `super::recover` rebuilds the index from the `.idx` and the
//! `.dat`. It never removes bytes that are followed by a valid needle, and an I/O error opens
//! the volume read-only instead of cutting; records past the last `.idx` row may well have been
//! acknowledged (the `.idx` is not synced), which is why they are re-indexed rather than
//! dropped. Only then are the appender and syncer threads started, from where recovery ended.

use common::sync::LockExt;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use common::api::master::{Replication, VolumeInfo};
use common::ids::VolumeId;
use tokio::sync::{mpsc, oneshot};

use super::faults::Faults;
use super::idx::IdxRow;
use super::needle::{self, Needle};
use super::recover::RecoveryReport;
use super::vacuum;
use super::writer::{self, Op};
use super::{SUPERBLOCK_LEN, VolumeError, superblock};
use crate::metrics::Metrics;

/// Where a live needle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) offset: u64,
    pub(crate) size: u32,
    /// The needle's cookie (0 for rows a read error kept unvalidated; the volume then takes no
    /// writes, and reads check the cookie in the needle itself).
    pub(crate) cookie: u32,
}

/// State shared by the handle, the appender and the syncer threads.
pub(crate) struct Shared {
    pub(crate) id: VolumeId,
    pub(crate) index: RwLock<HashMap<u64, Loc>>,
    /// The `.dat` the index points into, for reads. Swapped by a compaction while it holds the
    /// index's write lock, and read while holding its read lock, so a location and the file
    /// it is in always go together.
    pub(crate) reader: RwLock<Arc<File>>,
    /// How many compactions were swapped in; changed under the index's write lock, so a
    /// location read with it names a record of that generation's file.
    pub(crate) generation: AtomicU64,
    /// Serializes compactions of this volume.
    pub(crate) compacting: Mutex<()>,
    /// End of the published records (where the syncer has answered up to).
    pub(crate) end: AtomicU64,
    /// Sequence number of the last batch the syncer published in `index`.
    pub(crate) published_seq: AtomicU64,
    pub(crate) file_count: AtomicU64,
    pub(crate) delete_count: AtomicU64,
    pub(crate) max_key: AtomicU64,
    pub(crate) poisoned: Mutex<Option<String>>,
    pub(crate) metrics: Metrics,
    pub(crate) faults: Arc<Faults>,
}

/// An open volume.
pub struct Volume {
    /// Volume id.
    pub id: VolumeId,
    /// Collection ("" for none).
    pub collection: String,
    /// Replica placement.
    pub replication: Replication,
    dat_path: PathBuf,
    pub(super) shared: Arc<Shared>,
    read_only: AtomicBool,
    /// Set (under the compaction lock) once [`super::Store::delete_volume`] removed the files:
    /// no compaction may recreate them, no write may be acknowledged into them.
    deleted: AtomicBool,
    tx: mpsc::Sender<Op>,
}

/// Awaitable stages of a write: appended (in the page cache), then durable and visible.
pub struct PendingWrite {
    /// The record's checksum (the needle's ETag).
    pub checksum: u32,
    appended: oneshot::Receiver<()>,
    done: oneshot::Receiver<Result<(), VolumeError>>,
    id: VolumeId,
}

impl PendingWrite {
    /// Waits until the record is appended to the `.dat` (not yet synced).
    pub async fn appended(&mut self) {
        let _ = (&mut self.appended).await;
    }

    /// Waits until the record is synced (as requested), indexed and readable.
    pub async fn done(self) -> Result<(), VolumeError> {
        self.done
            .await
            .unwrap_or(Err(VolumeError::WriterGone { volume: self.id }))
    }
}

/// File name stem of a volume: `<collection>_<vid>` or `<vid>`.
pub fn file_stem(collection: &str, id: VolumeId) -> String {
    if collection.is_empty() {
        id.to_string()
    } else {
        format!("{collection}_{id}")
    }
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Volume {
    /// Creates a new, empty volume durably (superblock written via temp + fsync + rename +
    /// fsync dir) and opens it.
    pub fn create(
        dir: &Path,
        id: VolumeId,
        collection: &str,
        replication: Replication,
        metrics: Metrics,
    ) -> Result<(Self, RecoveryReport), VolumeError> {
        let stem = file_stem(collection, id);
        let dat = dir.join(format!("{stem}.dat"));
        let idx = dir.join(format!("{stem}.idx"));
        let io = |op: &'static str| {
            move |source| VolumeError::Io {
                volume: id,
                op,
                source,
            }
        };
        if std::fs::metadata(&dat).is_ok() {
            return Err(VolumeError::Exists { volume: id });
        }
        // The .idx first: a .dat without an .idx is fine (recovery rebuilds it), the reverse not.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&idx)
            .and_then(|f| f.sync_all())
            .map_err(io("create idx"))?;
        common::fs::durable_overwrite(&dat, &superblock::encode(replication))
            .map_err(io("create dat"))?;
        Self::open(dir, id, collection, metrics)
    }

    /// Opens an existing volume, recovering as described in the module docs.
    pub fn open(
        dir: &Path,
        id: VolumeId,
        collection: &str,
        metrics: Metrics,
    ) -> Result<(Self, RecoveryReport), VolumeError> {
        Self::open_with(dir, id, collection, metrics, Arc::default())
    }

    /// [`Volume::open`] with a fault plan (tests arm it to inject I/O errors).
    pub(crate) fn open_with(
        dir: &Path,
        id: VolumeId,
        collection: &str,
        metrics: Metrics,
        faults: Arc<Faults>,
    ) -> Result<(Self, RecoveryReport), VolumeError> {
        let stem = file_stem(collection, id);
        let dat_path = dir.join(format!("{stem}.dat"));
        let idx_path = dir.join(format!("{stem}.idx"));
        let io = |op: &'static str| {
            move |source| VolumeError::Io {
                volume: id,
                op,
                source,
            }
        };
        vacuum::finish_or_discard(id, &vacuum::Paths::new(dir, &stem))?;
        let dat = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dat_path)
            .map_err(io("open dat"))?;
        let idx_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&idx_path)
            .map_err(io("open idx"))?;
        let dat_len = dat.metadata().map_err(io("stat dat"))?.len();
        let mut sb = [0u8; SUPERBLOCK_LEN as usize];
        if dat_len < SUPERBLOCK_LEN {
            return Err(VolumeError::Corrupt {
                volume: id,
                what: format!(
                    "{} is {dat_len} bytes, shorter than its superblock",
                    dat_path.display()
                ),
            });
        }
        faults
            .check_read(0, sb.len())
            .and_then(|()| dat.read_exact_at(&mut sb, 0))
            .map_err(io("read superblock"))?;
        let sb = superblock::decode(&sb).map_err(|e| VolumeError::Corrupt {
            volume: id,
            what: format!("{}: {e}", dat_path.display()),
        })?;
        if !sb.checksummed {
            tracing::warn!(
                volume = id,
                file = %dat_path.display(),
                "superblock has no checksum (written by an older kelp); its replication cannot be verified"
            );
        }
        let replication = sb.replication;
        let idx_bytes = std::fs::read(&idx_path).map_err(io("read idx"))?;
        let rec = super::recover::recover(
            id, &dat, &dat_path, dat_len, &idx_file, &idx_bytes, &metrics, &faults,
        )?;
        let mut report = rec.report;
        report.unchecked_superblock = !sb.checksummed;
        let end = rec.end;
        let file_count = rec.index.len() as u64;
        let shared = Arc::new(Shared {
            id,
            index: RwLock::new(rec.index),
            reader: RwLock::new(Arc::new(
                File::open(&dat_path).map_err(io("open dat for reading"))?,
            )),
            compacting: Mutex::new(()),
            generation: AtomicU64::new(0),
            end: AtomicU64::new(end),
            published_seq: AtomicU64::new(0),
            file_count: AtomicU64::new(file_count),
            delete_count: AtomicU64::new(rec.delete_count),
            max_key: AtomicU64::new(rec.max_key),
            poisoned: Mutex::new(None),
            metrics: metrics.clone(),
            faults,
        });
        if let Some(reason) = rec.failure {
            poison(
                &shared,
                format!("recovery stopped, nothing was cut: {reason}"),
            );
        }
        let tx = writer::start(shared.clone(), dat, idx_file, rec.idx_len, end)
            .map_err(io("spawn writer thread"))?;
        Ok((
            Self {
                id,
                collection: collection.to_owned(),
                replication,
                dat_path,
                shared,
                read_only: AtomicBool::new(false),
                deleted: AtomicBool::new(false),
                tx,
            },
            report,
        ))
    }

    /// The fault plan of this volume (tests arm it).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Why the volume refuses writes, if it does (a failed fsync, or recovery stopped by an
    /// I/O error).
    pub fn failure(&self) -> Option<String> {
        self.poisoned()
    }

    /// Path of the `.dat`.
    pub fn dat_path(&self) -> &Path {
        &self.dat_path
    }

    /// Bytes in the `.dat`.
    pub fn size(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// Marks the volume read-only (full) or writable.
    pub fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::Release);
    }

    /// Live needles (a counter: unlike [`Volume::info`], no scan of the key map).
    pub fn file_count(&self) -> u64 {
        self.shared.file_count.load(Ordering::Relaxed)
    }

    /// What the master is told about this volume. Its `deleted_bytes` sums the key map
    /// ([`Volume::garbage`]): call it for heartbeats and status, not for a count.
    pub fn info(&self) -> VolumeInfo {
        VolumeInfo {
            id: self.id,
            collection: self.collection.clone(),
            replication: self.replication,
            size: self.size(),
            file_count: self.file_count(),
            delete_count: self.shared.delete_count.load(Ordering::Relaxed),
            deleted_bytes: self.garbage(),
            read_only: self.read_only.load(Ordering::Acquire) || self.poisoned().is_some(),
            max_file_key: self.shared.max_key.load(Ordering::Relaxed),
        }
    }

    fn poisoned(&self) -> Option<String> {
        poisoned(&self.shared)
    }

    /// Starts writing a needle; await the returned stages. `size_limit` is the master's
    /// volume size limit.
    pub async fn write(
        &self,
        n: &Needle,
        fsync: bool,
        size_limit: u64,
    ) -> Result<PendingWrite, VolumeError> {
        if let Some(reason) = self.poisoned() {
            return Err(VolumeError::Poisoned {
                volume: self.id,
                reason,
            });
        }
        if self.deleted.load(Ordering::Acquire) {
            return Err(VolumeError::VolumeNotFound { volume: self.id });
        }
        if self.read_only.load(Ordering::Acquire) || self.size() >= size_limit {
            return Err(VolumeError::Full { volume: self.id });
        }
        let (record, checksum) = n
            .encode(now_ns())
            .map_err(|_| VolumeError::TooLarge { volume: self.id })?;
        let size = u32::from_be_bytes(record[12..16].try_into().expect("header"));
        let (atx, arx) = oneshot::channel();
        let (dtx, drx) = oneshot::channel();
        let op = Op::Put {
            record,
            key: n.key,
            cookie: n.cookie,
            size,
            fsync,
            appended: Some(atx),
            done: dtx,
        };
        self.tx
            .send(op)
            .await
            .map_err(|_| VolumeError::WriterGone { volume: self.id })?;
        Ok(PendingWrite {
            checksum,
            appended: arx,
            done: drx,
            id: self.id,
        })
    }

    /// Bytes of the `.dat` that hold no live needle: overwritten and deleted needles and
    /// tombstones (what a compaction gives back).
    pub fn garbage(&self) -> u64 {
        let index = self.shared.index.read_or_abort();
        let live: u64 = index.values().map(|l| needle::record_len(l.size)).sum();
        self.size().saturating_sub(SUPERBLOCK_LEN + live)
    }

    /// Compacts the volume online (see [`super::vacuum`]): reads and writes go on; answers
    /// the `.dat`'s size before and after. Blocking: call it off the async runtime.
    pub fn compact(&self) -> Result<(u64, u64), VolumeError> {
        let _one = self.shared.compacting.read_or_abort();
        if self.deleted.load(Ordering::Acquire) {
            return Err(VolumeError::VolumeNotFound { volume: self.id });
        }
        if let Some(reason) = self.poisoned() {
            return Err(VolumeError::Poisoned {
                volume: self.id,
                reason,
            });
        }
        let (snapshot, from, reader) = {
            let index = self.shared.index.read_or_abort();
            (
                index.clone(),
                self.shared.end.load(Ordering::Acquire),
                self.shared.reader.read_or_abort().clone(),
            )
        };
        let dir = self.dat_path.parent().unwrap_or(Path::new("."));
        let paths = vacuum::Paths::new(dir, &file_stem(&self.collection, self.id));
        let mut sb = [0u8; SUPERBLOCK_LEN as usize];
        reader
            .read_exact_at(&mut sb, 0)
            .map_err(|source| VolumeError::Io {
                volume: self.id,
                op: "read superblock",
                source,
            })?;
        let copy = match vacuum::copy_live(self.id, &paths, &sb, &reader, &snapshot) {
            Ok(c) => c,
            Err(e) => {
                vacuum::discard(&paths);
                return Err(e);
            }
        };
        if self.shared.faults.crash_at("copied") {
            return Err(vacuum::simulated_crash(self.id, "copied"));
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .blocking_send(Op::Compact {
                copy: Box::new(copy),
                paths,
                from,
                done,
            })
            .map_err(|_| VolumeError::WriterGone { volume: self.id })?;
        let (before, after) = answer
            .blocking_recv()
            .unwrap_or(Err(VolumeError::WriterGone { volume: self.id }))?;
        tracing::info!(volume = self.id, before, after, "volume compacted");
        Ok((before, after))
    }

    /// Removes the volume's files (`.idx` first: a `.dat` alone is recovered, a stale `.idx`
    /// would not be) and any compaction leftovers, then fsyncs the directory, unless a
    /// compaction is running ([`VolumeError::VacuumInProgress`]). Afterwards the volume refuses
    /// writes and compactions; open readers keep their file until they finish. Blocking.
    pub(super) fn remove_files(&self) -> Result<(), VolumeError> {
        let _one = match self.shared.compacting.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(VolumeError::VacuumInProgress { volume: self.id });
            }
            Err(std::sync::TryLockError::Poisoned(_)) => {
                common::sync::abort("volume compaction lock")
            }
        };
        self.deleted.store(true, Ordering::Release);
        let dir = self.dat_path.parent().unwrap_or(Path::new("."));
        let paths = vacuum::Paths::new(dir, &file_stem(&self.collection, self.id));
        let io = |op: &'static str| {
            move |source| VolumeError::Io {
                volume: self.id,
                op,
                source,
            }
        };
        let remove = |f: &Path| match std::fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let removed = remove(&paths.idx)
            .and_then(|()| remove(&paths.dat))
            .map_err(io("remove volume file"));
        if let Err(e) = removed {
            self.deleted.store(false, Ordering::Release);
            return Err(e);
        }
        vacuum::discard(&paths);
        common::fs::fsync_dir(dir).map_err(io("fsync dir after removing the volume"))
    }

    /// Sends a deletion of `key` aimed at the record at `expect_offset` without reading it
    /// first (tests race it against newer writes).
    #[cfg(test)]
    pub(crate) async fn delete_at(
        &self,
        key: u64,
        cookie: u32,
        expect_offset: u64,
    ) -> Result<(), VolumeError> {
        self.send_delete_at(key, cookie, expect_offset)
            .await?
            .await
            .unwrap_or(Err(VolumeError::WriterGone { volume: self.id }))
    }

    /// Queues [`Volume::delete_at`]'s deletion; the receiver answers it.
    #[cfg(test)]
    pub(crate) async fn send_delete_at(
        &self,
        key: u64,
        cookie: u32,
        expect_offset: u64,
    ) -> Result<oneshot::Receiver<Result<(), VolumeError>>, VolumeError> {
        let (dtx, drx) = oneshot::channel();
        let op = Op::Delete {
            key,
            cookie,
            expect_offset,
            generation: self.shared.generation.load(Ordering::Acquire),
            fsync: true,
            done: dtx,
        };
        self.tx
            .send(op)
            .await
            .map_err(|_| VolumeError::WriterGone { volume: self.id })?;
        Ok(drx)
    }

    /// Offset of the live record of `key`, if any.
    #[cfg(test)]
    pub(crate) fn offset_of(&self, key: u64) -> Option<u64> {
        self.shared
            .index
            .read_or_abort()
            .get(&key)
            .map(|l| l.offset)
    }

    /// Deletes the needle `key` (cookie checked) by appending a tombstone; returns the
    /// deleted blob's size.
    pub async fn delete(&self, key: u64, cookie: u32, fsync: bool) -> Result<u64, VolumeError> {
        if let Some(reason) = self.poisoned() {
            return Err(VolumeError::Poisoned {
                volume: self.id,
                reason,
            });
        }
        // The deletion names the record it read; the appender applies it only if that is still
        // the newest record of the key (see `writer::append_batch`). A compaction swapped in
        // between moves every record: read again and retry.
        let mut attempts = 0;
        let existing = loop {
            let (existing, loc, generation) = self.read_loc(key, cookie)?;
            let (dtx, drx) = oneshot::channel();
            let op = Op::Delete {
                key,
                cookie,
                expect_offset: loc.offset,
                generation,
                fsync,
                done: dtx,
            };
            self.tx
                .send(op)
                .await
                .map_err(|_| VolumeError::WriterGone { volume: self.id })?;
            match drx
                .await
                .unwrap_or(Err(VolumeError::WriterGone { volume: self.id }))
            {
                Err(VolumeError::Moved { .. }) if attempts < 3 => attempts += 1,
                res => {
                    res?;
                    break existing;
                }
            }
        };
        Ok(existing.needle.data.len() as u64)
    }
}

/// Applies one `.idx` row to the index.
pub(crate) fn apply_row(
    index: &mut HashMap<u64, Loc>,
    row: &IdxRow,
    cookie: u32,
    delete_count: &mut u64,
) {
    if row.is_delete() {
        if index.remove(&row.key).is_some() {
            *delete_count += 1;
        }
    } else {
        index.insert(
            row.key,
            Loc {
                offset: row.offset(),
                size: row.body_size(),
                cookie,
            },
        );
    }
}

pub(crate) fn poison(shared: &Shared, reason: String) {
    tracing::error!(volume = shared.id, reason = %reason, "volume poisoned: refusing writes");
    if shared.poisoned.read_or_abort().replace(reason).is_none() {
        shared.metrics.volumes_failed.inc();
    }
}

pub(crate) fn poisoned(shared: &Shared) -> Option<String> {
    shared.poisoned.read_or_abort().clone()
}

impl Drop for Volume {
    fn drop(&mut self) {
        tracing::debug!(volume = self.id, "closing volume");
    }
}
