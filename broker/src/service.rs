//! The broker's domain operations: topics, recovery, consumer groups, the admin flush and
//! readiness. Publish, fetch and the flusher live in their own modules and extend [`Broker`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use common::api::broker::{
    FlushResponse, GroupOffsets, PartitionInfo, PartitionOffset, TopicInfo, TopicSummary,
};
use common::http::ApiError;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::core::Core;
use crate::names::check_name;
use crate::partition::{Partition, Topic};
use crate::store::{CreateOutcome, Store, StoreError, TopicConf, TopicKey};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// How many partitions are recovered concurrently.
const RECOVERY_CONCURRENCY: usize = 16;

/// Maps a store failure to an API error: unreachable dependencies are a 503, the rest a 500.
pub fn store_error(err: StoreError) -> ApiError {
    match &err {
        StoreError::Client { source, .. } if source.is_transient() => {
            ApiError::unavailable("store_unavailable", err.to_string(), 1)
        }
        StoreError::Conflict(m) => ApiError::conflict("conflict", m.clone()),
        _ => ApiError::internal(anyhow::Error::new(err)),
    }
}

/// The broker: its topics and their recovery, over the [`Core`] every part shares (reachable
/// through `Deref`, so `broker.cfg` reads the core's configuration).
pub struct Broker {
    core: Arc<Core>,
    topics: RwLock<BTreeMap<TopicKey, Arc<Topic>>>,
    loaded: AtomicBool,
    load_error: Mutex<Option<String>>,
    create_lock: tokio::sync::Mutex<()>,
}

impl std::ops::Deref for Broker {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with no topics loaded yet; call [`Broker::load_all`] to recover them.
    pub fn new(cfg: Config, store: Arc<dyn Store>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            core: Arc::new(Core::new(cfg, store, shutdown)),
            topics: RwLock::new(BTreeMap::new()),
            loaded: AtomicBool::new(false),
            load_error: Mutex::new(None),
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Bytes buffered (accepted, not yet durable) across all partitions.
    pub fn buffered_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Whether start-up recovery finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// 503 until recovery finished.
    pub fn check_loaded(&self) -> Result<(), ApiError> {
        if self.is_loaded() {
            return Ok(());
        }
        let why = self
            .load_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "in progress".to_owned());
        Err(ApiError::unavailable(
            "not_ready",
            format!("broker is still recovering topics from the filer ({why})"),
            1,
        ))
    }

    /// 503 once shutting down or before recovery finished.
    pub fn check_accepting(&self) -> Result<(), ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        self.check_loaded()
    }

    /// The topic `key`, or 404 naming it.
    pub fn topic(&self, key: &TopicKey) -> Result<Arc<Topic>, ApiError> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found("unknown_topic", format!("topic {key} does not exist"))
            })
    }

    /// Every topic.
    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

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
                    *self
                        .load_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    self.loaded.store(true, Ordering::Release);
                    tracing::info!(topics = n, "recovered topics from the filer");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "failed to recover topics from the filer");
                    *self
                        .load_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn try_load_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        let confs = self.store.list_topics().await?;
        let n = confs.len();
        for conf in confs {
            if self.topic(&conf.key).is_ok() {
                continue;
            }
            let topic = self.recover_topic(&conf, true).await?;
            self.install(topic);
        }
        Ok(n)
    }

    /// Rebuilds a topic's partitions from its segment entries: the last segment gives the
    /// next offset, the first gives `log_start_offset`. Costs two listings per partition
    /// directory, whatever the number of records. With `existing = false` (a topic just
    /// created) only partitions that already have a directory are listed.
    async fn recover_topic(
        self: &Arc<Self>,
        conf: &TopicConf,
        existing: bool,
    ) -> Result<Arc<Topic>, StoreError> {
        let key = &conf.key;
        // Own every partition before reading its segments: from here on a commit of the
        // previous owner is refused, so what is listed below is the partition's whole log.
        let owner = self.owner_id();
        let store = &self.store;
        let owner = &owner;
        let taken: Vec<Result<(u32, u64), StoreError>> = futures::stream::iter(0..conf.partitions)
            .map(|p| async move { Ok((p, store.take_partition(key, p, owner).await?)) })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        let mut epochs = BTreeMap::new();
        for t in taken {
            let (p, epoch) = t?;
            epochs.insert(p, epoch);
        }
        let dirs = self.store.partition_dirs(key).await?;
        if !existing && dirs.is_empty() {
            return Ok(self.build_topic(conf, &BTreeMap::new(), &epochs));
        }
        let results: Vec<Result<(u32, u64, u64), StoreError>> =
            futures::stream::iter(dirs.into_iter().filter(|p| *p < conf.partitions))
                .map(|p| async move {
                    let last = store.last_segment(key, p).await?;
                    let Some(last) = last else {
                        return Ok((p, 0, 0));
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
                    Ok((p, first.offset_min, last.end()))
                })
                .buffer_unordered(RECOVERY_CONCURRENCY)
                .collect()
                .await;
        let mut bounds = BTreeMap::new();
        for r in results {
            let (p, start, next) = r?;
            tracing::info!(topic = %key, partition = p, log_start_offset = start, next_offset = next, "recovered partition");
            bounds.insert(p, (start, next));
        }
        Ok(self.build_topic(conf, &bounds, &epochs))
    }

    /// How this broker names itself as a partition's owner.
    fn owner_id(&self) -> String {
        format!(
            "{}:{} pid {}",
            self.cfg.ip,
            self.cfg.port,
            std::process::id()
        )
    }

    fn build_topic(
        self: &Arc<Self>,
        conf: &TopicConf,
        bounds: &BTreeMap<u32, (u64, u64)>,
        epochs: &BTreeMap<u32, u64>,
    ) -> Arc<Topic> {
        let roll = self.cfg.flush_bytes.min(self.cfg.max_segment_bytes).max(1) as usize;
        let label = conf.key.to_string();
        let partitions = (0..conf.partitions)
            .map(|p| {
                let (start, next) = bounds.get(&p).copied().unwrap_or((0, 0));
                let part = Partition::new(
                    conf.key.clone(),
                    p,
                    start,
                    next,
                    roll,
                    self.metrics.lag_gauge(&label, p),
                );
                part.lock().epoch = epochs.get(&p).copied().unwrap_or(0);
                Arc::new(part)
            })
            .collect();
        Arc::new(Topic {
            key: conf.key.clone(),
            partitions,
            rr: AtomicU64::new(0),
        })
    }

    /// Registers a topic and starts its flushers.
    fn install(self: &Arc<Self>, topic: Arc<Topic>) {
        for part in &topic.partitions {
            crate::flusher::spawn(&self.core, part.clone());
        }
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.key.clone(), topic);
    }

    /// A topic's offsets.
    pub fn topic_info(&self, topic: &Topic) -> TopicInfo {
        TopicInfo {
            namespace: topic.key.ns.clone(),
            name: topic.key.name.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| {
                    let (log_start_offset, durable_offset, log_end_offset) = p.offsets();
                    PartitionInfo {
                        partition: p.index,
                        log_start_offset,
                        durable_offset,
                        log_end_offset,
                    }
                })
                .collect(),
        }
    }

    /// Creates a topic; `Ok((true, _))` when created, `Ok((false, _))` when it existed with
    /// the same partition count, 409 when it exists with another.
    pub async fn create_topic(
        self: &Arc<Self>,
        key: TopicKey,
        partitions: u32,
    ) -> Result<(bool, TopicInfo), ApiError> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(ApiError::bad_request(
                "bad_partitions",
                format!(
                    "topic {key}: partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
                ),
            ));
        }
        self.check_accepting()?;
        let _guard = self.create_lock.lock().await;
        let conflict = |have: u32| {
            ApiError::conflict(
                "topic_exists",
                format!("topic {key} already exists with {have} partitions, not {partitions}"),
            )
        };
        if let Ok(t) = self.topic(&key) {
            return if t.partition_count() == partitions {
                Ok((false, self.topic_info(&t)))
            } else {
                Err(conflict(t.partition_count()))
            };
        }
        let held: u64 = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum();
        if held + u64::from(partitions) > self.cfg.max_partitions {
            return Err(ApiError::conflict(
                "partition_limit",
                format!(
                    "topic {key}: {partitions} more partitions would exceed this broker's limit of {} (it holds {held}; see --max-partitions)",
                    self.cfg.max_partitions
                ),
            ));
        }
        let conf = TopicConf {
            key: key.clone(),
            partitions,
        };
        let outcome = self.store.create_topic(&conf).await.map_err(store_error)?;
        let (created, conf) = match outcome {
            CreateOutcome::Created => (true, conf),
            CreateOutcome::Exists(existing) => (false, existing),
        };
        let topic = self
            .recover_topic(&conf, !created)
            .await
            .map_err(store_error)?;
        self.install(topic.clone());
        if created {
            tracing::info!(topic = %key, partitions, "created topic");
        }
        if conf.partitions != partitions {
            return Err(conflict(conf.partitions));
        }
        Ok((created, self.topic_info(&topic)))
    }

    /// Deletes a topic: its partitions stop at once (appends refused, buffered records
    /// dropped, durable waiters answered 503), then its entries are deleted in the filer. A
    /// flush still in flight cannot bring it back: its commit names the partition's owner
    /// epoch on the partition directory, which the delete removed, so it is fenced.
    pub async fn delete_topic(self: &Arc<Self>, key: &TopicKey) -> Result<(), ApiError> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_accepting()?;
        let _guard = self.create_lock.lock().await;
        let topic = self.topic(key)?;
        for part in &topic.partitions {
            crate::flusher::fence(&self.core, part, &format!("topic {key} was deleted"), true);
        }
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.store.delete_topic(key).await.map_err(store_error)?;
        tracing::info!(topic = %key, "deleted topic");
        Ok(())
    }

    /// Every topic, ordered.
    pub fn list_topics(&self) -> Result<Vec<TopicSummary>, ApiError> {
        self.check_loaded()?;
        Ok(self
            .all_topics()
            .iter()
            .map(|t| TopicSummary {
                namespace: t.key.ns.clone(),
                name: t.key.name.clone(),
                partitions: t.partition_count(),
            })
            .collect())
    }

    /// A topic's offsets, or 404.
    pub fn get_topic(&self, key: &TopicKey) -> Result<TopicInfo, ApiError> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_loaded()?;
        let t = self.topic(key)?;
        Ok(self.topic_info(&t))
    }

    /// Parses `namespace/topic` and finds the topic.
    fn group_topic(&self, group: &str, topic: &str) -> Result<Arc<Topic>, ApiError> {
        check_name("group", group)?;
        let Some((ns, name)) = topic.split_once('/') else {
            return Err(ApiError::bad_request(
                "bad_topic",
                format!("topic {topic:?} must be namespace/topic"),
            ));
        };
        check_name("namespace", ns)?;
        check_name("topic", name)?;
        self.check_loaded()?;
        self.topic(&TopicKey::new(ns, name))
    }

    /// Stores a consumer group's offset durably; it only goes down with `reset`. Answers
    /// the offset stored.
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        reset: bool,
    ) -> Result<GroupOffsets, ApiError> {
        let t = self.group_topic(group, topic)?;
        if partition >= t.partition_count() {
            return Err(unknown_partition(&t, partition));
        }
        let offset = self
            .store
            .put_group_offset(group, &t.key, partition, offset, reset)
            .await
            .map_err(store_error)?;
        Ok(GroupOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets: vec![PartitionOffset { partition, offset }],
        })
    }

    /// A consumer group's committed offsets.
    pub async fn group_offsets(&self, group: &str, topic: &str) -> Result<GroupOffsets, ApiError> {
        let t = self.group_topic(group, topic)?;
        let offsets = self
            .store
            .group_offsets(group, &t.key)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|(partition, offset)| PartitionOffset { partition, offset })
            .collect();
        Ok(GroupOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets,
        })
    }

    /// Makes everything buffered now durable. Answers 503 naming a partition that is not
    /// durable within `--durable-timeout-ms`, or earlier when its flush keeps failing (five
    /// failed attempts since the call, and a tenth of that timeout gone).
    pub async fn flush_all(&self) -> Result<FlushResponse, ApiError> {
        self.check_loaded()?;
        let mut waits = Vec::new();
        for topic in self.all_topics() {
            for part in &topic.partitions {
                let target = {
                    let mut st = part.lock();
                    let end = st.log.next();
                    if end <= st.log.durable() {
                        continue;
                    }
                    st.wanted = st.wanted.max(end);
                    end
                };
                part.wake.notify_one();
                let failures = part.durable_tx.borrow().failures;
                waits.push((part.clone(), target, failures));
            }
        }
        let started = tokio::time::Instant::now();
        let deadline = started + self.cfg.durable_timeout();
        let patience = self.cfg.durable_timeout() / 10;
        for (part, target, failures) in &waits {
            let mut rx = part.durable_tx.subscribe();
            let waited = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|p| {
                    p.fenced
                        || p.durable >= *target
                        || (p.failures >= failures + 5 && started.elapsed() >= patience)
                }),
            )
            .await;
            let reached = matches!(&waited, Ok(Ok(p)) if p.durable >= *target);
            if !reached {
                let error = part
                    .lock()
                    .error()
                    .unwrap_or_else(|| "no error reported yet".to_owned());
                return Err(ApiError::unavailable(
                    "flush_failed",
                    format!(
                        "partition {} of {} is not durable up to offset {target}: {error}; \
                         its records stay buffered and flushes are retried",
                        part.index, part.label
                    ),
                    1,
                ));
            }
        }
        Ok(FlushResponse {
            flushed_partitions: waits.len() as u64,
        })
    }

    /// 200 when recovered, not shutting down and no flush is failing; otherwise a 503
    /// naming why.
    pub fn readiness(&self) -> Result<(), ApiError> {
        self.check_loaded()?;
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let mut failing = Vec::new();
        for topic in self.all_topics() {
            for part in &topic.partitions {
                let error = part.lock().error();
                if let Some(e) = error {
                    failing.push(format!("{} partition {}: {e}", part.label, part.index));
                }
            }
        }
        if failing.is_empty() {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "flush_failing",
                format!("flushes are failing for {}", failing.join("; ")),
                1,
            ))
        }
    }

    /// Logs every partition that still holds records that are not durable; returns how many.
    pub fn report_unflushed(&self) -> usize {
        let mut n = 0;
        for topic in self.all_topics() {
            for part in &topic.partitions {
                let st = part.lock();
                if st.log.next() > st.log.durable() {
                    n += 1;
                    tracing::error!(
                        topic = %part.label,
                        partition = part.index,
                        durable_offset = st.log.durable(),
                        log_end_offset = st.log.next(),
                        bytes = st.log.buffered_bytes(),
                        error = st.error().unwrap_or_default(),
                        "records could not be flushed before shutdown and are lost"
                    );
                }
            }
        }
        n
    }

    /// Starts recovery in the background.
    pub fn spawn_loader(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(
            me.load_all()
                .instrument(tracing::info_span!("broker.recover")),
        );
    }
}

/// 503 `shutting_down`.
pub fn shutting_down() -> ApiError {
    ApiError::unavailable("shutting_down", "broker is shutting down", 1)
}

/// 400 `unknown_partition` naming the topic and its partition count.
pub fn unknown_partition(topic: &Topic, partition: u32) -> ApiError {
    ApiError::bad_request(
        "unknown_partition",
        format!(
            "topic {} has no partition {partition} (it has {})",
            topic.key,
            topic.partition_count()
        ),
    )
}
