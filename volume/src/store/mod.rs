//! The volume store: every volume in the data directory, their files and their errors.
//!
//! Files are `<dir>/<collection>_<vid>.dat` (`<vid>.dat` without a collection) and `.idx`.
//! A `.dat` starts with an 8-byte superblock (see [`superblock`]: version, replication and a
//! checksum).
//!
//! A volume whose files fail a format or checksum check (its superblock) is quarantined: its
//! files are renamed `*.corrupted` and it is reported. Any other failure to open it (an I/O
//! error, too many open files, a permission problem) leaves its files where they are: it is
//! reported as failed to load (ERROR log, `volumes_failed` metric) and a restart retries it.

mod error;
pub mod faults;
pub mod idx;
pub mod needle;
mod read;
mod recover;
pub mod superblock;
mod syncer;
pub mod vacuum;
pub mod volume;
mod writer;

use common::sync::LockExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use common::api::master::{Replication, VolumeInfo};
use common::ids::VolumeId;

use crate::metrics::Metrics;
pub use error::VolumeError;
pub use read::{RangeRead, ReadNeedle};
pub use recover::RecoveryReport;
pub use volume::Volume;

/// Bytes of the superblock at the start of every `.dat`.
pub const SUPERBLOCK_LEN: u64 = superblock::LEN as u64;

/// All volumes of one server.
pub struct Store {
    dir: PathBuf,
    volumes: RwLock<HashMap<VolumeId, Arc<Volume>>>,
    /// Volumes whose files are present but could not be opened, and why.
    failed: RwLock<HashMap<VolumeId, String>>,
    /// Serializes allocations, so the slow creation runs outside `volumes`' lock.
    allocating: Mutex<()>,
    /// The master's volume size limit in bytes.
    size_limit: AtomicU64,
    metrics: Metrics,
}

/// Parses `<collection>_<vid>` or `<vid>` from a `.dat` file stem.
fn parse_stem(stem: &str) -> Option<(String, VolumeId)> {
    match stem.rsplit_once('_') {
        Some((c, v)) => v.parse().ok().map(|v| (c.to_owned(), v)),
        None => stem.parse().ok().map(|v| (String::new(), v)),
    }
}

impl Store {
    /// Opens every volume in `dir`, recovering each. A volume whose format or checksum is bad
    /// is renamed `*.corrupted` (data is never deleted) and reported; one that fails for any
    /// other reason (an I/O error, EMFILE) is left in place and reported as failed to load; the
    /// others still load.
    pub fn load(dir: &Path, metrics: Metrics) -> anyhow::Result<Self> {
        let store = Self {
            dir: dir.to_path_buf(),
            volumes: RwLock::new(HashMap::new()),
            failed: RwLock::new(HashMap::new()),
            allocating: Mutex::new(()),
            size_limit: AtomicU64::new(30_000 << 20),
            metrics,
        };
        let mut stems = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "dat")
                && let Some(parsed) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(parse_stem)
            {
                stems.push(parsed);
            }
        }
        stems.sort_by_key(|(_, v)| *v);
        for (collection, vid) in stems {
            match Volume::open(dir, vid, &collection, store.metrics.clone()) {
                Ok((v, report)) => {
                    if let Some(reason) = v.failure() {
                        tracing::error!(volume = vid, collection = %collection, reason = %reason, "volume loaded read-only after a failure");
                    }
                    tracing::info!(
                        volume = vid,
                        collection = %collection,
                        needles = v.file_count(),
                        size = v.size(),
                        recovered = report.needles_recovered,
                        bytes_cut = report.bytes_cut,
                        corrupt_regions = report.corrupt_regions,
                        bytes_skipped = report.bytes_skipped,
                        idx_rows_dropped = report.idx_rows_dropped,
                        "volume loaded"
                    );
                    store.volumes.write_or_abort().insert(vid, Arc::new(v));
                }
                Err(e @ VolumeError::Corrupt { .. }) => {
                    tracing::error!(volume = vid, error = %e, "volume failed its format or checksum check; quarantining its files");
                    quarantine(dir, &collection, vid);
                }
                Err(e) => {
                    tracing::error!(volume = vid, error = %e, "volume cannot be opened; its files are left in place, it is not served until a restart succeeds");
                    store.failed.write_or_abort().insert(vid, e.to_string());
                }
            }
        }
        store.metrics.volumes.set(store.len() as i64);
        store.update_failed_gauge();
        Ok(store)
    }

    fn update_failed_gauge(&self) {
        let degraded = self
            .volumes
            .read_or_abort()
            .values()
            .filter(|v| v.failure().is_some())
            .count();
        let failed = self.failed.read_or_abort().len();
        self.metrics.volumes_failed.set((degraded + failed) as i64);
    }

    /// Volumes present on disk that failed to open (not quarantined), with the error.
    pub fn failed(&self) -> Vec<(VolumeId, String)> {
        let mut f: Vec<(VolumeId, String)> = self
            .failed
            .read_or_abort()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        f.sort();
        f
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of volumes.
    pub fn len(&self) -> usize {
        self.volumes.read_or_abort().len()
    }

    /// Whether there are no volumes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A volume by id.
    pub fn get(&self, id: VolumeId) -> Result<Arc<Volume>, VolumeError> {
        self.volumes
            .read_or_abort()
            .get(&id)
            .cloned()
            .ok_or(VolumeError::VolumeNotFound { volume: id })
    }

    /// Creates a volume; idempotent when it exists with the same collection and replication.
    ///
    /// Allocations are serialized by their own lock; the store-wide map is locked only to look
    /// the id up and to insert the new volume, never across the creation's fsyncs, so reads and
    /// heartbeats do not wait for an allocation.
    pub fn allocate(
        &self,
        id: VolumeId,
        collection: &str,
        replication: Replication,
    ) -> Result<Arc<Volume>, VolumeError> {
        self.allocate_with(id, collection, replication, || {
            Volume::create(&self.dir, id, collection, replication, self.metrics.clone())
        })
    }

    /// [`Store::allocate`] with the slow part, creating the files, as `create` (tests check
    /// what it may run under).
    fn allocate_with(
        &self,
        id: VolumeId,
        collection: &str,
        replication: Replication,
        create: impl FnOnce() -> Result<(Volume, RecoveryReport), VolumeError>,
    ) -> Result<Arc<Volume>, VolumeError> {
        let _alloc = self.allocating.read_or_abort();
        if let Ok(v) = self.get(id) {
            return if v.collection == collection && v.replication == replication {
                Ok(v)
            } else {
                Err(VolumeError::Exists { volume: id })
            };
        }
        if self.failed.read_or_abort().contains_key(&id) {
            return Err(VolumeError::Exists { volume: id });
        }
        let (v, _) = create()?;
        tracing::info!(volume = id, collection, %replication, "volume allocated");
        let v = Arc::new(v);
        let mut vols = self.volumes.write_or_abort();
        vols.insert(id, v.clone());
        self.metrics.volumes.set(vols.len() as i64);
        Ok(v)
    }

    /// Deletes a volume: removes its files durably (`.idx`, then `.dat`, then an fsync of the
    /// directory) and forgets it, so heartbeats no longer report it. Refused while the volume
    /// is being compacted. Serialized with allocations. Blocking.
    pub fn delete_volume(&self, id: VolumeId) -> Result<(), VolumeError> {
        let _alloc = self.allocating.read_or_abort();
        let v = self.get(id)?;
        v.remove_files()?;
        let mut vols = self.volumes.write_or_abort();
        vols.remove(&id);
        self.metrics.volumes.set(vols.len() as i64);
        drop(vols);
        self.update_failed_gauge();
        tracing::info!(volume = id, collection = %v.collection, "volume deleted");
        Ok(())
    }

    /// Scrubs every volume (see [`Volume::scrub`]); returns the number of needles checked
    /// and the corrupt ones as `(volume, key)`.
    pub fn scrub(&self) -> (u64, Vec<(VolumeId, u64)>) {
        let vols: Vec<Arc<Volume>> = self.volumes.read_or_abort().values().cloned().collect();
        let mut checked = 0;
        let mut bad = Vec::new();
        for v in vols {
            checked += v.file_count();
            bad.extend(v.scrub().into_iter().map(|k| (v.id, k)));
        }
        (checked, bad)
    }

    /// Compacts every volume whose garbage ratio (bytes of deleted and overwritten needles
    /// and tombstones over the `.dat`'s size) exceeds `threshold`, one at a time; returns
    /// `(volume, size before, size after)` of each compacted one. A volume that fails to
    /// compact is logged and left as it was (or, after its commit marker, poisoned until a
    /// restart finishes the swap). Blocking.
    pub fn vacuum(&self, threshold: f64) -> Vec<(VolumeId, u64, u64)> {
        let mut vols: Vec<Arc<Volume>> = self.volumes.read_or_abort().values().cloned().collect();
        vols.sort_by_key(|v| v.id);
        let mut done = Vec::new();
        for v in vols {
            let size = v.size();
            if size == 0 || v.failure().is_some() {
                continue;
            }
            let ratio = v.garbage() as f64 / size as f64;
            if ratio <= threshold {
                continue;
            }
            match v.compact() {
                Ok((before, after)) => done.push((v.id, before, after)),
                // Deleted (`delete_volume`) since the list was taken: nothing to compact.
                Err(VolumeError::VolumeNotFound { .. }) => {}
                Err(e) => {
                    tracing::error!(volume = v.id, error = %e, "compaction failed");
                }
            }
        }
        done
    }

    /// What the master is told about every volume.
    pub fn infos(&self) -> Vec<VolumeInfo> {
        let mut infos: Vec<VolumeInfo> = self
            .volumes
            .read_or_abort()
            .values()
            .map(|v| v.info())
            .collect();
        infos.sort_by_key(|i| i.id);
        infos
    }

    /// The master's size limit.
    pub fn size_limit(&self) -> u64 {
        self.size_limit.load(Ordering::Relaxed)
    }

    /// Sets the master's size limit.
    pub fn set_size_limit(&self, limit: u64) {
        self.size_limit.store(limit, Ordering::Relaxed);
    }
}

fn quarantine(dir: &Path, collection: &str, vid: VolumeId) {
    let stem = volume::file_stem(collection, vid);
    for ext in ["dat", "idx"] {
        let from = dir.join(format!("{stem}.{ext}"));
        let to = dir.join(format!("{stem}.{ext}.corrupted"));
        if std::fs::metadata(&from).is_ok()
            && let Err(e) = std::fs::rename(&from, &to)
        {
            tracing::error!(file = %from.display(), error = %e, "cannot quarantine volume file");
        }
    }
    if let Err(e) = common::fs::fsync_dir(dir) {
        tracing::error!(error = %e, "cannot fsync data dir after quarantine");
    }
}

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
