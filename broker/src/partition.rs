//! A topic and its partitions: each partition's log under a short-held lock, the watch
//! channels publishers and consumers wait on, and the notify that wakes its flusher.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use common::sync::LockExt;
use opentelemetry::trace::SpanContext;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, oneshot, watch};

use crate::log::PartitionLog;
use crate::store::{SegmentRef, TopicKey};

/// Most links a flush span carries to the publishes it persisted.
pub const MAX_LINKS: usize = 128;
/// Recent flushes remembered per partition (to tell a publisher which flush persisted it).
const RECENT_FLUSHES: usize = 256;
/// Segment locations remembered per partition (saves a filer lookup per read).
const KNOWN_SEGMENTS: usize = 4096;

/// Durability progress of a partition, published to waiters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// One past the last durable record.
    pub durable: u64,
    /// Failed flush attempts so far.
    pub failures: u64,
    /// Another broker took the partition over: nothing more becomes durable here.
    pub fenced: bool,
}

/// One completed flush.
#[derive(Debug, Clone)]
pub struct FlushRecord {
    /// First offset.
    pub first: u64,
    /// One past the last offset.
    pub end: u64,
    /// Trace id of its span.
    pub trace_id: Option<Arc<str>>,
}

/// Everything behind a partition's lock.
#[derive(Debug)]
pub struct PartState {
    /// The in-memory log.
    pub log: PartitionLog,
    /// Someone waits for everything below this to be durable: flush without waiting for
    /// the interval.
    pub wanted: u64,
    /// Set by the flusher when it stops: appends are refused from then on.
    pub closed: bool,
    /// The last assign/volume-write error, while segment writes fail.
    pub write_error: Option<String>,
    /// The last filer-commit error, while commits fail.
    pub commit_error: Option<String>,
    /// Span contexts of publishes waiting for the next flush.
    pub links: Vec<SpanContext>,
    /// Recent flushes, oldest first.
    pub recent: VecDeque<FlushRecord>,
    /// Known segments by first offset.
    pub segments: BTreeMap<u64, SegmentRef>,
    /// Idempotent Kafka producers' recent sequences.
    pub producers: kafka::idempotence::ProducerStates,
    /// Whether `producers` was rebuilt from the partition's last segment after start-up.
    pub producers_loaded: bool,
    /// The owner epoch this broker holds the partition under.
    pub epoch: u64,
    /// Set when a commit was refused because another broker took the partition over.
    pub fenced: Option<String>,
    /// Set when this broker hands the partition over (`--ownership shared`): appends are
    /// refused and the flusher flushes what is buffered, then stops.
    pub draining: bool,
}

impl PartState {
    /// The current flush error, if flushes are failing.
    pub fn error(&self) -> Option<String> {
        if let Some(f) = &self.fenced {
            return Some(f.clone());
        }
        match (&self.write_error, &self.commit_error) {
            (None, None) => None,
            (Some(e), None) | (None, Some(e)) => Some(e.clone()),
            (Some(w), Some(c)) => Some(format!("{c}; {w}")),
        }
    }

    /// Remembers a completed flush.
    pub fn remember_flush(&mut self, rec: FlushRecord) {
        if self.recent.len() >= RECENT_FLUSHES {
            self.recent.pop_front();
        }
        self.recent.push_back(rec);
    }

    /// Remembers where a segment is.
    pub fn remember_segment(&mut self, seg: SegmentRef) {
        self.segments.insert(seg.offset_min, seg);
        while self.segments.len() > KNOWN_SEGMENTS {
            self.segments.pop_first();
        }
    }

    /// The known segment holding `offset`, if any.
    pub fn known_segment(&self, offset: u64) -> Option<SegmentRef> {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.offset_max >= offset)
            .cloned()
    }

    /// The trace id of the flush that persisted `offset`, if remembered.
    pub fn flush_trace_for(&self, offset: u64) -> Option<Arc<str>> {
        self.recent
            .iter()
            .rev()
            .find(|f| f.first <= offset && offset < f.end)
            .and_then(|f| f.trace_id.clone())
    }
}

/// Durable publishes waiting for the durable offset to reach their target, ordered by target:
/// each is woken once, when the flush that covers it commits (or the partition is fenced),
/// instead of every waiter being woken by every flush.
#[derive(Debug, Default)]
pub struct DurableWaiters {
    next_id: u64,
    waiting: BTreeMap<(u64, u64), oneshot::Sender<()>>,
}

impl DurableWaiters {
    /// Registers a waiter for `target`; returns its id (for [`DurableWaiters::cancel`]) and
    /// the receiver that completes once the target is durable or the partition fenced.
    pub fn register(&mut self, target: u64) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        self.waiting.insert((target, self.next_id), tx);
        (self.next_id, rx)
    }

    /// Forgets a waiter that stopped waiting (timed out).
    pub fn cancel(&mut self, target: u64, id: u64) {
        self.waiting.remove(&(target, id));
    }

    /// Wakes every waiter whose target is at most `durable`.
    pub fn release_up_to(&mut self, durable: u64) {
        let later = self.waiting.split_off(&(durable.saturating_add(1), 0));
        for (_, tx) in std::mem::replace(&mut self.waiting, later) {
            let _ = tx.send(());
        }
    }

    /// Wakes every waiter (the partition is fenced).
    pub fn release_all(&mut self) {
        for (_, tx) in std::mem::take(&mut self.waiting) {
            let _ = tx.send(());
        }
    }

    /// Waiters registered now.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// One partition.
#[derive(Debug)]
pub struct Partition {
    /// Its topic.
    pub topic: TopicKey,
    /// `namespace/topic`, for logs and labels.
    pub label: String,
    /// Partition number.
    pub index: u32,
    state: Mutex<PartState>,
    /// Durability progress.
    pub durable_tx: watch::Sender<Progress>,
    /// Durable publishes waiting for their records (woken by the committer and by fencing,
    /// always after `durable_tx` changed).
    pub durable_waiters: Mutex<DurableWaiters>,
    /// Log end offset.
    pub end_tx: watch::Sender<u64>,
    /// Wakes the flusher.
    pub wake: Notify,
    /// `log_end - durable`, exported.
    pub lag: Gauge,
    /// Whether this broker owns (serves) the partition; a partition another broker owns
    /// (`--ownership shared`) is a placeholder with an empty log.
    pub owned: bool,
}

impl Partition {
    /// A partition whose durable records are `[log_start, next)`.
    pub fn new(
        topic: TopicKey,
        index: u32,
        log_start: u64,
        next: u64,
        roll_bytes: usize,
        lag: Gauge,
    ) -> Self {
        let label = topic.to_string();
        lag.set(0);
        Self {
            topic,
            label,
            index,
            state: Mutex::new(PartState {
                log: PartitionLog::new(log_start, next, roll_bytes),
                wanted: next,
                closed: false,
                write_error: None,
                commit_error: None,
                links: Vec::new(),
                recent: VecDeque::new(),
                segments: BTreeMap::new(),
                producers: kafka::idempotence::ProducerStates::default(),
                // Nothing to rebuild in a partition that holds no record.
                producers_loaded: next == 0,
                epoch: 0,
                fenced: None,
                draining: false,
            }),
            durable_tx: watch::Sender::new(Progress {
                durable: next,
                failures: 0,
                fenced: false,
            }),
            durable_waiters: Mutex::new(DurableWaiters::default()),
            end_tx: watch::Sender::new(next),
            wake: Notify::new(),
            lag,
            owned: true,
        }
    }

    /// A partition another broker owns: a placeholder that serves nothing.
    pub fn remote(topic: TopicKey, index: u32) -> Self {
        Self {
            owned: false,
            ..Self::new(topic, index, 0, 0, 1, Gauge::default())
        }
    }

    /// Locks the state. Holders never await; a panic while holding it may have left the log
    /// half-updated, so a poisoned lock aborts the process (see [`common::sync`]) and recovery
    /// rebuilds the partition from its segments.
    pub fn lock(&self) -> MutexGuard<'_, PartState> {
        self.state.lock_or_abort()
    }

    /// `(log_start, durable, log_end)`.
    pub fn offsets(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.log.log_start(), st.log.durable(), st.log.next())
    }
}

/// A topic.
#[derive(Debug)]
pub struct Topic {
    /// Its key.
    pub key: TopicKey,
    /// Its partitions, by number.
    pub partitions: Vec<Arc<Partition>>,
    /// The partitions this broker owns, ascending (all of them unless `--ownership shared`).
    pub owned: Vec<u32>,
    /// Round-robin cursor for records with neither key nor partition.
    pub rr: AtomicU64,
}

impl Topic {
    /// A topic of these partitions.
    pub fn new(key: TopicKey, partitions: Vec<Arc<Partition>>) -> Self {
        let owned = partitions
            .iter()
            .filter(|p| p.owned)
            .map(|p| p.index)
            .collect();
        Self {
            key,
            partitions,
            owned,
            rr: AtomicU64::new(0),
        }
    }

    /// This topic with partition `part` (of the same index) in place of the one it had.
    pub fn with_partition(&self, part: Arc<Partition>) -> Self {
        let mut partitions = self.partitions.clone();
        let i = part.index as usize;
        if i < partitions.len() {
            partitions[i] = part;
        }
        let t = Self::new(self.key.clone(), partitions);
        t.rr.store(
            self.rr.load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
        t
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Partition `p`, if it exists.
    pub fn partition(&self, p: u32) -> Option<&Arc<Partition>> {
        self.partitions.get(p as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_durable_waiters_wake_each_waiter_once_its_target_is_reached() {
        let mut w = DurableWaiters::default();
        let (_, mut at3) = w.register(3);
        let (_, mut at5) = w.register(5);
        let (_, mut also5) = w.register(5);
        let (id9, mut at9) = w.register(9);
        w.release_up_to(4);
        assert_eq!(at3.try_recv(), Ok(()));
        assert!(at5.try_recv().is_err() && also5.try_recv().is_err());
        w.release_up_to(5);
        assert_eq!((at5.try_recv(), also5.try_recv()), (Ok(()), Ok(())));
        assert_eq!(w.len(), 1);
        // A waiter that timed out is forgotten; fencing wakes everyone left.
        w.cancel(9, id9);
        assert!(w.is_empty());
        assert!(at9.try_recv().is_err(), "cancelled: its sender is gone");
        let (_, mut at20) = w.register(20);
        w.release_all();
        assert_eq!(at20.try_recv(), Ok(()));
        assert!(w.is_empty());
    }
}
