//! The chunk collector: deletes queued chunks from volumes in the background.
//!
//! Deletions are queued durably (`g<fid>` keys) in the same write as the metadata change that
//! orphaned the chunks, so a crash never leaks them. The collector reads a bounded batch,
//! deletes each chunk through a server holding its volume (a 404 from the volume server means
//! it is already gone), and dequeues the done ones. Failures are retried with
//! jittered exponential backoff (`common::retry::backoff`) capped at [`MAX_BACKOFF`]; they
//! never block the namespace.
//!
//! A chunk is queued only when no entry references it any more (the store's chunk → owner
//! index drops the queue op otherwise, see [`crate::store`]), and an entry cannot take a
//! queued chunk. As a last guard the collector still asks the index before deleting: a queued
//! chunk that an entry references is dequeued without being deleted, logged at ERROR and
//! counted (`filer_chunk_deletions_refused`).
//!
//! Several filers on one shared store (etcd) each run a collector over the same queue. Two of
//! them deleting the same chunk is harmless: the second delete finds the needle gone (404,
//! done) and its dequeue deletes a key that is already gone. A dequeue needs no guard: it only
//! ever follows the needle's deletion (or the finding that an entry owns the chunk), and a
//! queued chunk can never be taken by an entry (the store refuses it atomically, with a compare
//! on the queue key under etcd), so no state a racing writer creates can be lost by it.
//! Dequeues are written in batches of 64 to stay within etcd's transaction limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::client::ClientError;
use common::ids::FileId;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::service::{Error, Filer};
use crate::store::{Batch, Op, PendingDeletion};

/// Queued deletions read per pass.
const BATCH: usize = 1000;
/// Deletions in flight at once.
const CONCURRENCY: usize = 8;
/// First retry delay.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Idle re-check interval.
const IDLE: Duration = Duration::from_secs(30);

/// Queued deletions that may proceed, and those whose chunk is still referenced (with the
/// referencing paths).
type Split = (Vec<PendingDeletion>, Vec<(PendingDeletion, Vec<String>)>);

#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    not_before: Instant,
}

/// The retry delay after `attempts` failures (exponential, capped, jittered so that chunks
/// failing in the same outage are not all retried at once).
fn backoff(attempts: u32) -> Duration {
    common::retry::backoff(attempts, MIN_BACKOFF, MAX_BACKOFF)
}

impl Filer {
    /// Wakes the collector for a pass now (e.g. after queueing deletions out of band).
    pub fn collect_now(&self) {
        self.gc_wake.notify_one();
    }

    /// Runs the collector until `shutdown` is cancelled.
    pub async fn collect_chunks(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retries: HashMap<String, Retry> = HashMap::new();
        loop {
            let wait = match self.collect_pass(&mut retries).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!("failed to run a chunk deletion pass: {e:#}");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.gc_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!("chunk collector stopped");
    }

    /// One pass; returns how long to wait before the next.
    async fn collect_pass(&self, retries: &mut HashMap<String, Retry>) -> Result<Duration, Error> {
        let pending = self.read(|s| Ok(s.pending_deletions(BATCH)?)).await?;
        self.metrics
            .chunk_deletions_pending
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        let queued: HashSet<&str> = pending.iter().map(|p| p.fid.as_str()).collect();
        retries.retain(|fid, _| queued.contains(fid.as_str()));
        let now = Instant::now();
        let due: Vec<PendingDeletion> = pending
            .iter()
            .filter(|p| retries.get(&p.fid).is_none_or(|r| r.not_before <= now))
            .cloned()
            .collect();
        let (due, live) = self.split_live(due).await?;
        if !live.is_empty() {
            let mut b = Batch::new();
            for p in live {
                let owners = p.1.join(", ");
                tracing::error!(fid = %p.0.fid, path = %p.0.path, owners = %owners, "queued chunk is referenced by an entry, not deleting it");
                self.metrics.chunk_deletions_refused.inc();
                b.ops.push(Op::Dequeue(p.0.fid));
            }
            self.commit_independent(b.ops).await?;
        }
        if due.is_empty() {
            return Ok(next_wait(retries, now, false));
        }
        let span = tracing::info_span!("filer.delete_chunks", chunks = due.len());
        let results: Vec<(PendingDeletion, Result<(), ClientError>)> = futures::stream::iter(due)
            .map(|p| async move {
                let r = self.delete_chunk(&p).await;
                (p, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .instrument(span.clone())
            .await;
        let mut done = Batch::new();
        for (p, result) in results {
            match result {
                Ok(()) => {
                    retries.remove(&p.fid);
                    done.ops.push(Op::Dequeue(p.fid));
                }
                Err(e) => {
                    self.metrics.chunk_deletions_failed.inc();
                    let r = retries.entry(p.fid.clone()).or_insert(Retry {
                        attempts: 0,
                        not_before: now,
                    });
                    r.attempts = r.attempts.saturating_add(1);
                    r.not_before = Instant::now() + backoff(r.attempts);
                    // Warn on the first failure and then rarely, so a long outage does not
                    // flood the log; the metric counts every attempt.
                    if r.attempts == 1 || r.attempts.is_multiple_of(20) {
                        tracing::warn!(fid = %p.fid, path = %p.path, attempts = r.attempts, error = %e, "chunk deletion failed, will retry");
                    } else {
                        tracing::debug!(fid = %p.fid, attempts = r.attempts, error = %e, "chunk deletion failed");
                    }
                }
            }
        }
        let progressed = !done.is_empty();
        let removed = done.len();
        self.commit_independent(done.ops).instrument(span).await?;
        self.metrics.chunk_deletions_done.inc_by(removed as u64);
        self.metrics
            .chunk_deletions_pending
            .set(i64::try_from(pending.len() - removed).unwrap_or(i64::MAX));
        // A full batch with progress means more may be queued behind it: go again at once.
        Ok(next_wait(
            retries,
            Instant::now(),
            progressed && pending.len() == BATCH,
        ))
    }

    /// Splits queued deletions into those whose chunk no entry references and those (with
    /// their owners) that must not be deleted.
    async fn split_live(&self, due: Vec<PendingDeletion>) -> Result<Split, Error> {
        self.read(move |s| {
            let mut free = Vec::with_capacity(due.len());
            let mut live = Vec::new();
            for p in due {
                let owners = s.chunk_owners(&p.fid)?;
                if owners.is_empty() {
                    free.push(p);
                } else {
                    live.push((p, owners));
                }
            }
            Ok((free, live))
        })
        .await
    }

    async fn delete_chunk(&self, p: &PendingDeletion) -> Result<(), ClientError> {
        let Ok(fid) = p.fid.parse::<FileId>() else {
            tracing::warn!(fid = %p.fid, path = %p.path, "dropping queued deletion of a malformed fid");
            return Ok(());
        };
        match self.blobs.delete(&fid).await {
            Ok(_) => Ok(()),
            // A 404 from a volume server for the needle: it is already gone. A volume that
            // nobody serves (the master's lookup 404, no live location, or a server that does
            // not hold the volume) may not have re-registered after a restart: retried.
            Err(ClientError::Api {
                status, url, code, ..
            }) if status == StatusCode::NOT_FOUND
                && code != "volume_not_found"
                && !url.contains("/dir/lookup")
                && !self.blobs.master.is_master(&url) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn next_wait(retries: &HashMap<String, Retry>, now: Instant, busy: bool) -> Duration {
    if busy {
        return Duration::ZERO;
    }
    retries
        .values()
        .map(|r| r.not_before.saturating_duration_since(now))
        .min()
        .map_or(IDLE, |d| d.clamp(Duration::from_millis(50), IDLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backoff_grows_and_is_capped() {
        // Jittered: each wait lies in the upper half of its exponential step.
        for (attempts, step) in [(1, MIN_BACKOFF), (2, MIN_BACKOFF * 2), (100, MAX_BACKOFF)] {
            let d = backoff(attempts);
            assert!(
                d >= step / 2 && d <= step,
                "attempt {attempts}: {d:?} vs {step:?}"
            );
        }
        assert!(backoff(u32::MAX) <= MAX_BACKOFF);
    }
}
