//! Hierarchical striped path locks, making each mutation's read-check-write atomic.
//!
//! A mutation of path `p` holds `p`'s stripe exclusively and the stripes of `p`'s ancestors
//! shared. So two writers of the same path exclude each other, a writer of a directory
//! (replace, delete, rename) excludes every writer below it, and writers in different
//! subtrees run concurrently (their synced RocksDB writes then share WAL syncs). The root is
//! never written, so it takes no lock. Stripes are acquired in index order, which rules out
//! deadlocks; two paths hashing to one stripe only cost some concurrency.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::path;

/// Number of stripes.
const STRIPES: usize = 1024;

/// The lock table.
#[derive(Debug)]
pub struct PathLocks {
    stripes: Box<[RwLock<()>]>,
}

/// Held locks; released on drop.
#[derive(Debug)]
pub struct PathGuard<'a> {
    _guards: Vec<Held<'a>>,
}

/// A held stripe; the guard is only kept to be dropped.
#[derive(Debug)]
enum Held<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

impl Default for PathLocks {
    fn default() -> Self {
        Self::new()
    }
}

impl PathLocks {
    /// A table of 1024 stripes.
    pub fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }

    fn stripe(p: &str) -> usize {
        let mut h = DefaultHasher::new();
        p.hash(&mut h);
        // Truncation is the point: any bits pick a stripe.
        (h.finish() % STRIPES as u64) as usize
    }

    /// Locks each of `paths` exclusively and their ancestors shared.
    pub async fn lock(&self, paths: &[&str]) -> PathGuard<'_> {
        // stripe → exclusive?
        let mut want: BTreeMap<usize, bool> = BTreeMap::new();
        for p in paths {
            if *p == path::ROOT {
                continue;
            }
            for a in path::ancestors(p) {
                want.entry(Self::stripe(a)).or_insert(false);
            }
        }
        for p in paths {
            if *p != path::ROOT {
                want.insert(Self::stripe(p), true);
            }
        }
        let mut guards = Vec::with_capacity(want.len());
        for (i, exclusive) in want {
            let lock = &self.stripes[i];
            guards.push(if exclusive {
                Held::Exclusive(lock.write().await)
            } else {
                Held::Shared(lock.read().await)
            });
        }
        PathGuard { _guards: guards }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn test_locks_exclude_same_path_and_descendants() {
        let locks = PathLocks::new();
        let g = locks.lock(&["/a"]).await;
        // A writer below /a, and a second writer of /a, wait for the writer of /a: polled
        // once each, they are pending (no timing involved), and they get the lock once it is
        // released.
        let below = locks.lock(&["/a/b/c"]);
        let same = locks.lock(&["/a"]);
        tokio::pin!(below, same);
        assert!(futures::poll!(&mut below).is_pending());
        assert!(futures::poll!(&mut same).is_pending());
        drop(g);
        let g = tokio::time::timeout(Duration::from_secs(5), below)
            .await
            .unwrap();
        drop(g);
        tokio::time::timeout(Duration::from_secs(5), same)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn test_locks_allow_writers_in_the_same_directory_with_shared_parents() {
        let locks = PathLocks::new();
        let g1 = locks.lock(&["/d/x"]).await;
        // Same parent, different names: no wait unless the names share a stripe.
        let other = (0..100)
            .map(|i| format!("/d/y{i}"))
            .find(|p| {
                PathLocks::stripe(p) != PathLocks::stripe("/d/x")
                    && PathLocks::stripe(p) != PathLocks::stripe("/d")
            })
            .unwrap();
        let g2 = tokio::time::timeout(Duration::from_secs(1), locks.lock(&[&other]))
            .await
            .unwrap();
        drop((g1, g2));
        // Renames lock two paths, one of which may be the other's ancestor.
        let _g = tokio::time::timeout(Duration::from_secs(1), locks.lock(&["/a/b", "/a"]))
            .await
            .unwrap();
    }
}
