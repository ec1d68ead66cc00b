//! [`MemoryStore`]: a `BTreeMap` with the same keys and values as the RocksDB store, for
//! tests and throwaway runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use common::api::filer::Entry;

use super::codec;
use super::{Batch, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError};

/// The ordered map of keys to encoded values.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// A borrowed key-value pair of the map.
type Kv<'a> = (&'a Vec<u8>, &'a Vec<u8>);

/// An in-memory [`MetaStore`]; a batch is applied under one lock, so it is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<Map>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> Result<std::sync::MutexGuard<'_, Map>, StoreError> {
        self.map.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl MetaStore for MemoryStore {
    fn get(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        if path == crate::path::ROOT {
            return Ok(None);
        }
        let key = codec::entry_key(path);
        self.map()?
            .get(&key)
            .map(|v| codec::decode_entry(&key, v))
            .transpose()
    }

    fn list(&self, dir: &str, opts: &ListOpts) -> Result<Page, StoreError> {
        let prefix = codec::dir_prefix(dir);
        let upper = codec::dir_upper(dir);
        let start = opts.start.as_deref().map(|s| codec::child_key(dir, s));
        let map = self.map()?;
        let range: Box<dyn Iterator<Item = Kv<'_>>> = match (&start, opts.reverse) {
            (None, false) => Box::new(
                map.range::<Vec<u8>, _>((Bound::Included(&prefix), Bound::Excluded(&upper))),
            ),
            (None, true) => Box::new(
                map.range::<Vec<u8>, _>((Bound::Included(&prefix), Bound::Excluded(&upper)))
                    .rev(),
            ),
            (Some(s), false) => {
                Box::new(map.range::<Vec<u8>, _>((Bound::Included(s), Bound::Excluded(&upper))))
            }
            (Some(s), true) => Box::new(
                map.range::<Vec<u8>, _>((Bound::Included(&prefix), Bound::Included(s)))
                    .rev(),
            ),
        };
        let mut page = Page::default();
        for (k, v) in range {
            if !opts.inclusive && start.as_ref() == Some(k) {
                continue;
            }
            if page.entries.len() == opts.limit {
                page.has_more = true;
                break;
            }
            page.entries.push(codec::decode_entry(k, v)?);
        }
        Ok(page)
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut map = self.map()?;
        for op in &batch.ops {
            match op {
                Op::Put(e) => {
                    map.insert(codec::entry_key(&e.full_path), codec::encode(e));
                }
                Op::Delete(p) => {
                    map.remove(&codec::entry_key(p));
                }
                Op::QueueDeletion(d) => {
                    map.insert(codec::gc_key(&d.fid), codec::encode(d));
                }
                Op::Dequeue(fid) => {
                    map.remove(&codec::gc_key(fid));
                }
            }
        }
        Ok(())
    }

    fn pending_deletions(&self, limit: usize) -> Result<Vec<PendingDeletion>, StoreError> {
        let map = self.map()?;
        map.range::<[u8], _>((
            Bound::Included(&[codec::GC][..]),
            Bound::Excluded(&[codec::GC + 1][..]),
        ))
        .take(limit)
        .map(|(k, v)| codec::decode(k, v))
        .collect()
    }

    fn check(&self) -> Result<(), StoreError> {
        self.map().map(drop)
    }
}
