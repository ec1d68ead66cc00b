//! Consumer group offsets, the admin flush, readiness and the shutdown report: the
//! operations over every partition or a group's view of a topic.
//!
//! Invariant: a group's offsets are only stored for topics and partitions that exist.

use std::sync::Arc;

use common::api::broker::{FlushResponse, GroupOffsets, PartitionOffset};

use crate::partition::Topic;
use crate::service::{Broker, Error, check_name};
use crate::store::TopicKey;

impl Broker {
    /// Parses `namespace/topic` and finds the topic.
    fn group_topic(&self, group: &str, topic: &str) -> Result<Arc<Topic>, Error> {
        check_name("group", group)?;
        let Some((ns, name)) = topic.split_once('/') else {
            return Err(Error::BadTopic {
                topic: topic.to_owned(),
            });
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
    ) -> Result<GroupOffsets, Error> {
        let t = self.group_topic(group, topic)?;
        if partition >= t.partition_count() {
            return Err(Error::UnknownPartition {
                key: t.key.clone(),
                partition,
                count: t.partition_count(),
            });
        }
        let offset = self
            .store
            .put_group_offset(group, &t.key, partition, offset, reset)
            .await?;
        Ok(GroupOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets: vec![PartitionOffset { partition, offset }],
        })
    }

    /// A consumer group's committed offsets.
    pub async fn group_offsets(&self, group: &str, topic: &str) -> Result<GroupOffsets, Error> {
        let t = self.group_topic(group, topic)?;
        let offsets = self
            .store
            .group_offsets(group, &t.key)
            .await?
            .into_iter()
            .map(|(partition, offset)| PartitionOffset { partition, offset })
            .collect();
        Ok(GroupOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets,
        })
    }

    /// Makes everything buffered now durable. Answers [`Error::FlushFailed`] naming a
    /// partition that is not durable within `--durable-timeout-ms`, or earlier when its flush
    /// keeps failing (five failed attempts since the call, and a tenth of that timeout gone).
    pub async fn flush_all(&self) -> Result<FlushResponse, Error> {
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
                return Err(Error::FlushFailed {
                    topic: part.label.clone(),
                    partition: part.index,
                    target: *target,
                    error,
                });
            }
        }
        Ok(FlushResponse {
            flushed_partitions: waits.len() as u64,
        })
    }

    /// Ready when recovered, not shutting down and no flush is failing; otherwise the error
    /// naming why ([`Error::NotReady`], [`Error::ShuttingDown`], [`Error::FlushFailing`]).
    pub fn readiness(&self) -> Result<(), Error> {
        self.check_loaded()?;
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
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
            Err(Error::FlushFailing(failing))
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
}
