//! The flusher: one task per partition that turns buffered records into durable segments.
//!
//! A flush seals everything pending (up to `--max-segment-bytes`), so publishers that arrived
//! while earlier flushes ran ride along (group commit). It asks the master for a file id
//! (every flush asks anew), writes the segment to that volume server with fsync, and creates
//! the segment's filer entry with `Expect::Absent`; only then does the durable offset advance,
//! waiting publishers get their answer and consumers wake.
//!
//! The task runs two stages joined by a queue: the *writer* (seal, then assign and volume
//! write in a task of their own) and the *committer* (filer commit, advance). At most
//! `--flush-pipeline` flushes are in flight: the writer seals the next segment as soon as a
//! slot is free, so several segments are written to volume servers at once (concurrent writes
//! to one volume share its `fdatasync`) while earlier ones commit. The committer takes the
//! writes in the order they were sealed, so commits, and with them the durable offset, stay
//! strictly in offset order. A segment entry is therefore never committed before the entries
//! below it, and recovery (which trusts the last entry) never sees a gap.
//!
//! A failed attempt keeps the data, backs off exponentially up to `--flush-retry-max-ms` and
//! retries the same range: a flush never skips ahead. A volume write that succeeded is not
//! repeated when only the filer commit failed, so a retry after a lost commit answer finds its
//! own entry and succeeds.
//!
//! Each flush is the root span `broker.flush`, linked to the publish spans it persisted; its
//! trace id is stored in the segment entry.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::sync::LockExt;
use futures::FutureExt;
use opentelemetry::trace::SpanContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{Instrument, Span};

use crate::core::Core;
use crate::log::Sealed;
use crate::metrics::Hop;
use crate::partition::{FlushRecord, Partition};
use crate::store::{ChunkRef, SegmentMeta, SegmentRef, StoreError};

/// First retry delay; doubles up to `--flush-retry-max-ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Starts the flusher of `part`. A panic inside it is logged and stops the broker.
pub fn spawn(broker: &Arc<Core>, part: Arc<Partition>) {
    let span = tracing::info_span!("broker.flusher", topic = %part.label, partition = part.index);
    let b = broker.clone();
    broker.tasks.spawn(
        async move {
            let fatal = b.fatal.clone();
            if AssertUnwindSafe(run(b, part)).catch_unwind().await.is_err() {
                tracing::error!("flusher panicked; stopping the broker");
                fatal.cancel();
            }
        }
        .instrument(span),
    );
}

async fn run(broker: Arc<Core>, part: Arc<Partition>) {
    let (tx, rx) = mpsc::channel(broker.cfg.flush_pipeline);
    tokio::join!(writer(&broker, &part, tx), committer(&broker, &part, rx));
}

/// A segment being written (its task's handle), in the order segments were sealed. `None`
/// from the task: the shutdown gave up first.
type Writing = JoinHandle<Option<Written>>;

/// A segment written to a volume server, waiting for its filer commit.
struct Written {
    sealed: Sealed,
    chunk: ChunkRef,
    bytes: u64,
    span: Span,
    trace_id: Option<String>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

enum Next {
    /// Sleep until woken or until the deadline (the oldest pending record's interval).
    Idle(Option<Instant>),
    /// Flush now, after lingering until the given instant if set.
    Flush(Option<Instant>),
    /// Nothing left and shutting down: stop.
    Stop,
}

/// What to do next, decided under the partition lock. `busy`: another flush of the partition
/// is in flight.
fn decide(broker: &Core, part: &Partition, busy: bool) -> Next {
    let cfg = &broker.cfg;
    let shutting = broker.shutdown.is_cancelled();
    let mut st = part.lock();
    if st.fenced.is_some() {
        return Next::Stop;
    }
    // A partition handed over to another broker flushes like a shutdown.
    let shutting = shutting || st.draining;
    let log = &st.log;
    if !log.has_pending() {
        if shutting {
            // Refuse appends from now on; in-flight flushes still complete.
            st.closed = true;
            return Next::Stop;
        }
        return Next::Idle(None);
    }
    let wanted = st.wanted > log.sealed_end();
    let full = log.pending_bytes() >= cfg.flush_bytes;
    let oldest = log.oldest_pending();
    if wanted || full || shutting {
        // A durable publish waits. On an idle partition it goes at once: nobody else is
        // waiting, and publishers that arrive meanwhile ride the next flush (group commit).
        // While another flush is in flight, give concurrent publishers until the oldest
        // pending record is `--flush-linger-ms` old to join; a backlog that built up while
        // earlier flushes ran is older than that and goes at once.
        let linger = (wanted && !full && !shutting && busy)
            .then(|| oldest.map(|t| t + cfg.flush_linger()))
            .flatten()
            .filter(|t| *t > Instant::now());
        return Next::Flush(linger);
    }
    match oldest.map(|t| t + cfg.flush_interval()) {
        Some(due) if due > Instant::now() => Next::Idle(Some(due)),
        _ => Next::Flush(None),
    }
}

/// The writer stage: waits for a reason to flush, seals, and starts the segment's assign and
/// volume write in a task of its own, handed to the committer in sealing order.
async fn writer(broker: &Arc<Core>, part: &Arc<Partition>, tx: mpsc::Sender<Writing>) {
    let depth = broker.cfg.flush_pipeline;
    let slots = Arc::new(Semaphore::new(depth));
    loop {
        let shutting = broker.shutdown.is_cancelled();
        let busy = slots.available_permits() < depth;
        match decide(broker, part, busy) {
            Next::Stop => return,
            Next::Idle(deadline) => {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = part.wake.notified() => {}
                    () = sleep => {}
                    () = broker.shutdown.cancelled(), if !shutting => {}
                }
            }
            Next::Flush(linger) => {
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    () = broker.abort.cancelled() => return,
                };
                if let Some(until) = linger {
                    tokio::time::sleep_until(until.into()).await;
                }
                let sealed = {
                    let mut st = part.lock();
                    st.log
                        .seal(broker.cfg.max_segment_bytes)
                        .map(|s| (s, std::mem::take(&mut st.links)))
                };
                let Some((sealed, links)) = sealed else {
                    continue;
                };
                let (b, p) = (broker.clone(), part.clone());
                let writing = tokio::spawn(
                    async move { write_segment(&b, &p, sealed, links, permit).await }
                        .in_current_span(),
                );
                if let Err(mpsc::error::SendError(writing)) = tx.send(writing).await {
                    // The committer stopped: nothing written now would be committed.
                    writing.abort();
                    return;
                }
            }
        }
    }
}

/// A failed hop.
#[derive(Debug, thiserror::Error)]
#[error("{hop:?} failed: {source}")]
struct HopError {
    hop: Hop,
    source: StoreError,
}

/// Records a failed attempt: metrics, log, the partition's error (for `/readyz`) and the
/// failure count (for `/admin/flush`). Returns how long to back off.
fn failed(
    broker: &Core,
    part: &Partition,
    sealed: &Sealed,
    attempt: u32,
    e: &HopError,
) -> Duration {
    broker.metrics.error(e.hop);
    let wait = common::retry::backoff(attempt, FIRST_BACKOFF, broker.cfg.flush_retry_max());
    tracing::warn!(
        attempt,
        offset_min = sealed.first,
        offset_max = sealed.end - 1,
        retry_in = ?wait,
        "failed to flush segment: {e}"
    );
    let msg = format!(
        "flush of offsets {}..={} failed {attempt} times, last: {e}",
        sealed.first,
        sealed.end - 1
    );
    {
        let mut st = part.lock();
        if e.hop == Hop::FilerCommit {
            st.commit_error = Some(msg);
        } else {
            st.write_error = Some(msg);
        }
    }
    part.durable_tx.send_modify(|p| p.failures += 1);
    wait
}

/// Opens the flush span, then assigns and writes the segment, retrying until it is written.
/// `None` when the shutdown gave up first.
async fn write_segment(
    broker: &Core,
    part: &Partition,
    sealed: Sealed,
    links: Vec<SpanContext>,
    permit: OwnedSemaphorePermit,
) -> Option<Written> {
    let span = tracing::info_span!(
        parent: None,
        "broker.flush",
        otel.name = "broker.flush",
        topic = %part.label,
        partition = part.index,
        offset_min = sealed.first,
        offset_max = sealed.end - 1,
        bytes = sealed.bytes,
        records = sealed.records(),
    );
    for link in links {
        common::telemetry::add_link(&span, link);
    }
    let trace_id = common::telemetry::trace_id(&span);
    let started = Instant::now();
    let data = sealed.encode();
    let bytes = data.len() as u64;
    let mut attempt = 0;
    let chunk = async {
        loop {
            attempt += 1;
            match assign_and_write(broker, &data).await {
                Ok(c) => {
                    part.lock().write_error = None;
                    return Some(c);
                }
                Err(e) => {
                    let wait = failed(broker, part, &sealed, attempt, &e);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = broker.abort.cancelled() => return None,
                    }
                }
            }
        }
    }
    .instrument(span.clone())
    .await?;
    Some(Written {
        sealed,
        chunk,
        bytes,
        span,
        trace_id,
        started,
        _permit: permit,
    })
}

async fn assign_and_write(broker: &Core, data: &Bytes) -> Result<ChunkRef, HopError> {
    let (store, m) = (&broker.store, &broker.metrics);
    let t = Instant::now();
    let a = store.assign().await.map_err(|source| HopError {
        hop: Hop::Assign,
        source,
    })?;
    m.observe(Hop::Assign, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let c = store
        .write(&a, data.clone())
        .await
        .map_err(|source| HopError {
            hop: Hop::VolumeWrite,
            source,
        })?;
    m.observe(Hop::VolumeWrite, t.elapsed().as_secs_f64());
    Ok(c)
}

/// The committer stage: waits for each segment's write in sealing order, commits it and
/// advances the durable offset. A write task that panicked stops the broker, as a panic of the
/// flusher itself does.
async fn committer(broker: &Arc<Core>, part: &Arc<Partition>, mut rx: mpsc::Receiver<Writing>) {
    commit_in_order(broker, part, &mut rx).await;
    // Stopped early (fenced, shutdown gave up): writes still queued would never be committed.
    rx.close();
    while let Ok(writing) = rx.try_recv() {
        writing.abort();
    }
}

async fn commit_in_order(
    broker: &Arc<Core>,
    part: &Arc<Partition>,
    rx: &mut mpsc::Receiver<Writing>,
) {
    while let Some(writing) = rx.recv().await {
        let w = match writing.await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("segment write task failed ({e}); stopping the broker");
                broker.fatal.cancel();
                return;
            }
        };
        let span = w.span.clone();
        if !commit(broker, part, w).instrument(span).await {
            return;
        }
    }
}

/// Commits one segment entry (retrying until it is committed) and makes its records
/// durable. `false` when the shutdown gave up first.
async fn commit(broker: &Core, part: &Partition, w: Written) -> bool {
    let meta = SegmentMeta {
        topic: part.topic.clone(),
        partition: part.index,
        offset_min: w.sealed.first,
        offset_max: w.sealed.end - 1,
        ts_min: w.sealed.ts_min(),
        ts_max: w.sealed.ts_max(),
        trace_id: w.trace_id.clone(),
        chunk: w.chunk.clone(),
        epoch: part.lock().epoch,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let t = Instant::now();
        match broker.store.commit_segment(&meta).await {
            Ok(()) => {
                broker
                    .metrics
                    .observe(Hop::FilerCommit, t.elapsed().as_secs_f64());
                break;
            }
            Err(StoreError::Fenced(why)) => {
                fence(broker, part, &why, false);
                return false;
            }
            Err(source) => {
                let e = HopError {
                    hop: Hop::FilerCommit,
                    source,
                };
                let wait = failed(broker, part, &w.sealed, attempt, &e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = broker.abort.cancelled() => return false,
                }
            }
        }
    }
    if attempt > 1 {
        tracing::info!(attempt, "flush recovered");
    }
    complete(broker, part, &w, &meta);
    true
}

/// Another broker took the partition over (or its topic was deleted, `deleted`): stop serving
/// it. Appends are refused from now on, durable waiters are answered with the fence (their
/// records were never acknowledged), and records buffered here are dropped: the new owner
/// holds everything that was durable. A takeover is logged at ERROR (buffered records are
/// gone and two brokers claimed one partition), a deletion at INFO.
pub(crate) fn fence(broker: &Core, part: &Partition, why: &str, deleted: bool) {
    let (dropped, bytes) = {
        let mut st = part.lock();
        if st.fenced.is_some() {
            // Already fenced (a deleted topic's flush refused afterwards): released once.
            return;
        }
        st.fenced = Some(format!(
            "partition {} of {} is fenced: {why}; this broker no longer serves it",
            part.index, part.label
        ));
        st.closed = true;
        (st.log.next() - st.log.durable(), st.log.buffered_bytes())
    };
    broker.budget.release(bytes);
    broker
        .metrics
        .buffered_bytes
        .set(broker.budget.used() as i64);
    part.durable_tx.send_modify(|p| p.fenced = true);
    part.durable_waiters.lock_or_abort().release_all();
    part.wake.notify_one();
    if deleted {
        tracing::info!(
            topic = %part.label,
            partition = part.index,
            dropped_records = dropped,
            "topic deleted; stopped serving the partition"
        );
    } else {
        tracing::error!(
            topic = %part.label,
            partition = part.index,
            dropped_records = dropped,
            "another broker took the partition over; stopped serving it: {why}"
        );
    }
}

/// Advances the durable offset past a committed segment and wakes waiters.
fn complete(broker: &Core, part: &Partition, w: &Written, meta: &SegmentMeta) {
    let (released, durable, lag) = {
        let mut st = part.lock();
        let mut released = st.log.complete(w.sealed.end);
        if st.fenced.is_some() {
            // Fencing released every buffered byte already.
            released = 0;
        }
        st.commit_error = None;
        st.remember_flush(FlushRecord {
            first: w.sealed.first,
            end: w.sealed.end,
            trace_id: w.trace_id.as_deref().map(Arc::from),
        });
        st.remember_segment(SegmentRef {
            offset_min: meta.offset_min,
            offset_max: meta.offset_max,
            fid: meta.chunk.fid,
            size: meta.chunk.size,
            ts_max: meta.ts_max,
        });
        (released, st.log.durable(), st.log.next() - st.log.durable())
    };
    broker.budget.release(released);
    keep_tail_in_budget(broker, part, released);
    part.lag.set(lag as i64);
    part.durable_tx.send_modify(|p| p.durable = durable);
    part.durable_waiters.lock_or_abort().release_up_to(durable);
    let m = &broker.metrics;
    m.buffered_bytes.set(broker.budget.used() as i64);
    m.flushes.inc();
    m.bytes_flushed.inc_by(w.bytes);
    m.records_flushed.inc_by(w.sealed.records());
    m.observe(Hop::Total, w.started.elapsed().as_secs_f64());
    tracing::debug!(durable_offset = durable, bytes = w.bytes, fid = %meta.chunk.fid, "flushed segment");
}

/// Keeps the tail caches within `--tail-cache-mb`: after `added` bytes joined this
/// partition's tail, drop its oldest batches while the total is over budget, and never let
/// one partition hold more than a quarter of it.
fn keep_tail_in_budget(broker: &Core, part: &Partition, added: u64) {
    let cap = common::config::mib(broker.cfg.tail_cache_mb);
    let total = broker.tail_used.fetch_add(added, Ordering::AcqRel) + added;
    let freed = {
        let mut st = part.lock();
        let own = st.log.tail_bytes();
        let excess = total.saturating_sub(cap);
        let keep = own.saturating_sub(excess).min(cap / 4);
        st.log.evict_tail(keep)
    };
    if freed > 0 {
        let _ = broker
            .tail_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(freed))
            });
    }
}
