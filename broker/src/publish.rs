//! Publish: validate, pick partitions, append under each partition's lock (once per partition
//! per request), and for `acks=durable` wait until a flush has made the records durable.
//!
//! Records arrive as JSON ([`PublishRequest`]) or as the binary batch
//! ([`common::api::broker::decode_batch`]); both
//! become [`InRecord`]s that borrow from the request body, so the hot path copies each value
//! exactly once, into its partition's batch buffer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use common::api::broker::{
    Acks, BatchRecord, PublishRecord, PublishRequest, PublishResponse, RecordOffset,
    partition_for_key,
};
use common::sync::LockExt;
use opentelemetry::trace::SpanContext;

use crate::partition::{MAX_LINKS, Partition, Topic};
use crate::segment;
use crate::service::{Broker, Error, check_name};
use crate::store::TopicKey;

/// One record to publish, borrowing from the request body where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord<'a> {
    /// Explicit partition.
    pub partition: Option<u32>,
    /// Key bytes.
    pub key: Option<Cow<'a, [u8]>>,
    /// Value bytes.
    pub value: Cow<'a, [u8]>,
    /// Headers.
    pub headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> From<BatchRecord<'a>> for InRecord<'a> {
    fn from(r: BatchRecord<'a>) -> Self {
        Self {
            partition: r.partition,
            key: r.key.map(Cow::Borrowed),
            value: Cow::Borrowed(r.value),
            headers: r
                .headers
                .into_iter()
                .map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
                .collect(),
        }
    }
}

fn text_or_b64<'a>(
    index: usize,
    field: &str,
    text: Option<Cow<'a, str>>,
    b64: Option<Cow<'a, str>>,
) -> Result<Option<Cow<'a, [u8]>>, Error> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(Error::BadRecord(format!(
            "record {index} has both {field} and {field}_b64"
        ))),
        (Some(Cow::Borrowed(s)), None) => Ok(Some(Cow::Borrowed(s.as_bytes()))),
        (Some(Cow::Owned(s)), None) => Ok(Some(Cow::Owned(s.into_bytes()))),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(|v| Some(Cow::Owned(v)))
            .map_err(|e| {
                Error::BadRecord(format!(
                    "record {index} has a {field}_b64 that is not base64: {e}"
                ))
            }),
        (None, None) => Ok(None),
    }
}

/// Converts JSON records, decoding `*_b64` fields.
pub fn from_json(req: PublishRequest<'_>) -> Result<Vec<InRecord<'_>>, Error> {
    req.records
        .into_iter()
        .enumerate()
        .map(|(i, r): (usize, PublishRecord<'_>)| {
            let key = text_or_b64(i, "key", r.key, r.key_b64)?;
            let value = text_or_b64(i, "value", r.value, r.value_b64)?.ok_or_else(|| {
                Error::BadRecord(format!("record {i} has neither value nor value_b64"))
            })?;
            let headers = r
                .headers
                .unwrap_or_default()
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n), Cow::Owned(v)))
                .collect();
            Ok(InRecord {
                partition: r.partition,
                key,
                value,
                headers,
            })
        })
        .collect()
}

/// [`Error::UnknownPartition`]: a record names a partition `topic` lacks.
fn unknown_partition(topic: &Topic, partition: u32) -> Error {
    Error::UnknownPartition {
        key: topic.key.clone(),
        partition,
        count: topic.partition_count(),
    }
}

/// Returns reserved buffer bytes that were not used (on an early return).
struct Reservation<'a> {
    broker: &'a Broker,
    left: u64,
}

impl Reservation<'_> {
    fn consume(&mut self, n: u64) {
        self.left = self.left.saturating_sub(n);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.broker.budget.release(self.left);
            self.broker
                .metrics
                .buffered_bytes
                .set(self.broker.budget.used() as i64);
        }
    }
}

/// Records appended by [`Broker::append_records`], waiting for [`Broker::finish_publish`].
#[derive(Debug)]
pub struct Appended {
    topic: Arc<Topic>,
    offsets: Vec<RecordOffset>,
    targets: Vec<(u32, u64)>,
    durable: bool,
}

/// What a publish answered, and the trace ids of the flushes that persisted it.
#[derive(Debug)]
pub struct Published {
    /// The offsets, one per record.
    pub response: PublishResponse,
    /// Trace ids of the flushes (durable publishes with tracing only).
    pub flush_trace_ids: Vec<Arc<str>>,
}

impl Broker {
    /// Publishes records to a topic. `link` is the publish request's span context, linked
    /// from the flush that persists the records.
    pub async fn publish(
        &self,
        key: &TopicKey,
        records: Vec<InRecord<'_>>,
        acks: Acks,
        link: Option<SpanContext>,
    ) -> Result<Published, Error> {
        self.publish_if(key, records, acks, link, None).await
    }

    /// [`Broker::publish`], but with `if_log_end` only when every record goes to one
    /// partition whose log end offset is exactly that: checked under the partition lock
    /// with the append, so nothing is appended on a mismatch (409 `log_end_mismatch`).
    pub async fn publish_if(
        &self,
        key: &TopicKey,
        records: Vec<InRecord<'_>>,
        acks: Acks,
        link: Option<SpanContext>,
        if_log_end: Option<u64>,
    ) -> Result<Published, Error> {
        let appended = self.append_records(key, &records, acks, link, if_log_end)?;
        drop(records);
        self.finish_publish(appended).await
    }

    /// The first half of a publish: validates and appends `records` (copied into the
    /// partitions' logs, where the buffer budget counts them) and returns their offsets. The
    /// caller should drop the request's own bytes before [`Broker::finish_publish`] waits, so
    /// a durable publish holds only what the budget counts while it waits.
    pub fn append_records(
        &self,
        key: &TopicKey,
        records: &[InRecord<'_>],
        acks: Acks,
        link: Option<SpanContext>,
        if_log_end: Option<u64>,
    ) -> Result<Appended, Error> {
        check_name("namespace", &key.ns)?;
        check_name("topic", &key.name)?;
        self.check_accepting()?;
        let topic = self.topic(key)?;
        if records.is_empty() {
            return Err(Error::EmptyBatch { key: key.clone() });
        }
        let n = topic.partition_count();
        let max_record = self.cfg.max_record_bytes;
        let unrouted = records
            .iter()
            .filter(|r| r.partition.is_none() && r.key.is_none())
            .count() as u64;
        let mut rr = if unrouted > 0 {
            topic
                .rr
                .fetch_add(unrouted, std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        };
        let mut parts = Vec::with_capacity(records.len());
        let mut total = 0u64;
        for (i, r) in records.iter().enumerate() {
            if r.headers.len() > usize::from(u16::MAX)
                || r.headers
                    .iter()
                    .any(|(name, _)| name.len() > usize::from(u16::MAX))
            {
                return Err(Error::BadRecord(format!(
                    "record {i} has more than 65535 headers or a header name over 65535 bytes"
                )));
            }
            let size = segment::record_len(r.key.as_deref(), &r.value, &r.headers) as u64;
            if size > max_record {
                return Err(Error::TooLarge(format!(
                    "record {i} is {size} bytes encoded, over the {max_record}-byte record limit"
                )));
            }
            total += size;
            let p = match (r.partition, &r.key) {
                (Some(p), _) if p >= n => return Err(unknown_partition(&topic, p)),
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, n),
                (None, None) => {
                    // Spread over the partitions this broker owns (all of them unless
                    // `--ownership shared`); owning none, the owner of one is named below.
                    let owned = &topic.owned;
                    let p = if owned.is_empty() {
                        (rr % u64::from(n)) as u32
                    } else {
                        owned[(rr % owned.len() as u64) as usize]
                    };
                    rr = rr.wrapping_add(1);
                    p
                }
            };
            parts.push(p);
        }
        self.check_targets(&topic, &parts)?;
        if if_log_end.is_some() && parts.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error::BadCondition { key: key.clone() });
        }
        let batch_limit = self.cfg.batch_limit();
        if total > batch_limit {
            return Err(Error::TooLarge(format!(
                "publish to {key} is {total} bytes encoded, over the {batch_limit}-byte batch limit"
            )));
        }
        if !self.budget.try_reserve(total) {
            self.metrics.buffer_full.inc();
            return Err(Error::BufferFull {
                used: self.budget.used(),
                limit: self.budget.limit(),
            });
        }
        self.metrics.buffered_bytes.set(self.budget.used() as i64);
        let mut reservation = Reservation {
            broker: self,
            left: total,
        };

        // Append each partition's records under one short hold of its lock.
        let durable = acks == Acks::Durable;
        let ts = common::time::now_ms();
        let now = Instant::now();
        let mut offsets = vec![
            RecordOffset {
                partition: 0,
                offset: 0
            };
            records.len()
        ];
        let mut order: Vec<u32> = (0..records.len() as u32).collect();
        if parts.windows(2).any(|w| w[0] != w[1]) {
            order.sort_by_key(|i| parts[*i as usize]);
        }
        let mut targets: Vec<(u32, u64)> = Vec::new();
        for group in order.chunk_by(|a, b| parts[*a as usize] == parts[*b as usize]) {
            let p = parts[group[0] as usize];
            let Some(part) = topic.partition(p) else {
                return Err(unknown_partition(&topic, p));
            };
            let (end, lag, wake) = {
                let mut st = part.lock();
                if let Some(f) = &st.fenced {
                    return Err(Error::Fenced(f.clone()));
                }
                if st.draining {
                    return Err(self.not_owner(&topic.key, p));
                }
                if st.closed {
                    return Err(Error::ShuttingDown);
                }
                if let Some(expected) = if_log_end
                    && st.log.next() != expected
                {
                    return Err(Error::LogEndMismatch {
                        key: key.clone(),
                        partition: p,
                        end: st.log.next(),
                        expected,
                    });
                }
                let was_idle = st.log.oldest_pending().is_none();
                let before = st.log.pending_bytes();
                for &i in group {
                    let r = &records[i as usize];
                    let offset = st
                        .log
                        .append(ts, r.key.as_deref(), &r.value, &r.headers, now);
                    offsets[i as usize] = RecordOffset {
                        partition: p,
                        offset,
                    };
                }
                reservation.consume(st.log.pending_bytes() - before);
                let end = st.log.next();
                if durable {
                    st.wanted = st.wanted.max(end);
                }
                if let Some(l) = &link
                    && st.links.len() < MAX_LINKS
                {
                    st.links.push(l.clone());
                }
                let wake = durable || was_idle || st.log.pending_bytes() >= self.cfg.flush_bytes;
                (end, end - st.log.durable(), wake)
            };
            part.lag.set(lag as i64);
            part.end_tx.send_replace(end);
            if wake {
                part.wake.notify_one();
            }
            targets.push((p, end));
        }
        self.metrics
            .published(acks.as_str())
            .inc_by(records.len() as u64);
        Ok(Appended {
            topic,
            offsets,
            targets,
            durable,
        })
    }

    /// The second half of a publish: for `acks=durable`, waits until every partition it
    /// appended to is durable past its records.
    pub async fn finish_publish(&self, appended: Appended) -> Result<Published, Error> {
        let Appended {
            topic,
            offsets,
            targets,
            durable,
        } = appended;
        let mut flush_trace_ids: Vec<Arc<str>> = Vec::new();
        if durable {
            let deadline = tokio::time::Instant::now() + self.cfg.durable_timeout();
            for (p, target) in targets {
                let Some(part) = topic.partition(p) else {
                    continue;
                };
                if let Some(id) = self.wait_durable(part, target, deadline).await?
                    && !flush_trace_ids.contains(&id)
                {
                    flush_trace_ids.push(id);
                }
            }
        }
        Ok(Published {
            response: PublishResponse { offsets },
            flush_trace_ids,
        })
    }

    /// Waits until `part` is durable up to `target` (exclusive) or `deadline` passes, and
    /// returns the trace id of the flush that made offset `target - 1` durable. A timeout (or
    /// the shutdown flush giving up) is [`Error::NotDurableYet`] naming the partition's flush
    /// error: the records stay buffered and will still be flushed, so a retry may duplicate
    /// them.
    pub async fn wait_durable(
        &self,
        part: &Partition,
        target: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Arc<str>>, Error> {
        // Registered under the waiters' lock after reading the progress: the committer
        // advances the progress before it takes that lock to wake waiters, so a waiter either
        // sees the new durable offset here or is woken by it.
        let registered = {
            let mut waiters = part.durable_waiters.lock_or_abort();
            let p = part.durable_tx.borrow();
            (p.durable < target && !p.fenced).then(|| waiters.register(target))
        };
        if let Some((id, rx)) = registered {
            let woken = tokio::select! {
                r = tokio::time::timeout_at(deadline, rx) => r.is_ok(),
                () = self.abort.cancelled() => false,
            };
            if !woken {
                part.durable_waiters.lock_or_abort().cancel(target, id);
            }
        }
        let waited = part.durable_tx.borrow().durable >= target;
        if !waited {
            if let Some(f) = part.lock().fenced.clone() {
                return Err(Error::Fenced(f));
            }
            let error = part
                .lock()
                .error()
                .unwrap_or_else(|| "flush still running".to_owned());
            return Err(Error::NotDurableYet {
                topic: part.label.clone(),
                partition: part.index,
                offset: target.saturating_sub(1),
                timeout_ms: self.cfg.durable_timeout_ms,
                error,
            });
        }
        Ok(part.lock().flush_trace_for(target.saturating_sub(1)))
    }
}
