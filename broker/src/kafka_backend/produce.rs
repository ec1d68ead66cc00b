//! Kafka produce: a producer batch is checked (no transactions, consistent counts, within
//! the batch limit), then appended unchanged under the partition lock, where an idempotent
//! producer's sequence is checked too; `acks=all` then waits for the batch to be durable.
//!
//! Invariant: the buffer budget reserved for a batch is released on every refusal, and a
//! duplicate is answered with its original offsets without appending anything.

use std::time::Instant;

use kafka::backend::{ProduceOutcome, ProducedBatch};
use kafka::idempotence::SequenceCheck;
use kafka::{BackendError, Durability};

use super::{KafkaBackend, backend_error};
use crate::partition::{MAX_LINKS, Partition};

impl KafkaBackend {
    /// [`kafka::Backend::produce`].
    pub(super) async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: ProducedBatch,
        durability: Durability,
    ) -> Result<ProduceOutcome, BackendError> {
        self.broker.check_accepting().map_err(backend_error)?;
        let (_, part) = self.partition(topic, partition)?;
        let info = batch.info;
        if info.is_transactional() || info.is_control() {
            return Err(BackendError::Unsupported(
                "transactional and control batches are not supported".into(),
            ));
        }
        if info.record_count != info.last_offset_delta + 1 {
            return Err(BackendError::Corrupt(format!(
                "batch holds {} records but spans {} offsets",
                info.record_count,
                info.offset_count()
            )));
        }
        if batch.bytes.len() as u64 > self.broker.cfg.batch_limit() {
            return Err(BackendError::TooLarge(format!(
                "batch of {} bytes is over the {}-byte limit",
                batch.bytes.len(),
                self.broker.cfg.batch_limit()
            )));
        }
        if info.is_idempotent() {
            self.load_producers(&part).await?;
        }
        // With `Durable` the append asks for a flush now; the answer waits in `wait_durable`.
        let durable = durability == Durability::Durable;
        let (outcome, _) = self.append(&part, &batch, durable)?;
        Ok(outcome)
    }

    /// [`kafka::Backend::wait_durable`].
    pub(super) async fn wait_batch_durable(
        &self,
        topic: &str,
        partition: u32,
        end: i64,
    ) -> Result<(), BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let end = u64::try_from(end).unwrap_or(0);
        // A duplicate's original may still be buffered: make sure a flush is due for it.
        let due = {
            let mut st = part.lock();
            let due = st.wanted < end && st.log.durable() < end;
            st.wanted = st.wanted.max(end.min(st.log.next()));
            due
        };
        if due {
            part.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + self.broker.cfg.durable_timeout();
        self.broker
            .wait_durable(&part, end, deadline)
            .await
            .map(drop)
            .map_err(backend_error)
    }

    /// Appends a checked batch under the partition lock; returns the outcome and the offset
    /// durability must reach.
    fn append(
        &self,
        part: &Partition,
        batch: &ProducedBatch,
        durable: bool,
    ) -> Result<(ProduceOutcome, u64), BackendError> {
        let info = &batch.info;
        let size = batch.bytes.len() as u64;
        let broker = &self.broker;
        if !broker.budget.try_reserve(size) {
            broker.metrics.buffer_full.inc();
            return Err(BackendError::Unavailable(format!(
                "broker buffer is full ({} of {} bytes not yet durable)",
                broker.budget.used(),
                broker.budget.limit()
            )));
        }
        let now = common::time::now_ms();
        let ts = |t: i64| u64::try_from(t).unwrap_or(now);
        let log_append_time = info.attributes & 0x08 != 0;
        let (ts_min, ts_max) = if log_append_time {
            (now, now)
        } else {
            let (a, b) = (ts(info.base_timestamp), ts(info.max_timestamp));
            (a.min(b), a.max(b))
        };
        let link = common::telemetry::span_context(&tracing::Span::current());
        let (outcome, target, end, lag, wake) = {
            let mut st = part.lock();
            let log_start = st.log.log_start() as i64;
            if let Some(f) = st.fenced.clone() {
                drop(st);
                broker.budget.release(size);
                return Err(BackendError::Unavailable(f));
            }
            if st.draining {
                drop(st);
                broker.budget.release(size);
                return Err(BackendError::NotLeader(format!(
                    "partition {} of {} is moving to another broker",
                    part.index, part.label
                )));
            }
            if st.closed {
                drop(st);
                broker.budget.release(size);
                return Err(BackendError::Unavailable("broker is shutting down".into()));
            }
            if info.is_idempotent() {
                let refuse = |e: BackendError| {
                    broker.budget.release(size);
                    Err(e)
                };
                match st.producers.check(info) {
                    SequenceCheck::New => {}
                    SequenceCheck::Duplicate { base_offset } => {
                        drop(st);
                        broker.budget.release(size);
                        let target = base_offset as u64 + u64::from(info.offset_count());
                        return Ok((
                            ProduceOutcome::Duplicate {
                                base_offset,
                                log_start,
                            },
                            target,
                        ));
                    }
                    SequenceCheck::OutOfOrder => {
                        return refuse(BackendError::OutOfOrderSequence(format!(
                            "producer {} sent sequence {} to {} partition {}",
                            info.producer_id, info.base_sequence, part.label, part.index
                        )));
                    }
                    SequenceCheck::StaleEpoch => {
                        return refuse(BackendError::InvalidProducerEpoch(format!(
                            "producer {} epoch {} is older than the one seen on {} partition {}",
                            info.producer_id, info.producer_epoch, part.label, part.index
                        )));
                    }
                }
            }
            let was_idle = st.log.oldest_pending().is_none();
            let base = st.log.append_kafka(
                &batch.bytes,
                info.offset_count(),
                (ts_min, ts_max),
                Instant::now(),
            );
            if info.is_idempotent() {
                st.producers.record(info, base as i64);
            }
            let end = st.log.next();
            if durable {
                st.wanted = st.wanted.max(end);
            }
            if let Some(l) = link
                && st.links.len() < MAX_LINKS
            {
                st.links.push(l);
            }
            let wake = durable || was_idle || st.log.pending_bytes() >= broker.cfg.flush_bytes;
            (
                ProduceOutcome::Appended {
                    base_offset: base as i64,
                    log_start,
                },
                end,
                end,
                end - st.log.durable(),
                wake,
            )
        };
        broker
            .metrics
            .buffered_bytes
            .set(broker.budget.used() as i64);
        part.lag.set(lag as i64);
        part.end_tx.send_replace(end);
        if wake {
            part.wake.notify_one();
        }
        let acks = if durable {
            "kafka_durable"
        } else {
            "kafka_buffered"
        };
        broker
            .metrics
            .published(acks)
            .inc_by(u64::from(info.offset_count()));
        Ok((outcome, target))
    }
}
