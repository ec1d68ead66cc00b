//! Start-up recovery: every topic's partitions are taken over (their owner epoch raised, so a
//! previous owner can no longer commit) and rebuilt from their first and last segment entries.
//!
//! Invariant: a partition is served only after it is owned, so what its listing shows is its
//! whole durable log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::sync::LockExt;
use futures::StreamExt;

use crate::partition::{Partition, Topic};
use crate::service::{Broker, RECOVERY_CONCURRENCY};
use crate::store::{Store, StoreError, TopicConf, TopicKey};

impl Broker {
    /// Recovers every topic from the store, retrying until the store answers; then marks the
    /// broker loaded. Returns early on shutdown.
    pub async fn load_all(self: Arc<Self>) {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let delay =
                common::retry::backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
            match self.try_load_all().await {
                Ok(n) => {
                    *self.load_error.lock_or_abort() = None;
                    self.loaded.store(true, Ordering::Release);
                    tracing::info!(topics = n, "recovered topics from the filer");
                    self.spawn_retention();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "failed to recover topics from the filer");
                    *self.load_error.lock_or_abort() = Some(e.to_string());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Starts enforcing retention (when configured) on every partition served, until the
    /// broker is dropped or shut down.
    pub(super) fn spawn_retention(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        crate::retention::spawn(&self.core, move || {
            let b = me.upgrade()?;
            Some(
                b.all_topics()
                    .iter()
                    .flat_map(|t| t.partitions.iter().cloned())
                    .collect(),
            )
        });
    }

    async fn try_load_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        let confs = self.store.list_topics().await?;
        let n = confs.len();
        for conf in confs {
            if self.topic(&conf.key).is_ok() {
                continue;
            }
            let topic = self.recover_topic(&conf).await?;
            self.install(topic);
        }
        Ok(n)
    }

    /// Rebuilds a topic's partitions from its segment entries: the last segment gives the
    /// next offset, the first gives `log_start_offset`. Costs two listings per partition
    /// taken, whatever the number of records (taking creates the partition's directory, so
    /// there is nothing to list first). Only the partitions this broker should own are taken
    /// (all of them unless `--ownership shared`); the others are placeholders naming their
    /// owner.
    pub(super) async fn recover_topic(
        self: &Arc<Self>,
        conf: &TopicConf,
    ) -> Result<Arc<Topic>, StoreError> {
        let key = &conf.key;
        let mine: Vec<u32> = (0..conf.partitions)
            .filter(|p| self.should_own(key, *p))
            .collect();
        // Own every partition before reading its segments: from here on a commit of the
        // previous owner is refused, so what is listed below is the partition's whole log.
        let owner = self.owner_id();
        let store = &self.store;
        let owner = &owner;
        let taken: Vec<Result<(u32, u64), StoreError>> = futures::stream::iter(mine.clone())
            .map(|p| async move { Ok((p, store.take_partition(key, p, owner).await?)) })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        let mut epochs = BTreeMap::new();
        for t in taken {
            let (p, epoch) = t?;
            epochs.insert(p, epoch);
        }
        let mut bounds = BTreeMap::new();
        let results: Vec<Result<(u32, Bounds), StoreError>> = futures::stream::iter(mine)
            .map(|p| async move { Ok((p, partition_bounds(store.as_ref(), key, p).await?)) })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            let (p, b) = r?;
            bounds.insert(p, b);
        }
        let partitions = (0..conf.partitions)
            .map(|p| match epochs.get(&p) {
                Some(epoch) => {
                    let b = bounds.get(&p).copied().unwrap_or((0, 0));
                    self.owned_partition(key, p, b, *epoch)
                }
                None => Arc::new(Partition::remote(key.clone(), p)),
            })
            .collect();
        Ok(Arc::new(Topic::new(key.clone(), partitions)))
    }

    /// A partition this broker owns under `epoch`, its durable records `[start, next)`.
    pub(super) fn owned_partition(
        &self,
        key: &TopicKey,
        p: u32,
        (start, next): (u64, u64),
        epoch: u64,
    ) -> Arc<Partition> {
        tracing::info!(topic = %key, partition = p, log_start_offset = start, next_offset = next, epoch, "recovered partition");
        let roll = self.cfg.flush_bytes.min(self.cfg.max_segment_bytes).max(1) as usize;
        let part = Partition::new(
            key.clone(),
            p,
            start,
            next,
            roll,
            self.metrics.lag_gauge(&key.to_string(), p),
        );
        part.lock().epoch = epoch;
        Arc::new(part)
    }

    /// How this broker names itself as a partition's owner: its member URL with
    /// `--ownership shared` (other brokers compare it with the live members).
    pub(super) fn owner_id(&self) -> String {
        if self.is_shared() {
            return self.leadership.me().to_owned();
        }
        format!(
            "{}:{} pid {}",
            self.cfg.ip,
            self.cfg.port,
            std::process::id()
        )
    }
}

/// A partition's durable records `[log_start, next)`.
type Bounds = (u64, u64);

/// A partition's durable bounds from its first and last segment entries.
pub(super) async fn partition_bounds(
    store: &dyn Store,
    key: &TopicKey,
    p: u32,
) -> Result<Bounds, StoreError> {
    let Some(last) = store.last_segment(key, p).await? else {
        return Ok((0, 0));
    };
    let first = store.first_segment(key, p).await?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "partition {p} of {key} has a last segment but no first"
        ))
    })?;
    if first.offset_min > last.offset_min {
        return Err(StoreError::Corrupt(format!(
            "partition {p} of {key}: first segment starts after the last one"
        )));
    }
    Ok((first.offset_min, last.end()))
}
