//! Kafka fetch and timestamp look-ups: durable records only, Kafka batches as stored and
//! records published over HTTP encoded into an uncompressed v2 batch per run of records.
//!
//! Invariant: a fetch never returns a record past the partition's durable offset.

use bytes::{Bytes, BytesMut};
use kafka::BackendError;
use kafka::backend::{Fetched, PartitionOffsets};
use kafka::batch::{BatchInfo, OwnedRecord};

use super::{KafkaBackend, backend_error};
use crate::log::Region;
use crate::segment;

/// Most records one Kafka fetch of a partition collects.
const FETCH_RECORD_LIMIT: usize = 100_000;

/// Converts a run of records published over HTTP into one uncompressed Kafka batch.
fn kelp_region_to_batch(region: &Region) -> Result<Bytes, String> {
    let mut records = Vec::with_capacity(region.count);
    let mut pos = 0;
    for i in 0..region.count {
        let offset = region.first_offset + i as u64;
        let (view, next) = segment::decode_record(&region.data, pos)
            .ok_or_else(|| format!("malformed record at offset {offset}"))?;
        records.push(OwnedRecord {
            offset: offset as i64,
            timestamp: view.timestamp_ms as i64,
            key: view.key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(view.value)),
            headers: view
                .headers()
                .map(|(n, v)| (n.to_owned(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                .collect(),
        });
        pos = next;
    }
    kafka::batch::encode_batch(&records).map_err(|e| e.to_string())
}

impl KafkaBackend {
    /// [`kafka::Backend::fetch`].
    pub(super) async fn fetch_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, end) = part.offsets();
        let offsets = PartitionOffsets {
            log_start: log_start as i64,
            high_watermark: durable as i64,
            log_end: end as i64,
        };
        let from = u64::try_from(offset)
            .ok()
            .filter(|o| (log_start..=durable).contains(o));
        let Some(from) = from else {
            return Err(BackendError::OffsetOutOfRange(format!(
                "offset {offset} of {topic} partition {partition} is outside [{log_start}, {durable}]"
            )));
        };
        if from == durable {
            return Ok(Fetched {
                batches: Bytes::new(),
                offsets,
            });
        }
        let regions = self
            .broker
            .read_range(&part, from, durable, FETCH_RECORD_LIMIT, max_bytes.max(1))
            .await
            .map_err(backend_error)?;
        let mut out = BytesMut::new();
        for r in &regions {
            if r.kafka {
                out.extend_from_slice(&r.data);
            } else {
                let batch = kelp_region_to_batch(r).map_err(|e| {
                    BackendError::Internal(format!("{} partition {}: {e}", part.label, part.index))
                })?;
                out.extend_from_slice(&batch);
            }
        }
        Ok(Fetched {
            batches: out.freeze(),
            offsets,
        })
    }

    /// [`kafka::Backend::wait_for_data`].
    pub(super) async fn wait_for_records(&self, topic: &str, partition: u32, offset: i64) {
        let Ok((_, part)) = self.partition(topic, partition) else {
            return;
        };
        let mut rx = part.durable_tx.subscribe();
        let past = |p: &crate::partition::Progress| p.durable as i64 > offset;
        tokio::select! {
            r = rx.wait_for(past) => drop(r),
            () = self.broker.shutdown.cancelled() => {}
        }
    }

    /// [`kafka::Backend::offset_for_timestamp`].
    pub(super) async fn find_offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, _) = part.offsets();
        // A scan of the durable log in 4 MiB steps; whole Kafka batches older than the
        // timestamp are skipped by their header.
        let mut pos = log_start;
        while pos < durable {
            let regions = self
                .broker
                .read_range(&part, pos, durable, FETCH_RECORD_LIMIT, 4 << 20)
                .await
                .map_err(backend_error)?;
            let Some(last) = regions.last() else {
                break;
            };
            let next = last.first_offset + last.count as u64;
            for r in &regions {
                if r.kafka {
                    let skip = BatchInfo::parse(&r.data)
                        .map(|i| i.max_timestamp < timestamp_ms)
                        .unwrap_or(false);
                    if skip {
                        continue;
                    }
                    let records = kafka::batch::decode_batches(&r.data)
                        .map_err(|e| BackendError::Internal(e.to_string()))?;
                    if let Some(rec) = records
                        .iter()
                        .find(|rec| rec.timestamp >= timestamp_ms && rec.offset >= pos as i64)
                    {
                        return Ok(Some((rec.offset, rec.timestamp)));
                    }
                } else {
                    let mut at = 0;
                    for i in 0..r.count {
                        let Some((view, n)) = segment::decode_record(&r.data, at) else {
                            break;
                        };
                        if view.timestamp_ms as i64 >= timestamp_ms {
                            return Ok(Some((
                                (r.first_offset + i as u64) as i64,
                                view.timestamp_ms as i64,
                            )));
                        }
                        at = n;
                    }
                }
            }
            if next <= pos {
                break;
            }
            pos = next;
        }
        Ok(None)
    }
}
