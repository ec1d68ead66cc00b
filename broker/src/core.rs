//! The state every part of the broker shares: configuration, the store, the buffer budgets,
//! metrics, the segment cache and the cancellation tokens of the broker's lifecycle.
//!
//! [`crate::service::Broker`] owns the topics and reaches this through `Deref`; the flusher
//! depends on this alone, so the service (which starts and fences flushers) and the flusher do
//! not depend on each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::SegmentCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// The broker's shared state.
pub struct Core {
    /// Configuration.
    pub cfg: Config,
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// Buffered bytes across partitions.
    pub(crate) budget: Budget,
    /// Bytes of durable records kept in memory across partitions.
    pub(crate) tail_used: AtomicU64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled on graceful shutdown: publishes are refused and everything is flushed.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown flush gives up: flush retries stop.
    pub abort: CancellationToken,
    /// Cancelled when a critical task died.
    pub fatal: CancellationToken,
    /// The flushers.
    pub tasks: TaskTracker,
    /// Decoded segments.
    pub(crate) cache: SegmentCache,
    /// Bytes of publish request bodies being read and appended, bounded by the buffer limit
    /// (or one largest body, if that is more); a body is released once its records are
    /// appended, before any durable wait.
    pub(crate) body_budget: tokio::sync::Semaphore,
}

impl Core {
    /// The shared state of a broker configured by `cfg`.
    pub fn new(cfg: Config, store: Arc<dyn Store>, shutdown: CancellationToken) -> Self {
        let budget = Budget::new(cfg.max_buffer());
        // At least one largest body always fits, whatever the buffer bound.
        let max_bodies = cfg.max_buffer().max(
            cfg.max_batch_bytes
                .saturating_mul(2)
                .saturating_add(1 << 20),
        );
        let cache = SegmentCache::new(common::config::mib(cfg.segment_cache_mb));
        Self {
            cfg,
            store,
            budget,
            tail_used: AtomicU64::new(0),
            metrics: Arc::new(Metrics::new()),
            shutdown,
            abort: CancellationToken::new(),
            fatal: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cache,
            body_budget: tokio::sync::Semaphore::new(
                usize::try_from(max_bodies)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
        }
    }
}

/// The bound on buffered bytes across all partitions.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Takes `n` bytes unless that would exceed the limit.
    pub fn try_reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_budget_never_exceeds_limit() {
        let b = Budget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        assert_eq!(b.used(), 100);
        b.release(100);
        assert_eq!(b.used(), 0);
        b.release(5);
        assert_eq!(b.used(), 0);
        assert!(!b.try_reserve(u64::MAX));
    }
}
