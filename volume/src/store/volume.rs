//! One volume: a `.dat` file of needles, its `.idx`, the in-memory key map, and the writer
//! thread that appends with group commit.
//!
//! # Write path and when data is on disk
//! Requests are encoded (and checksummed) by the caller and sent to the volume's appender
//! thread. It takes every request waiting in its queue and appends the records to the `.dat`,
//! then hands the batch to the syncer thread, which calls `fdatasync` once for every batch
//! appended since its last sync (group commit: concurrent writers share one sync, and the
//! next batch is appended while the previous one is being synced), appends the batches'
//! `.idx` rows, publishes the keys in the in-memory map and only then answers. A needle is therefore on disk before anyone can read it or be told it
//! was written. The `.idx` is not synced: it is a cache that recovery rebuilds from the `.dat`.
//!
//! A failed append truncates the `.dat` back to where the batch began, so no half-written
//! needle is ever indexed. A failed fdatasync poisons the volume (the kernel may have dropped
//! the dirty pages, so nothing written since the last good sync can be trusted to be on disk):
//! it refuses writes, keeps serving checksummed reads, and the error names the volume.
//!
//! # Recovery
//! On open, the superblock's checksum is verified, then the index is rebuilt from the `.idx`
//! rows (each validated against the needle header it points at) and a scan of the `.dat` past
//! the last good row. Recovery never removes bytes that are followed by a valid needle: a
//! corrupt region in the middle is skipped and reported; only a torn tail is cut, after a copy
//! is kept; an I/O error opens the volume read-only instead of cutting. See `store::recover`.
//! Records past the last `.idx` row may well have been acknowledged (the `.idx` is not synced),
//! which is why they are re-indexed rather than dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::api::master::{Replication, VolumeInfo};
use common::ids::VolumeId;
use tokio::sync::{mpsc, oneshot};

use super::faults::{Faults, SyncedFile};
use super::idx::{self, IdxRow};
use super::needle::{self, Needle};
use super::{SUPERBLOCK_LEN, VolumeError, superblock};
use crate::metrics::Metrics;

/// Largest `.dat` an `.idx` row can address (offset/8 in a u32).
const MAX_DAT_LEN: u64 = (u32::MAX as u64) * needle::ALIGN;
/// Most requests one group commit takes.
const MAX_BATCH: usize = 4096;
/// Most bytes one group commit appends.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Where a live needle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) offset: u64,
    pub(crate) size: u32,
}

/// What recovery found when the volume was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Needles re-indexed from the `.dat` past the last `.idx` row.
    pub needles_recovered: u64,
    /// Bytes cut from a torn `.dat` tail (no valid needle after them); copied aside first.
    pub bytes_cut: u64,
    /// Where the cut tail was copied (`<name>.dat.torn.<unix ms>`).
    pub torn_copy: Option<PathBuf>,
    /// Corrupt regions followed by valid needles: skipped, left in place.
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub bytes_skipped: u64,
    /// `.idx` rows dropped (torn, zeroed, pointing past the `.dat`, or not matching the needle
    /// header they point at); the scan re-derives them.
    pub idx_rows_dropped: u64,
    /// The I/O error that stopped recovery; the volume is then read-only and nothing was cut.
    pub io_error: Option<String>,
    /// Whether the superblock had no checksum (written by an older Kelp).
    pub unchecked_superblock: bool,
}

struct Shared {
    id: VolumeId,
    index: RwLock<HashMap<u64, Loc>>,
    end: AtomicU64,
    file_count: AtomicU64,
    delete_count: AtomicU64,
    max_key: AtomicU64,
    poisoned: Mutex<Option<String>>,
    metrics: Metrics,
    faults: Arc<Faults>,
}

/// A request to the writer thread.
enum Op {
    Put {
        record: Vec<u8>,
        key: u64,
        size: u32,
        fsync: bool,
        appended: Option<oneshot::Sender<()>>,
        done: oneshot::Sender<Result<(), VolumeError>>,
    },
    Delete {
        key: u64,
        cookie: u32,
        expect_offset: u64,
        fsync: bool,
        done: oneshot::Sender<Result<(), VolumeError>>,
    },
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
    reader: File,
    shared: Arc<Shared>,
    read_only: AtomicBool,
    tx: mpsc::Sender<Op>,
}

/// A needle read back, checksum verified.
#[derive(Debug, Clone)]
pub struct ReadNeedle {
    /// The needle.
    pub needle: Needle,
    /// Its checksum, served as ETag.
    pub checksum: u32,
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

fn now_ns() -> u64 {
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
            end: AtomicU64::new(end),
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
        let reader = File::open(&dat_path).map_err(io("open dat for reading"))?;
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let writer = Writer {
            shared: shared.clone(),
            dat,
            idx: idx_file,
            idx_len: rec.idx_len,
            end,
        };
        std::thread::Builder::new()
            .name(format!("volume-{id}-writer"))
            .spawn(move || writer.run(rx))
            .map_err(io("spawn writer thread"))?;
        Ok((
            Self {
                id,
                collection: collection.to_owned(),
                replication,
                dat_path,
                reader,
                shared,
                read_only: AtomicBool::new(false),
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

    /// What the master is told about this volume.
    pub fn info(&self) -> VolumeInfo {
        VolumeInfo {
            id: self.id,
            collection: self.collection.clone(),
            replication: self.replication,
            size: self.size(),
            file_count: self.shared.file_count.load(Ordering::Relaxed),
            delete_count: self.shared.delete_count.load(Ordering::Relaxed),
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

    /// Body size of the live needle `key`, if any (to decide whether a read is worth moving
    /// off the async runtime).
    pub fn needle_size(&self, key: u64) -> Option<u32> {
        self.shared
            .index
            .read()
            .expect("index lock")
            .get(&key)
            .map(|l| l.size)
    }

    /// Verifies the checksum of every live needle (in offset order, so the disk is read
    /// sequentially) and returns the keys of those that fail. Each failure is logged and counted
    /// in `crc_failures`; a bad needle is never served (every read checks again).
    pub fn scrub(&self) -> Vec<u64> {
        let mut locs: Vec<(u64, Loc)> = self
            .shared
            .index
            .read()
            .expect("index lock")
            .iter()
            .map(|(k, l)| (*k, *l))
            .collect();
        locs.sort_by_key(|(_, l)| l.offset);
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for (key, loc) in locs {
            buf.resize(needle::record_len(loc.size) as usize, 0);
            let ok = self.reader.read_exact_at(&mut buf, loc.offset).is_ok()
                && needle::decode(&buf).is_ok_and(|r| r.header.key == key && r.needle.is_some());
            if !ok {
                self.shared.metrics.crc_failures.inc();
                tracing::error!(
                    volume = self.id,
                    key = format_args!("{key:x}"),
                    offset = loc.offset,
                    "scrub found a corrupt needle; it will not be served"
                );
                bad.push(key);
            }
        }
        bad
    }

    /// Reads and verifies the needle `key`; a wrong cookie is "not found".
    pub fn read(&self, key: u64, cookie: u32) -> Result<ReadNeedle, VolumeError> {
        let loc = self
            .shared
            .index
            .read()
            .expect("index lock")
            .get(&key)
            .copied()
            .ok_or(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            })?;
        let len = needle::record_len(loc.size);
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    self.shared.metrics.crc_failures.inc();
                    VolumeError::Corrupt {
                        volume: self.id,
                        what: format!(
                            "needle {key:x} at offset {} lies past the end of the dat",
                            loc.offset
                        ),
                    }
                } else {
                    VolumeError::Io {
                        volume: self.id,
                        op: "read needle",
                        source,
                    }
                }
            })?;
        let rec = needle::decode(&buf).map_err(|e| {
            self.shared.metrics.crc_failures.inc();
            VolumeError::Corrupt {
                volume: self.id,
                what: format!("needle {key:x} at offset {}: {e}", loc.offset),
            }
        })?;
        let Some(n) = rec.needle.filter(|_| rec.header.key == key) else {
            self.shared.metrics.crc_failures.inc();
            return Err(VolumeError::Corrupt {
                volume: self.id,
                what: format!(
                    "index points needle {key:x} at a record of key {:x}",
                    rec.header.key
                ),
            });
        };
        if n.cookie != cookie {
            return Err(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            });
        }
        self.shared.metrics.reads.inc();
        self.shared.metrics.read_bytes.inc_by(n.data.len() as u64);
        Ok(ReadNeedle {
            needle: n,
            checksum: rec.checksum,
        })
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
        let offset = self
            .shared
            .index
            .read()
            .expect("index lock")
            .get(&key)
            .map(|l| l.offset)
            .ok_or(VolumeError::NeedleNotFound {
                volume: self.id,
                key,
            })?;
        let existing = self.read(key, cookie)?;
        let (dtx, drx) = oneshot::channel();
        let op = Op::Delete {
            key,
            cookie,
            expect_offset: offset,
            fsync,
            done: dtx,
        };
        self.tx
            .send(op)
            .await
            .map_err(|_| VolumeError::WriterGone { volume: self.id })?;
        drx.await
            .unwrap_or(Err(VolumeError::WriterGone { volume: self.id }))?;
        Ok(existing.needle.data.len() as u64)
    }
}

/// Applies one `.idx` row to the index.
pub(crate) fn apply_row(index: &mut HashMap<u64, Loc>, row: &IdxRow, delete_count: &mut u64) {
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
            },
        );
    }
}

/// The appender thread's state: the only writer of the `.dat`.
struct Writer {
    shared: Arc<Shared>,
    dat: File,
    idx: File,
    idx_len: u64,
    end: u64,
}

/// A record appended in the current batch, waiting for the sync.
struct Appended {
    row: IdxRow,
    loc: Option<Loc>,
    done: oneshot::Sender<Result<(), VolumeError>>,
    is_delete: bool,
    bytes: u64,
}

/// One appended batch handed from the appender to the syncer.
struct SyncJob {
    appended: Vec<Appended>,
    end: u64,
    want_sync: bool,
}

impl Writer {
    /// Runs the two stages: this thread appends batches, a syncer thread fsyncs, indexes and
    /// answers them. While one batch is being synced the next one is appended, and the syncer
    /// coalesces every batch appended meanwhile into its next `fdatasync`.
    fn run(self, mut rx: mpsc::Receiver<Op>) {
        let Writer {
            shared,
            dat,
            idx,
            idx_len,
            mut end,
        } = self;
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<SyncJob>(4);
        let syncer = match dat.try_clone() {
            Ok(sync_dat) => {
                let s = Syncer {
                    shared: shared.clone(),
                    dat: sync_dat,
                    idx,
                    idx_len,
                    pending_rows: Vec::new(),
                };
                std::thread::Builder::new()
                    .name(format!("volume-{}-sync", shared.id))
                    .spawn(move || s.run(jobs_rx))
                    .ok()
            }
            Err(_) => None,
        };
        if syncer.is_none() {
            poison(&shared, "cannot start the syncer thread".to_owned());
        }
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let mut bytes = 0usize;
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        if let Op::Put { record, .. } = &op {
                            bytes += record.len();
                        }
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            if let Some(job) = append_batch(&shared, &dat, &mut end, batch)
                && let Err(std::sync::mpsc::SendError(job)) = jobs_tx.send(job)
            {
                for a in job.appended {
                    let _ = a
                        .done
                        .send(Err(VolumeError::WriterGone { volume: shared.id }));
                }
            }
        }
        drop(jobs_tx);
        if let Some(h) = syncer {
            let _ = h.join();
        }
        tracing::debug!(volume = shared.id, "volume writer stopped");
    }
}

fn poison(shared: &Shared, reason: String) {
    tracing::error!(volume = shared.id, reason = %reason, "volume poisoned: refusing writes");
    if shared
        .poisoned
        .lock()
        .expect("poison lock")
        .replace(reason)
        .is_none()
    {
        shared.metrics.volumes_failed.inc();
    }
}

fn poisoned(shared: &Shared) -> Option<String> {
    shared.poisoned.lock().expect("poison lock").clone()
}

/// Appends one batch to the `.dat`; returns the job for the syncer, or `None` when every
/// request of the batch was already answered (failed or rejected).
fn append_batch(shared: &Shared, dat: &File, end: &mut u64, batch: Vec<Op>) -> Option<SyncJob> {
    let id = shared.id;
    if let Some(reason) = poisoned(shared) {
        let err = VolumeError::Poisoned { volume: id, reason };
        for op in batch {
            reply_err(op, &err);
        }
        return None;
    }
    let start = *end;
    let mut pos = start;
    let mut want_sync = false;
    let mut appended: Vec<Appended> = Vec::with_capacity(batch.len());
    let mut failure: Option<VolumeError> = None;
    let mut deleted_in_batch: Vec<u64> = Vec::new();
    for op in batch {
        if let Some(err) = &failure {
            reply_err(op, err);
            continue;
        }
        match op {
            Op::Put {
                record,
                key,
                size,
                fsync,
                appended: notify,
                done,
            } => {
                let len = record.len() as u64;
                if pos + len > MAX_DAT_LEN {
                    let _ = done.send(Err(VolumeError::Full { volume: id }));
                    continue;
                }
                if let Err(source) = shared
                    .faults
                    .check_write()
                    .and_then(|()| dat.write_all_at(&record, pos))
                {
                    let err = VolumeError::from_write(id, source);
                    let _ = done.send(Err(err.clone_shallow()));
                    failure = Some(err);
                    continue;
                }
                if let Some(n) = notify {
                    let _ = n.send(());
                }
                want_sync |= fsync;
                appended.push(Appended {
                    row: IdxRow {
                        key,
                        offset_units: (pos / needle::ALIGN) as u32,
                        size: size as i32,
                    },
                    loc: Some(Loc { offset: pos, size }),
                    done,
                    is_delete: false,
                    bytes: len,
                });
                deleted_in_batch.retain(|k| *k != key);
                pos += len;
            }
            Op::Delete {
                key,
                cookie,
                expect_offset,
                fsync,
                done,
            } => {
                let current = shared
                    .index
                    .read()
                    .expect("index lock")
                    .get(&key)
                    .map(|l| l.offset);
                if current != Some(expect_offset) || deleted_in_batch.contains(&key) {
                    let _ = done.send(Err(VolumeError::NeedleNotFound { volume: id, key }));
                    continue;
                }
                let record = needle::encode_tombstone(cookie, key, now_ns());
                let len = record.len() as u64;
                if let Err(source) = shared
                    .faults
                    .check_write()
                    .and_then(|()| dat.write_all_at(&record, pos))
                {
                    let err = VolumeError::from_write(id, source);
                    let _ = done.send(Err(err.clone_shallow()));
                    failure = Some(err);
                    continue;
                }
                want_sync |= fsync;
                deleted_in_batch.push(key);
                appended.push(Appended {
                    row: IdxRow {
                        key,
                        offset_units: (pos / needle::ALIGN) as u32,
                        size: -1,
                    },
                    loc: None,
                    done,
                    is_delete: true,
                    bytes: len,
                });
                pos += len;
            }
        }
    }
    if let Some(err) = failure {
        // Cut whatever this batch appended, so no half-written needle stays in the .dat.
        // Earlier batches lie below `start` and are unaffected.
        shared.metrics.write_errors.inc();
        if let Err(e) = dat.set_len(start) {
            poison(shared, format!("cannot cut a failed append: {e}"));
        }
        for a in appended {
            let _ = a.done.send(Err(err.clone_shallow()));
        }
        return None;
    }
    if appended.is_empty() {
        return None;
    }
    *end = pos;
    Some(SyncJob {
        appended,
        end: pos,
        want_sync,
    })
}

/// The syncer thread's state: fsyncs the `.dat`, appends `.idx` rows, publishes and answers.
struct Syncer {
    shared: Arc<Shared>,
    dat: File,
    idx: File,
    idx_len: u64,
    /// Rows a full disk kept out of the `.idx`, written before any later row (never a gap).
    pending_rows: Vec<u8>,
}

impl Syncer {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<SyncJob>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            while let Ok(more) = jobs.try_recv() {
                batch.push(more);
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, jobs: Vec<SyncJob>) {
        let id = self.shared.id;
        let end = jobs.last().map_or(0, |j| j.end);
        let want_sync = jobs.iter().any(|j| j.want_sync);
        let appended: Vec<Appended> = jobs.into_iter().flat_map(|j| j.appended).collect();
        if let Some(reason) = poisoned(&self.shared) {
            for a in appended {
                let _ = a.done.send(Err(VolumeError::Poisoned {
                    volume: id,
                    reason: reason.clone(),
                }));
            }
            return;
        }
        if want_sync {
            let t = Instant::now();
            let res = self.dat.sync_data();
            self.shared.metrics.fdatasyncs.inc();
            self.shared
                .metrics
                .fdatasync_seconds
                .observe(t.elapsed().as_secs_f64());
            if res.is_ok() {
                self.shared.faults.synced(SyncedFile::Dat, end);
            }
            if let Err(e) = res {
                let reason = format!("fdatasync failed: {e}");
                poison(&self.shared, reason.clone());
                for a in appended {
                    let _ = a.done.send(Err(VolumeError::Poisoned {
                        volume: id,
                        reason: reason.clone(),
                    }));
                }
                return;
            }
        }
        let mut rows = std::mem::take(&mut self.pending_rows);
        for a in &appended {
            rows.extend_from_slice(&a.row.encode());
        }
        match self
            .shared
            .faults
            .check_idx_write()
            .and_then(|()| self.idx.write_all_at(&rows, self.idx_len))
        {
            Ok(()) => self.idx_len += rows.len() as u64,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                // The needles are durable in the .dat and the .idx is only a cache: answer
                // them, and keep their rows to write before any later one, so the .idx never
                // has a gap (recovery re-indexes whatever is past its last row).
                tracing::warn!(volume = id, rows = rows.len() / idx::ROW_LEN, error = %e, "disk full appending idx rows; they are kept and retried");
                self.shared.metrics.write_errors.inc();
                self.pending_rows = rows;
            }
            Err(e) => {
                // The needles are durable in the .dat; recovery will re-index them. But this
                // process's .idx may now have a hole, so stop writing until a restart.
                let reason = format!("idx append failed: {e}");
                poison(&self.shared, reason.clone());
                self.shared.end.store(end, Ordering::Release);
                for a in appended {
                    let _ = a.done.send(Err(VolumeError::Poisoned {
                        volume: id,
                        reason: reason.clone(),
                    }));
                }
                return;
            }
        }
        let m = &self.shared.metrics;
        m.batch_needles.observe(appended.len() as f64);
        {
            let mut index = self.shared.index.write().expect("index lock");
            for a in &appended {
                match a.loc {
                    Some(loc) => {
                        index.insert(a.row.key, loc);
                    }
                    None => {
                        index.remove(&a.row.key);
                    }
                }
            }
            self.shared
                .file_count
                .store(index.len() as u64, Ordering::Relaxed);
        }
        self.shared.end.store(end, Ordering::Release);
        for a in appended {
            m.write_bytes.inc_by(a.bytes);
            if a.is_delete {
                m.deletes.inc();
                self.shared.delete_count.fetch_add(1, Ordering::Relaxed);
            } else {
                m.writes.inc();
                self.shared.max_key.fetch_max(a.row.key, Ordering::Relaxed);
            }
            let _ = a.done.send(Ok(()));
        }
    }
}

fn reply_err(op: Op, err: &VolumeError) {
    match op {
        Op::Put { done, .. } | Op::Delete { done, .. } => {
            let _ = done.send(Err(err.clone_shallow()));
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        tracing::debug!(volume = self.id, "closing volume");
    }
}
