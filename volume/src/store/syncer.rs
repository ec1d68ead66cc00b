//! The syncer thread of a volume's group commit: makes appended batches durable, then visible.
//!
//! # Invariant
//! A record is answered, and published in the `.idx` and the in-memory map, only after an
//! `fdatasync` of the `.dat` that covers it has succeeded (unless its writer asked for no
//! fsync). One sync covers every batch appended since the previous one (group commit). A
//! failed `fdatasync` poisons the volume: the kernel may have dropped the dirty pages, so
//! nothing since the last good sync is trusted, and every waiter gets the error.

use common::sync::LockExt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::VolumeError;
use super::faults::SyncedFile;
use super::idx::{self, IdxRow};
use super::volume::{Loc, Shared, poison, poisoned};

/// A record appended in the current batch, waiting for the sync.
pub(crate) struct Appended {
    pub(crate) row: IdxRow,
    pub(crate) loc: Option<Loc>,
    pub(crate) done: oneshot::Sender<Result<(), VolumeError>>,
    pub(crate) is_delete: bool,
    pub(crate) bytes: u64,
}

/// One appended batch handed from the appender to the syncer.
pub(crate) struct SyncJob {
    pub(crate) appended: Vec<Appended>,
    pub(crate) end: u64,
    pub(crate) want_sync: bool,
    /// The appender's sequence number of this batch.
    pub(crate) seq: u64,
}

/// What the appender sends the syncer, in order.
pub(crate) enum SyncMsg {
    /// A batch to make durable, publish and answer.
    Commit(SyncJob),
    /// Answer once every earlier batch is committed (a compaction waits for it).
    Barrier(std::sync::mpsc::SyncSender<()>),
    /// Write to these files from now on (a compaction swapped them in).
    Reopen {
        /// The new `.dat`.
        dat: File,
        /// The new `.idx`.
        idx: File,
        /// Its length.
        idx_len: u64,
    },
}

/// The syncer thread's state: fsyncs the `.dat`, appends `.idx` rows, publishes and answers.
pub(crate) struct Syncer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) dat: File,
    pub(crate) idx: File,
    pub(crate) idx_len: u64,
    /// Rows a full disk kept out of the `.idx`, written before any later row (never a gap).
    pub(crate) pending_rows: Vec<u8>,
}

impl Syncer {
    pub(crate) fn run(mut self, jobs: std::sync::mpsc::Receiver<SyncMsg>) {
        let mut next = None;
        loop {
            let first = match next.take() {
                Some(m) => m,
                None => match jobs.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match first {
                SyncMsg::Commit(job) => {
                    let mut batch = vec![job];
                    while let Ok(more) = jobs.try_recv() {
                        match more {
                            SyncMsg::Commit(job) => batch.push(job),
                            other => {
                                next = Some(other);
                                break;
                            }
                        }
                    }
                    self.commit(batch);
                }
                SyncMsg::Barrier(ack) => {
                    let _ = ack.send(());
                }
                SyncMsg::Reopen { dat, idx, idx_len } => {
                    self.dat = dat;
                    self.idx = idx;
                    self.idx_len = idx_len;
                    self.pending_rows.clear();
                }
            }
        }
    }

    fn commit(&mut self, jobs: Vec<SyncJob>) {
        self.shared.faults.wait_sync_gate();
        let id = self.shared.id;
        let end = jobs.last().map_or(0, |j| j.end);
        let want_sync = jobs.iter().any(|j| j.want_sync);
        let seq = jobs.last().map_or(0, |j| j.seq);
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
            let mut index = self.shared.index.write_or_abort();
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
            // Under the index lock, so a snapshot of the index and `end` agree.
            self.shared.end.store(end, Ordering::Release);
            self.shared.published_seq.store(seq, Ordering::Release);
        }
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
