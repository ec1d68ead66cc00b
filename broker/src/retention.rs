//! Retention: a partition's oldest segments are deleted, whole, once their newest record is
//! older than `--retention-hours` or while the partition's segments hold more than
//! `--retention-bytes`.
//!
//! Invariants: segments go oldest first and only from the front, so what remains is always a
//! contiguous range of offsets, and the newest segment is never deleted (its entry is what
//! recovery derives the next offset from). The partition's log start is raised past a
//! segment before its entry is deleted, so from then on a fetch below it is answered 416 (the
//! record is gone) rather than failing on a missing chunk; if the deletion then fails, the
//! entry is retried at the next check and a restart simply finds it again. The filer's chunk
//! collector deletes the segment's needle and vacuum gives the space back.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::partition::Partition;
use crate::store::{SegmentRef, StoreError};

/// Segments listed per filer request.
const PAGE: u32 = 1000;

/// Deletes the segments of `part` that retention no longer keeps; returns how many went.
pub async fn enforce(core: &Core, part: &Partition) -> Result<usize, StoreError> {
    let age = core.cfg.retention_age();
    let max_bytes = core.cfg.retention_bytes;
    if (age.is_none() && max_bytes == 0) || part.lock().fenced.is_some() {
        return Ok(0);
    }
    let segs = all_segments(core, part).await?;
    let cutoff = age.map(|a| {
        common::time::now_ms().saturating_sub(u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
    });
    let mut total: u64 = segs.iter().map(|s| s.size).sum();
    let mut deleted = 0;
    // Never the newest segment.
    for seg in segs.iter().take(segs.len().saturating_sub(1)) {
        let expired = cutoff.is_some_and(|c| seg.ts_max < c);
        let over = max_bytes > 0 && total > max_bytes;
        if !expired && !over {
            break;
        }
        {
            let mut st = part.lock();
            if st.fenced.is_some() {
                break;
            }
            st.log.advance_start(seg.end());
        }
        core.store
            .delete_segment(&part.topic, part.index, seg)
            .await?;
        total -= seg.size;
        deleted += 1;
        core.metrics.segments_expired.inc();
        tracing::info!(
            topic = %part.label,
            partition = part.index,
            offset_min = seg.offset_min,
            offset_max = seg.offset_max,
            bytes = seg.size,
            reason = if expired { "age" } else { "size" },
            "segment deleted by retention"
        );
    }
    Ok(deleted)
}

/// Every segment of `part`, oldest first.
async fn all_segments(core: &Core, part: &Partition) -> Result<Vec<SegmentRef>, StoreError> {
    let mut segs: Vec<SegmentRef> = Vec::new();
    let mut from = 0;
    loop {
        let page = core
            .store
            .list_segments(&part.topic, part.index, from, PAGE)
            .await?;
        let last_page = page.len() < PAGE as usize;
        if let Some(last) = page.last() {
            from = last.end();
        }
        segs.extend(page);
        if last_page {
            return Ok(segs);
        }
    }
}

/// Enforces retention on every partition `partitions()` names, every `--retention-check-ms`,
/// until shutdown or until `partitions()` answers `None` (the broker is gone). Does nothing
/// when no retention is configured.
pub fn spawn<F>(core: &Arc<Core>, partitions: F)
where
    F: Fn() -> Option<Vec<Arc<Partition>>> + Send + 'static,
{
    if core.cfg.retention_age().is_none() && core.cfg.retention_bytes == 0 {
        return;
    }
    let every = Duration::from_millis(core.cfg.retention_check_ms);
    let core = core.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = core.shutdown.cancelled() => return,
            }
            let Some(parts) = partitions() else {
                return;
            };
            for part in parts {
                if let Err(e) = enforce(&core, &part).await {
                    tracing::warn!(
                        topic = %part.label,
                        partition = part.index,
                        "failed to enforce retention, retrying at the next check: {e}"
                    );
                }
            }
        }
    });
}
