//! The broker's domain operations: the [`Broker`] and its topics (look-up, create, delete,
//! describe). Recovery, consumer groups with the admin flush and readiness, and the
//! [`Error`] every operation returns have their own files; publish, fetch and the flusher live
//! in their own modules and extend [`Broker`] too.
//!
//! Invariant: the domain knows nothing of HTTP; each failure is an [`Error`] variant, which
//! `crate::http::error` maps to a status and `crate::kafka_backend` to a Kafka error code.

mod error;
mod ops;
mod ownership;
mod recovery;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use common::api::broker::{PartitionInfo, TopicInfo, TopicSummary};
use common::sync::LockExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::core::Core;
use crate::names::valid_name;
use crate::partition::Topic;
use crate::store::{CreateOutcome, Store, TopicConf, TopicKey};

pub use error::Error;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// How many partitions are recovered concurrently.
const RECOVERY_CONCURRENCY: usize = 16;

/// Checks a namespace, topic or group name, answering [`Error::BadName`] naming it.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), Error> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::BadName {
            kind,
            name: name.to_owned(),
        })
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
    /// The active/standby lease (`common::lease`): this broker serves only while it holds
    /// it; with `--ownership shared`, its member lease.
    leadership: Arc<common::lease::Leadership>,
    /// With `--ownership shared`: the live members as last read; `None` otherwise.
    view: RwLock<Option<Vec<crate::members::Member>>>,
    /// This broker's Kafka listener as advertised (`host:port`), once bound.
    kafka_address: std::sync::OnceLock<String>,
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
        Self::with_leadership(
            cfg,
            store,
            shutdown,
            Arc::new(common::lease::Leadership::single("")),
        )
    }

    /// [`Broker::new`] taking part in the active/standby lease `leadership`: it recovers the
    /// topics ([`Broker::spawn_loader`]) once it holds the lease.
    pub fn with_leadership(
        cfg: Config,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
        leadership: Arc<common::lease::Leadership>,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Arc::new(Core::new(cfg, store, shutdown)),
            topics: RwLock::new(BTreeMap::new()),
            loaded: AtomicBool::new(false),
            load_error: Mutex::new(None),
            create_lock: tokio::sync::Mutex::new(()),
            leadership,
            view: RwLock::new(None),
            kafka_address: std::sync::OnceLock::new(),
        })
    }

    /// The active/standby lease.
    pub fn leadership(&self) -> &Arc<common::lease::Leadership> {
        &self.leadership
    }

    /// While this broker is a standby (it never held the lease): the active broker's address,
    /// when known. `None` once it is active, or when it is the only broker.
    pub fn standby_of(&self) -> Option<String> {
        if self.is_loaded() || self.is_shared() {
            return None;
        }
        match self.leadership.role() {
            common::lease::Role::Follower(Some(holder)) => Some(holder),
            _ => None,
        }
    }

    /// Bytes buffered (accepted, not yet durable) across all partitions.
    pub fn buffered_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Whether start-up recovery finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// [`Error::NotReady`] until recovery finished.
    pub fn check_loaded(&self) -> Result<(), Error> {
        if self.is_loaded() {
            return Ok(());
        }
        let why = self
            .load_error
            .lock_or_abort()
            .clone()
            .unwrap_or_else(|| "in progress".to_owned());
        Err(Error::NotReady { why })
    }

    /// [`Error::ShuttingDown`] once shutting down, [`Error::NotReady`] before recovery
    /// finished.
    pub fn check_accepting(&self) -> Result<(), Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.check_loaded()
    }

    /// The topic `key`, or [`Error::UnknownTopic`] naming it.
    pub fn topic(&self, key: &TopicKey) -> Result<Arc<Topic>, Error> {
        self.topics
            .read_or_abort()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic { key: key.clone() })
    }

    /// Every topic this broker serves.
    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read_or_abort().values().cloned().collect()
    }

    /// Registers a topic and starts its flushers.
    fn install(self: &Arc<Self>, topic: Arc<Topic>) {
        for part in topic.partitions.iter().filter(|p| p.owned) {
            crate::flusher::spawn(&self.core, part.clone());
        }
        self.topics
            .write_or_abort()
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
    /// the same partition count, [`Error::TopicExists`] when it exists with another.
    pub async fn create_topic(
        self: &Arc<Self>,
        key: TopicKey,
        partitions: u32,
    ) -> Result<(bool, TopicInfo), Error> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::BadPartitions { key, partitions });
        }
        self.check_accepting()?;
        let _guard = self.create_lock.lock().await;
        let conflict = |have: u32| Error::TopicExists {
            key: key.clone(),
            have,
            wanted: partitions,
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
            .read_or_abort()
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum();
        if held + u64::from(partitions) > self.cfg.max_partitions {
            return Err(Error::PartitionLimit {
                key,
                partitions,
                limit: self.cfg.max_partitions,
                held,
            });
        }
        let conf = TopicConf {
            key: key.clone(),
            partitions,
        };
        let outcome = self.store.create_topic(&conf).await?;
        let (created, conf) = match outcome {
            CreateOutcome::Created => (true, conf),
            CreateOutcome::Exists(existing) => (false, existing),
        };
        let topic = self.recover_topic(&conf).await?;
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
    pub async fn delete_topic(self: &Arc<Self>, key: &TopicKey) -> Result<(), Error> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_accepting()?;
        let _guard = self.create_lock.lock().await;
        let topic = self.topic(key)?;
        for part in &topic.partitions {
            crate::flusher::fence(&self.core, part, &format!("topic {key} was deleted"), true);
        }
        self.topics.write_or_abort().remove(key);
        self.store.delete_topic(key).await?;
        tracing::info!(topic = %key, "deleted topic");
        Ok(())
    }

    /// Every topic, ordered.
    pub fn list_topics(&self) -> Result<Vec<TopicSummary>, Error> {
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

    /// A topic's offsets, or [`Error::UnknownTopic`].
    pub fn get_topic(&self, key: &TopicKey) -> Result<TopicInfo, Error> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_loaded()?;
        let t = self.topic(key)?;
        Ok(self.topic_info(&t))
    }

    /// Records the address the Kafka listener advertises (the member lease names it).
    pub fn set_kafka_address(&self, addr: String) {
        let _ = self.kafka_address.set(addr);
    }

    /// Starts recovery in the background: with `shared` (the live members and the rebalance
    /// period), this broker serves the partitions it should own among the members
    /// (`--ownership shared`); without, every partition once it holds the lease.
    pub fn spawn_loader(
        self: &Arc<Self>,
        shared: Option<(Arc<dyn crate::members::Members>, std::time::Duration)>,
    ) {
        if let Some((members, period)) = shared {
            *self.view.write_or_abort() = Some(Vec::new());
            let me = self.clone();
            tokio::spawn(async move {
                while !me.leadership.is_writer() {
                    tokio::select! {
                        () = me.shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    }
                }
                me.run_shared(members, period)
                    .instrument(tracing::info_span!("broker.ownership"))
                    .await;
            });
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            // A standby waits for the lease; then every partition is taken over (its epoch
            // raised, fencing the previous broker) and recovered.
            let mut announced = false;
            while !me.leadership.is_writer() {
                if !announced {
                    tracing::info!(active = ?me.standby_of(), "standby: waiting for the broker lease");
                    announced = true;
                }
                tokio::select! {
                    () = me.shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
            if announced {
                tracing::info!("holding the broker lease: taking every partition over");
            }
            me.load_all()
                .instrument(tracing::info_span!("broker.recover"))
                .await;
        });
    }
}
