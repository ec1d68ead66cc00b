//! The appender thread of a volume's group commit: the only writer of the `.dat`.
//!
//! # Invariant
//! Records are appended in the order their requests were queued, each batch starting where the
//! previous one ended; a batch that fails part-way is cut back to where it began (so no
//! half-written record is ever followed by another, or indexed) and every request in it is
//! answered with the error. Nothing is acknowledged here: a batch is handed to the syncer
//! ([`super::syncer`]), which makes it durable before anyone is answered.

use crate::fatal::LockExt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::VolumeError;
use super::idx::IdxRow;
use super::needle;
use super::syncer::{Appended, SyncJob, Syncer};
use super::volume::{Loc, Shared, now_ns, poison, poisoned};

/// Largest `.dat` an `.idx` row can address (offset/8 in a u32).
const MAX_DAT_LEN: u64 = (u32::MAX as u64) * needle::ALIGN;
/// Most requests one group commit takes.
pub(crate) const MAX_BATCH: usize = 4096;
/// Most bytes one group commit appends.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// A request to the writer thread.
pub(crate) enum Op {
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

/// The appender thread's state: the only writer of the `.dat`.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) dat: File,
    pub(crate) idx: File,
    pub(crate) idx_len: u64,
    pub(crate) end: u64,
}

impl Writer {
    /// Runs the two stages: this thread appends batches, a syncer thread fsyncs, indexes and
    /// answers them. While one batch is being synced the next one is appended, and the syncer
    /// coalesces every batch appended meanwhile into its next `fdatasync`.
    pub(crate) fn run(self, mut rx: mpsc::Receiver<Op>) {
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
                crate::fatal::spawn_critical(format!("volume-{}-sync", shared.id), move || {
                    s.run(jobs_rx)
                })
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
                let current = shared.index.read_or_abort().get(&key).map(|l| l.offset);
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

fn reply_err(op: Op, err: &VolumeError) {
    match op {
        Op::Put { done, .. } | Op::Delete { done, .. } => {
            let _ = done.send(Err(err.clone_shallow()));
        }
    }
}
