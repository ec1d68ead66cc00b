//! Kafka offsets: a partition's log start, high watermark and log end, and consumer group
//! commits stored as the broker's group offsets (group ids mapped to valid Kelp names).
//!
//! Invariant: a group id maps to one Kelp name and no two ids map to the same one.

use kafka::BackendError;
use kafka::backend::{CommittedOffset, PartitionOffsets};

use super::{KafkaBackend, backend_error};
use crate::names::valid_name;

/// A group id as a Kelp name: itself when valid, else `x.` and its bytes in hex.
fn group_name(group: &str) -> Result<String, BackendError> {
    if valid_name(group) && !group.starts_with("x.") {
        return Ok(group.to_owned());
    }
    let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
    let name = format!("x.{hex}");
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(BackendError::Unsupported(format!(
            "group id {group:?} is too long (at most 63 bytes when it holds characters other than A-Z a-z 0-9 . _ -)"
        )))
    }
}

impl KafkaBackend {
    /// [`kafka::Backend::offsets`].
    pub(super) fn partition_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionOffsets, BackendError> {
        let (_, part) = self.partition(topic, partition)?;
        let (log_start, durable, end) = part.offsets();
        Ok(PartitionOffsets {
            log_start: log_start as i64,
            high_watermark: durable as i64,
            log_end: end as i64,
        })
    }

    /// [`kafka::Backend::commit_offset`]: Kafka's commits are the group's own word on where it
    /// is (a consumer that seeks back commits lower offsets on purpose), so they may go down;
    /// the version precondition still orders concurrent writes.
    pub(super) async fn commit_group_offset(
        &self,
        group: &str,
        topic: &str,
        offset: CommittedOffset,
    ) -> Result<(), BackendError> {
        let group = group_name(group)?;
        let key = self.key(topic)?;
        let value = u64::try_from(offset.offset).map_err(|_| {
            BackendError::OffsetOutOfRange(format!("cannot commit offset {}", offset.offset))
        })?;
        self.broker
            .commit_offset(&group, &key.to_string(), offset.partition, value, true)
            .await
            .map(drop)
            .map_err(backend_error)
    }

    /// [`kafka::Backend::committed_offsets`].
    pub(super) async fn group_committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError> {
        let group = group_name(group)?;
        let key = self.key(topic)?;
        let offsets = self
            .broker
            .group_offsets(&group, &key.to_string())
            .await
            .map_err(backend_error)?;
        Ok(offsets
            .offsets
            .into_iter()
            .map(|o| CommittedOffset {
                partition: o.partition,
                offset: o.offset as i64,
                metadata: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_group_name_maps_kafka_ids_to_valid_names() {
        assert_eq!(group_name("my-group.1").unwrap(), "my-group.1");
        assert_eq!(group_name("a b").unwrap(), "x.612062");
        assert_eq!(
            group_name("x.y").unwrap(),
            "x.782e79",
            "the escape prefix is escaped"
        );
        assert!(valid_name(&group_name("grp:with/colons").unwrap()));
        assert!(group_name(&"é".repeat(40)).is_err());
    }
}
