//! Shared partition ownership (`--ownership shared`): several brokers each serve the
//! partitions that rendezvous hashing over the live members gives them (`crate::members`),
//! and move partitions when brokers join or leave.
//!
//! A rebalance round (every `ttl/4`) reads the live members and the topics, then for every
//! partition:
//! - owned here but another member's now: *release* it — refuse appends, flush what is
//!   buffered (durable waiters get their acks), record the release in the filer, and keep a
//!   placeholder that redirects to the new owner;
//! - another's but this broker's now: *take* it once its recorded owner released it, is no
//!   longer a live member, or has not let go within two TTLs (a stuck owner is fenced: taking
//!   raises the owner epoch, so its commits are refused). Taking recovers the partition from
//!   its committed segments, like a start-up.
//!
//! Invariants: a partition is served only under an epoch this broker raised, so nothing it
//! acknowledges can be committed over (the store fences stale epochs); the topics map only
//! ever swaps a partition slot for the same index, under the map's lock, and only when the
//! slot still holds the partition the decision was made on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sync::LockExt;
use futures::StreamExt;

use crate::members::{Member, Members, owner_of};
use crate::partition::{Partition, Topic};
use crate::service::recovery::partition_bounds;
use crate::service::{Broker, Error, RECOVERY_CONCURRENCY};
use crate::store::{StoreError, TopicConf, TopicKey};

/// How often a draining partition is checked.
const DRAIN_POLL: Duration = Duration::from_millis(20);

impl Broker {
    /// Whether partitions are shared with other brokers (`--ownership shared`).
    pub fn is_shared(&self) -> bool {
        self.view.read_or_abort().is_some()
    }

    /// The live members as last read (empty unless shared).
    pub fn members(&self) -> Vec<Member> {
        self.view.read_or_abort().clone().unwrap_or_default()
    }

    /// Whether this broker should own partition `p` of `key` now.
    pub(super) fn should_own(&self, key: &TopicKey, p: u32) -> bool {
        match &*self.view.read_or_abort() {
            None => true,
            Some(members) => {
                owner_of(members, key, p).is_some_and(|m| m.url == self.leadership.me())
            }
        }
    }

    /// [`Error::NotOwner`] for partition `p` of `key`, naming the member that should own it
    /// (unless that is this broker: then it is on its way here).
    pub fn not_owner(&self, key: &TopicKey, p: u32) -> Error {
        let owner = owner_of(&self.members(), key, p)
            .map(|m| m.url.clone())
            .filter(|u| u != self.leadership.me());
        Error::NotOwner {
            key: key.clone(),
            partition: p,
            owner,
        }
    }

    /// [`Error::NotOwner`] unless this broker serves `part`.
    pub fn check_owned(&self, part: &Partition) -> Result<(), Error> {
        if part.owned {
            Ok(())
        } else {
            Err(self.not_owner(&part.topic, part.index))
        }
    }

    /// Checks that this broker owns every partition a publish targets: one other owner is
    /// [`Error::NotOwner`] (the client is redirected there), several are
    /// [`Error::SplitPublish`].
    pub(crate) fn check_targets(&self, topic: &Topic, parts: &[u32]) -> Result<(), Error> {
        let foreign: BTreeSet<u32> = parts
            .iter()
            .copied()
            .filter(|p| topic.partition(*p).is_some_and(|part| !part.owned))
            .collect();
        let Some(first) = foreign.first().copied() else {
            return Ok(());
        };
        let members = self.members();
        let owner = |p: u32| owner_of(&members, &topic.key, p).map(|m| m.url.clone());
        let owners: BTreeSet<Option<String>> = foreign.iter().map(|p| owner(*p)).collect();
        if owners.len() == 1 && foreign.len() == parts.iter().collect::<BTreeSet<_>>().len() {
            return Err(self.not_owner(&topic.key, first));
        }
        let mut all: BTreeMap<u32, String> = BTreeMap::new();
        for p in parts {
            let o = if foreign.contains(p) {
                owner(*p).unwrap_or_else(|| "unknown".to_owned())
            } else {
                self.leadership.me().to_owned()
            };
            all.insert(*p, o);
        }
        Err(Error::SplitPublish {
            key: topic.key.clone(),
            owners: all
                .iter()
                .map(|(p, o)| format!("{p}={o}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Fills in the offsets of the partitions of `info` that other brokers own, as their
    /// committed segments say (`log_end_offset` = `durable_offset`: what they buffer is
    /// theirs to tell).
    pub async fn fill_remote_offsets(
        &self,
        key: &TopicKey,
        info: &mut common::api::broker::TopicInfo,
    ) -> Result<(), Error> {
        let topic = self.topic(key)?;
        for p in info.partitions.iter_mut() {
            if topic.partition(p.partition).is_some_and(|part| !part.owned) {
                let (start, end) = partition_bounds(self.store.as_ref(), key, p.partition).await?;
                p.log_start_offset = start;
                p.durable_offset = end;
                p.log_end_offset = end;
            }
        }
        Ok(())
    }

    /// Shares partitions with the other live `members`: rebalances every `period` until
    /// shutdown; the broker counts as loaded after the first complete round.
    pub(super) async fn run_shared(self: Arc<Self>, members: Arc<dyn Members>, period: Duration) {
        let mut waiting: BTreeMap<(TopicKey, u32), Instant> = BTreeMap::new();
        let mut attempt = 0u32;
        loop {
            let delay = match self.rebalance(members.as_ref(), &mut waiting, period).await {
                Ok(()) => {
                    attempt = 0;
                    if !self.is_loaded() {
                        *self.load_error.lock_or_abort() = None;
                        self.loaded
                            .store(true, std::sync::atomic::Ordering::Release);
                        tracing::info!(members = self.members().len(), "sharing partitions");
                        self.spawn_retention();
                    }
                    period
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(error = %e, "partition rebalance failed");
                    if !self.is_loaded() {
                        *self.load_error.lock_or_abort() = Some(e);
                    }
                    common::retry::backoff(attempt, Duration::from_millis(100), period)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// One round: read members and topics, release and take partitions.
    async fn rebalance(
        self: &Arc<Self>,
        members: &dyn Members,
        waiting: &mut BTreeMap<(TopicKey, u32), Instant>,
        period: Duration,
    ) -> Result<(), String> {
        let me = self.leadership.me().to_owned();
        let mut live = members.live().await?;
        // This broker is a member only while its own lease holds: a broker cut off from the
        // filer gives its partitions up rather than race their new owners.
        let holding = self.leadership.is_writer();
        live.retain(|m| m.url != me);
        if holding {
            live.push(Member {
                url: me.clone(),
                kafka: self.kafka_address.get().cloned(),
            });
        }
        live.sort();
        *self.view.write_or_abort() = Some(live.clone());
        // Topic creation and deletion wait while the topics are compared and taken, so a
        // topic deleted here is never taken again below.
        let guard = self.create_lock.lock().await;
        let confs = self
            .store
            .list_topics()
            .await
            .map_err(|e| format!("list topics: {e}"))?;
        self.forget_deleted(&confs);
        let mut takes = Vec::new();
        let mut releases = Vec::new();
        for conf in &confs {
            let topic = self.placeholder_topic(conf);
            for part in &topic.partitions {
                let want = owner_of(&live, &conf.key, part.index).is_some_and(|m| m.url == me);
                let fenced = part.lock().fenced.is_some();
                if part.owned && (!want || fenced) {
                    releases.push(part.clone());
                } else if !part.owned && want {
                    takes.push((conf.clone(), part.clone()));
                }
            }
        }
        waiting.retain(|(k, p), _| takes.iter().any(|(c, t)| c.key == *k && t.index == *p));
        drop(guard);
        futures::future::join_all(releases.into_iter().map(|p| self.release(p))).await;
        let _guard = self.create_lock.lock().await;
        let live_urls: BTreeSet<String> = live.iter().map(|m| m.url.clone()).collect();
        let now = Instant::now();
        let results: Vec<Result<(), String>> = futures::stream::iter(takes)
            .map(|(conf, slot)| {
                let since = *waiting.entry((conf.key.clone(), slot.index)).or_insert(now);
                let live_urls = &live_urls;
                async move {
                    self.take(&conf, slot, live_urls, since, period)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The topic of `conf` as served here, installing one of placeholders when it is new.
    fn placeholder_topic(&self, conf: &TopicConf) -> Arc<Topic> {
        let mut topics = self.topics.write_or_abort();
        topics
            .entry(conf.key.clone())
            .or_insert_with(|| {
                let parts = (0..conf.partitions)
                    .map(|p| Arc::new(Partition::remote(conf.key.clone(), p)))
                    .collect();
                Arc::new(Topic::new(conf.key.clone(), parts))
            })
            .clone()
    }

    /// Stops serving topics another broker deleted.
    fn forget_deleted(&self, confs: &[TopicConf]) {
        let keys: BTreeSet<&TopicKey> = confs.iter().map(|c| &c.key).collect();
        let gone: Vec<Arc<Topic>> = self
            .all_topics()
            .into_iter()
            .filter(|t| !keys.contains(&t.key))
            .collect();
        for topic in gone {
            for part in topic.partitions.iter().filter(|p| p.owned) {
                crate::flusher::fence(&self.core, part, "its topic was deleted", true);
            }
            self.topics.write_or_abort().remove(&topic.key);
        }
    }

    /// Puts `new` in place of `old` (same topic and index) if the slot still holds `old`.
    fn swap_partition(&self, old: &Arc<Partition>, new: Arc<Partition>) -> bool {
        let mut topics = self.topics.write_or_abort();
        let Some(topic) = topics.get(&old.topic) else {
            return false;
        };
        if !topic
            .partition(old.index)
            .is_some_and(|p| Arc::ptr_eq(p, old))
        {
            return false;
        }
        let swapped = Arc::new(topic.with_partition(new));
        topics.insert(old.topic.clone(), swapped);
        true
    }

    /// Hands `part` over: refuse appends, flush what is buffered (for at most
    /// `--shutdown-flush-timeout-ms`; what is left then is dropped and logged), record the
    /// release, and serve a placeholder from then on.
    async fn release(self: &Arc<Self>, part: Arc<Partition>) {
        {
            let mut st = part.lock();
            st.draining = true;
        }
        part.wake.notify_one();
        let deadline = Instant::now() + self.cfg.shutdown_flush_timeout();
        let drained = loop {
            // Closed (no appends, nothing left to seal) is not enough: segments sealed before
            // may still be writing or committing. Released cleanly once every one committed.
            let (done, clean, epoch) = {
                let st = part.lock();
                let flushed = st.closed && st.log.durable() == st.log.next();
                let fenced = st.fenced.is_some();
                (flushed || fenced, flushed && !fenced, st.epoch)
            };
            if done {
                break clean.then_some(epoch);
            }
            if Instant::now() >= deadline {
                crate::flusher::fence(
                    &self.core,
                    &part,
                    "it moved to another broker before its buffered records could be flushed",
                    false,
                );
                break None;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        if let Some(epoch) = drained
            && let Err(e) = self
                .store
                .release_partition(&part.topic, part.index, epoch)
                .await
        {
            // The new owner takes it anyway once this broker's claim is two TTLs old.
            tracing::warn!(topic = %part.label, partition = part.index, "failed to record the release: {e}");
        }
        let remote = Arc::new(Partition::remote(part.topic.clone(), part.index));
        if self.swap_partition(&part, remote) {
            tracing::info!(topic = %part.label, partition = part.index, clean = drained.is_some(), "released partition");
        }
    }

    /// Takes `slot` (a placeholder) over when its recorded owner let it go, is gone, or has
    /// held it for two TTLs since this broker began waiting (`since`).
    async fn take(
        self: &Arc<Self>,
        conf: &TopicConf,
        slot: Arc<Partition>,
        live: &BTreeSet<String>,
        since: Instant,
        period: Duration,
    ) -> Result<(), StoreError> {
        let (key, p) = (&conf.key, slot.index);
        if self.topic(key).is_err() {
            // Deleted meanwhile (here, under the creation lock).
            return Ok(());
        }
        let me = self.owner_id();
        if let Some((owner, _)) = self.store.partition_owner(key, p).await?
            && !owner.is_empty()
            && owner != me
            && live.contains(&owner)
            && since.elapsed() < period * 8
        {
            // Its owner is alive and has not released it yet: give it time to flush.
            return Ok(());
        }
        let epoch = self.store.take_partition(key, p, &me).await?;
        let bounds = partition_bounds(self.store.as_ref(), key, p).await?;
        let part = self.owned_partition(key, p, bounds, epoch);
        if self.swap_partition(&slot, part.clone()) {
            crate::flusher::spawn(&self.core, part);
            tracing::info!(topic = %key, partition = p, epoch, "took partition over");
        }
        Ok(())
    }
}
