//! The appender thread of a volume's group commit: the only writer of the `.dat`.
//!
//! # Invariant
//! Records are appended in the order their requests were queued, each batch starting where the
//! previous one ended; a batch that fails part-way is cut back to where it began (so no
//! half-written record is ever followed by another, or indexed) and every request in it is
//! answered with the error. A write to a live key with another cookie, or a deletion whose
//! target is no longer the newest record of its key, is refused here, by the only writer,
//! against the newest record appended (see [`append_batch`]). Nothing is acknowledged here: a batch is handed to the syncer
//! ([`super::syncer`]), which makes it durable before anyone is answered.

use common::sync::LockExt;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::VolumeError;
use super::idx::IdxRow;
use super::needle;
use super::syncer::{Appended, SyncJob, SyncMsg, Syncer};
use super::vacuum::{self, Copy, Paths};
use super::volume::{Loc, Shared, now_ns, poison, poisoned};

/// Largest `.dat` an `.idx` row can address (offset/8 in a u32).
const MAX_DAT_LEN: u64 = (u32::MAX as u64) * needle::ALIGN;
/// Most requests one group commit takes.
const MAX_BATCH: usize = 4096;
/// Most bytes one group commit appends.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// A request to the writer thread.
pub(crate) enum Op {
    /// Replay and swap in a compacted copy (see [`super::vacuum`]); answers `(before, after)`
    /// sizes of the `.dat`.
    Compact {
        copy: Box<Copy>,
        paths: Paths,
        from: u64,
        done: oneshot::Sender<Result<(u64, u64), VolumeError>>,
    },
    Put {
        record: Vec<u8>,
        key: u64,
        cookie: u32,
        size: u32,
        fsync: bool,
        appended: Option<oneshot::Sender<()>>,
        done: oneshot::Sender<Result<(), VolumeError>>,
    },
    Delete {
        key: u64,
        cookie: u32,
        expect_offset: u64,
        generation: u64,
        fsync: bool,
        done: oneshot::Sender<Result<(), VolumeError>>,
    },
}

/// The appender thread's state: the only writer of the `.dat`.
struct Writer {
    shared: Arc<Shared>,
    dat: File,
    idx: File,
    idx_len: u64,
    end: u64,
}

/// Starts the group commit of a volume just opened: the appender thread (which starts the
/// syncer), appending to `dat` at `end` (where recovery ended) and to `idx` at `idx_len`.
/// Returns the appender's queue.
pub(crate) fn start(
    shared: Arc<Shared>,
    dat: File,
    idx: File,
    idx_len: u64,
    end: u64,
) -> std::io::Result<mpsc::Sender<Op>> {
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    let name = format!("volume-{}-writer", shared.id);
    let writer = Writer {
        shared,
        dat,
        idx,
        idx_len,
        end,
    };
    common::sync::spawn_critical(name, move || writer.run(rx))?;
    Ok(tx)
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
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<SyncMsg>(4);
        let syncer = match dat.try_clone() {
            Ok(sync_dat) => {
                let s = Syncer {
                    shared: shared.clone(),
                    dat: sync_dat,
                    idx,
                    idx_len,
                    pending_rows: Vec::new(),
                };
                common::sync::spawn_critical(format!("volume-{}-sync", shared.id), move || {
                    s.run(jobs_rx)
                })
                .ok()
            }
            Err(_) => None,
        };
        if syncer.is_none() {
            poison(&shared, "cannot start the syncer thread".to_owned());
        }
        let mut pending = Pending::default();
        let mut dat = dat;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut compact = None;
            let mut next = Some(first);
            let mut bytes = 0usize;
            while let Some(op) = next.take() {
                match op {
                    Op::Compact {
                        copy,
                        paths,
                        from,
                        done,
                    } => {
                        // Everything queued before it is appended first.
                        compact = Some((copy, paths, from, done));
                        break;
                    }
                    op => {
                        if let Op::Put { record, .. } = &op {
                            bytes += record.len();
                        }
                        batch.push(op);
                    }
                }
                if batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty()
                && let Some(job) = append_batch(&shared, &dat, &mut end, &mut pending, batch)
                && let Err(std::sync::mpsc::SendError(SyncMsg::Commit(job))) =
                    jobs_tx.send(SyncMsg::Commit(job))
            {
                for a in job.appended {
                    let _ = a
                        .done
                        .send(Err(VolumeError::WriterGone { volume: shared.id }));
                }
            }
            if let Some((mut copy, paths, from, done)) = compact {
                let res = swap_in(
                    &shared,
                    &jobs_tx,
                    &mut dat,
                    &mut end,
                    &mut pending,
                    &mut copy,
                    &paths,
                    from,
                );
                let _ = done.send(res);
            }
        }
        drop(jobs_tx);
        if let Some(h) = syncer {
            let _ = h.join();
        }
        tracing::debug!(volume = shared.id, "volume writer stopped");
    }
}

/// The appender's view of keys whose latest record is appended but perhaps not yet published
/// in the index: `key -> (latest location or None for a deletion, batch sequence number)`.
///
/// The appender is the only writer, so the newest record of a key is the entry here if there
/// is one, else the index's. Entries whose batch the syncer has published (sequence at or below
/// [`Shared::published_seq`]) agree with the index and are pruned at every batch.
#[derive(Default)]
pub(crate) struct Pending {
    latest: HashMap<u64, (Option<Loc>, u64)>,
    seq: u64,
}

impl Pending {
    /// The newest record of `key`: the pending overlay, else the published index.
    fn latest(&self, shared: &Shared, batch: &HashMap<u64, Option<Loc>>, key: u64) -> Option<Loc> {
        if let Some(l) = batch.get(&key) {
            return *l;
        }
        match self.latest.get(&key) {
            Some((l, _)) => *l,
            None => shared.index.read_or_abort().get(&key).copied(),
        }
    }
}

/// Appends one batch to the `.dat`; returns the job for the syncer, or `None` when every
/// request of the batch was already answered (failed or rejected).
///
/// Integrity checks happen here, against the newest record of each key (published or not):
/// a write to a live key with another cookie is refused ([`VolumeError::CookieMismatch`]), and
/// a deletion applies only if the newest record of its key is still the one the deleter read
/// (same offset, same cookie), so a delete aimed at an older version never tombstones a newer
/// write, even one appended in the same batch or not yet synced.
pub(crate) fn append_batch(
    shared: &Shared,
    dat: &File,
    end: &mut u64,
    pending: &mut Pending,
    batch: Vec<Op>,
) -> Option<SyncJob> {
    let id = shared.id;
    if let Some(reason) = poisoned(shared) {
        let err = VolumeError::Poisoned { volume: id, reason };
        for op in batch {
            reply_err(op, &err);
        }
        return None;
    }
    let published = shared.published_seq.load(Ordering::Acquire);
    pending.latest.retain(|_, (_, seq)| *seq > published);
    let start = *end;
    let mut pos = start;
    let mut want_sync = false;
    let mut appended: Vec<Appended> = Vec::with_capacity(batch.len());
    let mut failure: Option<VolumeError> = None;
    let mut in_batch: HashMap<u64, Option<Loc>> = HashMap::new();
    for op in batch {
        if let Some(err) = &failure {
            reply_err(op, err);
            continue;
        }
        match op {
            Op::Put {
                record,
                key,
                cookie,
                size,
                fsync,
                appended: notify,
                done,
            } => {
                if pending
                    .latest(shared, &in_batch, key)
                    .is_some_and(|l| l.cookie != cookie)
                {
                    let _ = done.send(Err(VolumeError::CookieMismatch { volume: id, key }));
                    continue;
                }
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
                let loc = Loc {
                    offset: pos,
                    size,
                    cookie,
                };
                in_batch.insert(key, Some(loc));
                appended.push(Appended {
                    row: IdxRow {
                        key,
                        offset_units: (pos / needle::ALIGN) as u32,
                        size: size as i32,
                    },
                    loc: Some(loc),
                    done,
                    is_delete: false,
                    bytes: len,
                });
                pos += len;
            }
            Op::Delete {
                key,
                cookie,
                expect_offset,
                generation,
                fsync,
                done,
            } => {
                if generation != shared.generation.load(Ordering::Acquire) {
                    let _ = done.send(Err(VolumeError::Moved { volume: id }));
                    continue;
                }
                let current = pending.latest(shared, &in_batch, key);
                if !current.is_some_and(|l| l.offset == expect_offset && l.cookie == cookie) {
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
                in_batch.insert(key, None);
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
            Op::Compact { done, .. } => {
                // Never batched: the appender runs compactions on their own.
                let _ = done.send(Err(VolumeError::WriterGone { volume: id }));
            }
        }
    }
    if let Some(err) = failure {
        // Cut whatever this batch appended, so no half-written needle stays in the .dat.
        // Earlier batches lie below `start` and are unaffected; `in_batch` is dropped, so the
        // overlay never names a record that was cut.
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
    pending.seq += 1;
    let seq = pending.seq;
    pending
        .latest
        .extend(in_batch.into_iter().map(|(k, l)| (k, (l, seq))));
    *end = pos;
    Some(SyncJob {
        appended,
        end: pos,
        want_sync,
        seq,
    })
}

fn reply_err(op: Op, err: &VolumeError) {
    match op {
        Op::Put { done, .. } | Op::Delete { done, .. } => {
            let _ = done.send(Err(err.clone_shallow()));
        }
        Op::Compact { done, .. } => {
            let _ = done.send(Err(err.clone_shallow()));
        }
    }
}

/// Steps 2 to 5 of a compaction (see [`super::vacuum`]), on the appender thread: no write is
/// appended meanwhile. Before the commit marker exists a failure discards the copy and
/// leaves the volume as it was; after it, a failure poisons the volume (the next start
/// finishes the swap).
#[allow(clippy::too_many_arguments)]
fn swap_in(
    shared: &Shared,
    jobs_tx: &std::sync::mpsc::SyncSender<SyncMsg>,
    dat: &mut File,
    end: &mut u64,
    pending: &mut Pending,
    copy: &mut Copy,
    paths: &Paths,
    from: u64,
) -> Result<(u64, u64), VolumeError> {
    let id = shared.id;
    let crash = |step: &'static str| shared.faults.crash_at(step);
    let before_marker = (|| {
        // Wait until every batch appended so far is synced and published.
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        jobs_tx
            .send(SyncMsg::Barrier(ack_tx))
            .map_err(|_| VolumeError::WriterGone { volume: id })?;
        ack_rx
            .recv()
            .map_err(|_| VolumeError::WriterGone { volume: id })?;
        if let Some(reason) = poisoned(shared) {
            return Err(VolumeError::Poisoned { volume: id, reason });
        }
        let replayed = vacuum::replay(id, copy, dat, from, *end)?;
        tracing::info!(
            volume = id,
            replayed,
            "replayed the writes made during the compaction"
        );
        vacuum::sync_copy(id, copy)?;
        if crash("synced") {
            return Err(vacuum::simulated_crash(id, "synced"));
        }
        vacuum::mark(id, paths, copy)?;
        Ok(())
    })();
    if let Err(e) = before_marker {
        if crash("synced") {
            poison(shared, format!("{e}"));
        } else {
            vacuum::discard(paths);
        }
        return Err(e);
    }
    if crash("marked") {
        let e = vacuum::simulated_crash(id, "marked");
        poison(shared, format!("{e}"));
        return Err(e);
    }
    let before = *end;
    let swapped = vacuum::swap_files(id, paths, crash).and_then(|()| {
        let io = |op| {
            move |source| VolumeError::Io {
                volume: id,
                op,
                source,
            }
        };
        Ok((
            copy.dat.try_clone().map_err(io("clone compacted dat"))?,
            copy.dat.try_clone().map_err(io("clone compacted dat"))?,
            copy.dat.try_clone().map_err(io("clone compacted dat"))?,
            copy.idx.try_clone().map_err(io("clone compacted idx"))?,
        ))
    });
    let (reader, appender_dat, syncer_dat, syncer_idx) = match swapped {
        Ok(files) => files,
        Err(e) => {
            poison(
                shared,
                format!("compaction committed but not swapped in ({e}); a restart finishes it"),
            );
            return Err(e);
        }
    };
    {
        let mut index = shared.index.write_or_abort();
        *shared.reader.write_or_abort() = Arc::new(reader);
        *index = std::mem::take(&mut copy.index);
        shared
            .file_count
            .store(index.len() as u64, Ordering::Relaxed);
        shared.end.store(copy.dat_len, Ordering::Release);
        shared.delete_count.store(0, Ordering::Relaxed);
        shared.max_key.fetch_max(copy.max_key, Ordering::Relaxed);
        shared.generation.fetch_add(1, Ordering::AcqRel);
    }
    *dat = appender_dat;
    *end = copy.dat_len;
    // Every pending record was published before the barrier answered; their offsets are the
    // old file's.
    pending.latest.clear();
    let _ = jobs_tx.send(SyncMsg::Reopen {
        dat: syncer_dat,
        idx: syncer_idx,
        idx_len: copy.idx_len,
    });
    Ok((before, copy.dat_len))
}

#[cfg(test)]
mod tests;
