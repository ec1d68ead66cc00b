//! [`MemStore`]: an in-memory [`Store`] with failure injection, for tests of the flusher,
//! publish, fetch and recovery without a master, volume server or filer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use common::ids::FileId;
use common::sync::LockExt;
use futures::FutureExt;

use super::{
    Assignment, ChunkRef, CreateOutcome, SegmentMeta, SegmentRef, Store, StoreError, StoreFuture,
    TopicConf, TopicKey,
};

/// Switches that make the next calls of a [`MemStore`] fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every assign fails while set.
    pub assign: AtomicBool,
    /// Every write fails while set.
    pub write: AtomicBool,
    /// Every commit fails while set.
    pub commit: AtomicBool,
    /// Every segment read fails while set.
    pub read: AtomicBool,
    /// Every metadata read or listing fails while set (the filer is down).
    pub meta: AtomicBool,
    /// This many upcoming commits succeed but report a failure (a lost answer).
    pub lose_commit_answers: AtomicU32,
    /// Simulated latency of each write and each commit, in microseconds.
    pub delay_us: AtomicU64,
    /// Extra latency of the next write only, in microseconds (taken by that write).
    pub slow_next_write_us: AtomicU64,
}

impl Faults {
    async fn delay(&self) {
        let us = self.delay_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(us)).await;
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<FileId, Bytes>,
    segments: BTreeMap<(TopicKey, u32), BTreeMap<u64, SegmentMeta>>,
    topics: BTreeMap<TopicKey, u32>,
    groups: BTreeMap<(String, TopicKey, u32), u64>,
    ids: BTreeMap<String, u64>,
    epochs: BTreeMap<(TopicKey, u32), u64>,
    owners: BTreeMap<(TopicKey, u32), String>,
}

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
    next_key: AtomicU64,
    /// Failure switches.
    pub faults: Faults,
    /// Successful segment commits.
    pub commits: AtomicU64,
    /// Assign calls (successful or not).
    pub assigns: AtomicU64,
    /// Releases recorded (`release_partition` by the partition's current owner).
    pub releases: AtomicU64,
    /// Writes running now.
    writes_in_flight: AtomicU64,
    /// The most writes that ran at once.
    pub max_writes_in_flight: AtomicU64,
    /// Every successful segment commit's partition and first offset, in commit order.
    pub commit_order: Mutex<Vec<(u32, u64)>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_or_abort()
    }

    fn fail(flag: &AtomicBool, what: &str) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            Err(StoreError::Other(format!("injected failure: {what}")))
        } else {
            Ok(())
        }
    }

    /// How many blobs (segment chunks) are stored.
    pub fn blob_count(&self) -> usize {
        self.lock().blobs.len()
    }

    /// The committed segment entries of a partition, in offset order.
    pub fn segments(&self, topic: &TopicKey, partition: u32) -> Vec<SegmentMeta> {
        self.lock()
            .segments
            .get(&(topic.clone(), partition))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores a segment entry and its bytes directly (to set up recovery tests).
    pub fn insert_segment(&self, meta: SegmentMeta, data: Bytes) {
        let mut inner = self.lock();
        inner.blobs.insert(meta.chunk.fid, data);
        inner
            .segments
            .entry((meta.topic.clone(), meta.partition))
            .or_default()
            .insert(meta.offset_min, meta);
    }

    /// Replaces a stored blob's bytes (to simulate corruption).
    pub fn corrupt_blob(&self, fid: &FileId, data: Bytes) {
        self.lock().blobs.insert(*fid, data);
    }

    fn to_ref(meta: &SegmentMeta) -> SegmentRef {
        SegmentRef {
            offset_min: meta.offset_min,
            offset_max: meta.offset_max,
            fid: meta.chunk.fid,
            size: meta.chunk.size,
            ts_max: meta.ts_max,
        }
    }

    fn pick(
        &self,
        topic: &TopicKey,
        partition: u32,
        f: impl FnOnce(&BTreeMap<u64, SegmentMeta>) -> Option<&SegmentMeta>,
    ) -> Result<Option<SegmentRef>, StoreError> {
        Self::fail(&self.faults.meta, "list segments")?;
        let inner = self.lock();
        Ok(inner
            .segments
            .get(&(topic.clone(), partition))
            .and_then(f)
            .map(Self::to_ref))
    }
}

impl Store for MemStore {
    fn assign(&self) -> StoreFuture<'_, Assignment> {
        async move {
            self.assigns.fetch_add(1, Ordering::SeqCst);
            Self::fail(&self.faults.assign, "assign")?;
            let key = self.next_key.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Assignment {
                fid: FileId::new(1, key, 0x1234_5678),
                url: "mem".to_owned(),
            })
        }
        .boxed()
    }

    fn write<'a>(&'a self, assignment: &'a Assignment, data: Bytes) -> StoreFuture<'a, ChunkRef> {
        async move {
            Self::fail(&self.faults.write, "volume write")?;
            let running = self.writes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_writes_in_flight
                .fetch_max(running, Ordering::SeqCst);
            self.faults.delay().await;
            let slow = self.faults.slow_next_write_us.swap(0, Ordering::SeqCst);
            if slow > 0 {
                tokio::time::sleep(std::time::Duration::from_micros(slow)).await;
            }
            self.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
            let size = data.len() as u64;
            let etag = format!("{:08x}", crc32c::crc32c(&data));
            self.lock().blobs.insert(assignment.fid, data);
            Ok(ChunkRef {
                fid: assignment.fid,
                size,
                etag,
            })
        }
        .boxed()
    }

    fn take_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        owner: &'a str,
    ) -> StoreFuture<'a, u64> {
        async move {
            Self::fail(&self.faults.meta, "take partition")?;
            let mut inner = self.lock();
            let id = (topic.clone(), partition);
            inner.owners.insert(id.clone(), owner.to_owned());
            let epoch = inner.epochs.entry(id).or_insert(0);
            *epoch += 1;
            Ok(*epoch)
        }
        .boxed()
    }

    fn partition_owner<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<(String, u64)>> {
        async move {
            Self::fail(&self.faults.meta, "read partition owner")?;
            let inner = self.lock();
            let id = (topic.clone(), partition);
            Ok(inner
                .epochs
                .get(&id)
                .map(|e| (inner.owners.get(&id).cloned().unwrap_or_default(), *e)))
        }
        .boxed()
    }

    fn release_partition<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        epoch: u64,
    ) -> StoreFuture<'a, ()> {
        async move {
            Self::fail(&self.faults.meta, "release partition")?;
            let mut inner = self.lock();
            let id = (topic.clone(), partition);
            if inner.epochs.get(&id) == Some(&epoch) {
                inner.owners.insert(id, String::new());
                self.releases.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        .boxed()
    }

    fn commit_segment<'a>(&'a self, meta: &'a SegmentMeta) -> StoreFuture<'a, ()> {
        async move {
            Self::fail(&self.faults.commit, "filer commit")?;
            self.faults.delay().await;
            {
                let mut inner = self.lock();
                let current = inner
                    .epochs
                    .get(&(meta.topic.clone(), meta.partition))
                    .copied()
                    .unwrap_or(0);
                if current != meta.epoch {
                    return Err(StoreError::Fenced(format!(
                        "partition {} of {} is at owner epoch {current}, not {}",
                        meta.partition, meta.topic, meta.epoch
                    )));
                }
                let segs = inner
                    .segments
                    .entry((meta.topic.clone(), meta.partition))
                    .or_default();
                match segs.get(&meta.offset_min) {
                    Some(existing) if existing.chunk.fid == meta.chunk.fid => return Ok(()),
                    Some(existing) => {
                        return Err(StoreError::Conflict(format!(
                            "segment entry {} already exists with chunk {}",
                            meta.path(),
                            existing.chunk.fid
                        )));
                    }
                    None => {
                        segs.insert(meta.offset_min, meta.clone());
                        self.commit_order
                            .lock_or_abort()
                            .push((meta.partition, meta.offset_min));
                    }
                }
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            let lost = self
                .faults
                .lose_commit_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if lost {
                return Err(StoreError::Other(
                    "injected failure: commit answer lost".to_owned(),
                ));
            }
            Ok(())
        }
        .boxed()
    }

    fn first_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        async move { self.pick(topic, partition, |m| m.values().next()) }.boxed()
    }

    fn last_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        async move { self.pick(topic, partition, |m| m.values().next_back()) }.boxed()
    }

    fn find_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
    ) -> StoreFuture<'a, Option<SegmentRef>> {
        async move {
            self.pick(topic, partition, |m| {
                m.range(..=offset).next_back().map(|(_, v)| v)
            })
        }
        .boxed()
    }

    fn list_segments<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        from: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<SegmentRef>> {
        async move {
            Self::fail(&self.faults.meta, "list segments")?;
            let inner = self.lock();
            Ok(inner
                .segments
                .get(&(topic.clone(), partition))
                .map(|m| {
                    m.range(from..)
                        .take(limit as usize)
                        .map(|(_, meta)| Self::to_ref(meta))
                        .collect()
                })
                .unwrap_or_default())
        }
        .boxed()
    }

    fn delete_segment<'a>(
        &'a self,
        topic: &'a TopicKey,
        partition: u32,
        seg: &'a SegmentRef,
    ) -> StoreFuture<'a, ()> {
        async move {
            Self::fail(&self.faults.meta, "delete segment")?;
            let mut inner = self.lock();
            if let Some(m) = inner.segments.get_mut(&(topic.clone(), partition)) {
                m.remove(&seg.offset_min);
            }
            inner.blobs.remove(&seg.fid);
            Ok(())
        }
        .boxed()
    }

    fn read_segment<'a>(&'a self, seg: &'a SegmentRef) -> StoreFuture<'a, Bytes> {
        async move {
            Self::fail(&self.faults.read, "segment read")?;
            self.lock()
                .blobs
                .get(&seg.fid)
                .cloned()
                .ok_or_else(|| StoreError::Other(format!("segment {} not found", seg.fid)))
        }
        .boxed()
    }

    fn list_topics(&self) -> StoreFuture<'_, Vec<TopicConf>> {
        async move {
            Self::fail(&self.faults.meta, "list topics")?;
            Ok(self
                .lock()
                .topics
                .iter()
                .map(|(k, p)| TopicConf {
                    key: k.clone(),
                    partitions: *p,
                })
                .collect())
        }
        .boxed()
    }

    fn delete_topic<'a>(&'a self, topic: &'a TopicKey) -> StoreFuture<'a, ()> {
        async move {
            Self::fail(&self.faults.meta, "delete topic")?;
            let mut inner = self.lock();
            inner.topics.remove(topic);
            inner.segments.retain(|(t, _), _| t != topic);
            inner.groups.retain(|(_, t, _), _| t != topic);
            inner.epochs.retain(|(t, _), _| t != topic);
            inner.owners.retain(|(t, _), _| t != topic);
            Ok(())
        }
        .boxed()
    }

    fn create_topic<'a>(&'a self, conf: &'a TopicConf) -> StoreFuture<'a, CreateOutcome> {
        async move {
            Self::fail(&self.faults.meta, "create topic")?;
            let mut inner = self.lock();
            match inner.topics.get(&conf.key) {
                Some(p) => Ok(CreateOutcome::Exists(TopicConf {
                    key: conf.key.clone(),
                    partitions: *p,
                })),
                None => {
                    inner.topics.insert(conf.key.clone(), conf.partitions);
                    Ok(CreateOutcome::Created)
                }
            }
        }
        .boxed()
    }

    fn put_group_offset<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
        partition: u32,
        offset: u64,
        reset: bool,
    ) -> StoreFuture<'a, u64> {
        async move {
            Self::fail(&self.faults.meta, "store group offset")?;
            let mut inner = self.lock();
            let stored = inner
                .groups
                .entry((group.to_owned(), topic.clone(), partition))
                .or_insert(offset);
            if reset || *stored < offset {
                *stored = offset;
            }
            Ok(*stored)
        }
        .boxed()
    }

    fn group_offsets<'a>(
        &'a self,
        group: &'a str,
        topic: &'a TopicKey,
    ) -> StoreFuture<'a, Vec<(u32, u64)>> {
        async move {
            Self::fail(&self.faults.meta, "read group offsets")?;
            Ok(self
                .lock()
                .groups
                .iter()
                .filter(|((g, t, _), _)| g == group && t == topic)
                .map(|((_, _, p), o)| (*p, *o))
                .collect())
        }
        .boxed()
    }

    fn reserve_ids<'a>(&'a self, name: &'a str, count: u64) -> StoreFuture<'a, u64> {
        async move {
            Self::fail(&self.faults.meta, "reserve ids")?;
            let mut inner = self.lock();
            let next = inner.ids.entry(name.to_owned()).or_insert(0);
            let first = *next;
            *next = first
                .checked_add(count)
                .ok_or_else(|| StoreError::Other(format!("sequence {name} is exhausted")))?;
            Ok(first)
        }
        .boxed()
    }
}
