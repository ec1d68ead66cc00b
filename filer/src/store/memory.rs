//! [`MemoryStore`]: a `BTreeMap` with the same keys and values as the RocksDB store, for
//! tests and throwaway runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use common::api::filer::Entry;
use common::sync::LockExt;

use super::codec;
use super::{
    Batch, IndexView, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError, check_guards,
    plan_index,
};

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

    /// The locked map. A poisoned lock means a panic inside a batch, which is fatal (see
    /// `common::sync`): the map may hold half a batch, so it is never read again.
    fn map(&self) -> Result<std::sync::MutexGuard<'_, Map>, StoreError> {
        Ok(self.map.lock_or_abort())
    }
}

/// The locked map, read by [`plan_index`].
struct MapView<'a>(&'a Map);

impl IndexView for MapView<'_> {
    fn children(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let (lo, hi) = (codec::dir_prefix(dir), codec::dir_upper(dir));
        self.0
            .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Excluded(&hi)))
            .take(limit)
            .map(|(k, v)| {
                codec::decode_entry(k, v).map(|e| crate::path::name(&e.full_path).to_owned())
            })
            .collect()
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, StoreError> {
        let key = codec::entry_key(path);
        self.0
            .get(&key)
            .map(|v| codec::decode_entry(&key, v))
            .transpose()
    }

    fn owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        let (lo, hi) = (codec::owners_prefix(fid), codec::owners_upper(fid));
        self.0
            .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Excluded(&hi)))
            .map(|(k, _)| codec::owner_path(fid, k))
            .collect()
    }

    fn queued(&self, fid: &str) -> Result<Option<PendingDeletion>, StoreError> {
        let key = codec::gc_key(fid);
        self.0.get(&key).map(|v| codec::decode(&key, v)).transpose()
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
        // Checked and planned under the same lock as the apply, so they are atomic with it.
        check_guards(&MapView(&map), batch)?;
        let plan = plan_index(&MapView(&map), batch)?;
        for (i, op) in batch.ops.iter().enumerate() {
            if plan.skip.contains(&i) {
                continue;
            }
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
        for (fid, path) in &plan.remove {
            map.remove(&codec::owner_key(fid, path));
        }
        for (fid, path) in &plan.add {
            map.insert(codec::owner_key(fid, path), codec::OWNER_VALUE.to_vec());
        }
        Ok(())
    }

    fn chunk_owners(&self, fid: &str) -> Result<Vec<String>, StoreError> {
        MapView(&*self.map()?).owners(fid)
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
