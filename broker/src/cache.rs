//! A small LRU of decoded segments read back from volume servers, bounded in bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::ids::FileId;
use common::sync::LockExt;

use crate::segment::DecodedBatch;

/// A segment decoded and verified.
#[derive(Debug)]
pub struct DecodedSegment {
    /// First offset.
    pub first: u64,
    /// One past the last offset.
    pub end: u64,
    /// Its batches, in offset order.
    pub batches: Vec<DecodedBatch>,
    /// Encoded size.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<FileId, (Arc<DecodedSegment>, u64)>,
    bytes: u64,
    tick: u64,
}

/// The LRU.
#[derive(Debug)]
pub struct SegmentCache {
    inner: Mutex<Inner>,
    capacity: u64,
}

impl SegmentCache {
    /// A cache holding at most about `capacity` bytes (a segment larger than that is not kept).
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// The cached segment `fid`, marking it recently used.
    pub fn get(&self, fid: &FileId) -> Option<Arc<DecodedSegment>> {
        let mut inner = self.inner.lock_or_abort();
        inner.tick += 1;
        let tick = inner.tick;
        inner.map.get_mut(fid).map(|(seg, used)| {
            *used = tick;
            seg.clone()
        })
    }

    /// Adds a segment, evicting the least recently used ones beyond capacity.
    pub fn insert(&self, fid: FileId, seg: Arc<DecodedSegment>) {
        if seg.bytes > self.capacity {
            return;
        }
        let mut inner = self.inner.lock_or_abort();
        inner.tick += 1;
        let tick = inner.tick;
        let added = seg.bytes;
        if let Some((old, _)) = inner.map.insert(fid, (seg, tick)) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += added;
        while inner.bytes > self.capacity {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((old, _)) = inner.map.remove(&oldest) {
                inner.bytes -= old.bytes;
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.inner.lock_or_abort().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(bytes: u64) -> Arc<DecodedSegment> {
        Arc::new(DecodedSegment {
            first: 0,
            end: 1,
            batches: Vec::new(),
            bytes,
        })
    }

    #[test]
    fn test_cache_evicts_least_recently_used() {
        let c = SegmentCache::new(100);
        let (a, b, d) = (
            FileId::new(1, 1, 1),
            FileId::new(1, 2, 1),
            FileId::new(1, 3, 1),
        );
        c.insert(a, seg(40));
        c.insert(b, seg(40));
        assert!(c.get(&a).is_some());
        c.insert(d, seg(40));
        assert!(c.get(&a).is_some());
        assert!(c.get(&b).is_none(), "b was least recently used");
        assert!(c.get(&d).is_some());
        assert_eq!(c.bytes(), 80);
        c.insert(FileId::new(1, 4, 1), seg(1000));
        assert_eq!(c.bytes(), 80, "oversized segments are not cached");
    }
}
