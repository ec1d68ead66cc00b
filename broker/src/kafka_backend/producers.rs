//! Idempotent producers: their per-partition state rebuilt from the last segments after a
//! start, and producer ids reserved in blocks from a durable sequence in the filer.
//!
//! Invariant: a producer id is never handed out twice, across crashes too (an unused rest of
//! a reserved block is skipped), and a partition's producer state is rebuilt at most once.

use kafka::BackendError;
use kafka::batch::BatchInfo;

use super::{KafkaBackend, backend_error};
use crate::partition::Partition;

/// Producer ids reserved from the filer at a time.
const PRODUCER_ID_BLOCK: u64 = 1000;
/// Name of the producer id sequence in the store.
const PRODUCER_ID_SEQUENCE: &str = "kafka-producer-ids";
/// Segments read back to rebuild idempotent producer state after a start.
const PRODUCER_STATE_SEGMENTS: usize = 8;

impl KafkaBackend {
    /// Rebuilds the partition's producer states from the Kafka batches of its last
    /// [`PRODUCER_STATE_SEGMENTS`] segments (once after start-up; batches appended since are
    /// recorded as they come). A producer keeps at most five batches in flight and each flush
    /// holds at least one, so a retry of any batch whose acknowledgement a crash lost is found.
    pub(super) async fn load_producers(&self, part: &Partition) -> Result<(), BackendError> {
        if part.lock().producers_loaded {
            return Ok(());
        }
        let unavailable = |e: crate::store::StoreError| BackendError::Unavailable(e.to_string());
        let store = &self.broker.store;
        let mut segments = Vec::new();
        let mut next = store
            .last_segment(&part.topic, part.index)
            .await
            .map_err(unavailable)?;
        while let Some(seg) = next.take() {
            let below = seg.offset_min.checked_sub(1);
            segments.push(seg);
            if segments.len() >= PRODUCER_STATE_SEGMENTS {
                break;
            }
            if let Some(below) = below {
                next = store
                    .find_segment(&part.topic, part.index, below)
                    .await
                    .map_err(unavailable)?;
            }
        }
        let mut found = Vec::new();
        for seg in segments.iter().rev() {
            let decoded = self
                .broker
                .segment_for(part, seg.offset_min)
                .await
                .map_err(backend_error)?;
            for b in decoded.batches.iter().filter(|b| b.is_kafka()) {
                if let Ok(info) = BatchInfo::parse(&b.body)
                    && info.is_idempotent()
                {
                    found.push((info, b.header.first_offset as i64));
                }
            }
        }
        let mut st = part.lock();
        if !st.producers_loaded {
            for (info, base) in &found {
                st.producers.record(info, *base);
            }
            st.producers_loaded = true;
            tracing::info!(
                topic = %part.label,
                partition = part.index,
                segments = segments.len(),
                producers = st.producers.len(),
                "rebuilt idempotent producer state from the last segments"
            );
        }
        Ok(())
    }

    /// [`kafka::Backend::allocate_producer_id`].
    pub(super) async fn next_producer_id(&self) -> Result<i64, BackendError> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let first = self
                .broker
                .store
                .reserve_ids(PRODUCER_ID_SEQUENCE, PRODUCER_ID_BLOCK)
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?;
            *ids = (first, first + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        i64::try_from(id).map_err(|_| BackendError::Internal("producer ids exhausted".into()))
    }
}
