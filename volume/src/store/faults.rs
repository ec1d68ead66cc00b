//! A seam in the volume's file I/O where tests inject faults and observe sync points.
//!
//! Every volume owns a [`Faults`]. In production it is never armed: each check is one relaxed
//! atomic load and the I/O goes straight to the file. Tests arm it (the setters exist only in
//! test builds) to:
//! - fail `.dat` reads at or past an offset with an I/O error (EIO during recovery);
//! - fail `.dat` or `.idx` appends with a given error kind (ENOSPC on a write);
//! - record the length of the `.dat` and `.idx` at every successful fsync, so a power cut can be
//!   simulated by truncating each file back to its last synced length.

use common::sync::LockExt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Which file of a volume was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncedFile {
    /// The `.dat`.
    Dat,
    /// The `.idx`.
    Idx,
}

#[derive(Debug, Default)]
struct Plan {
    /// `.dat` reads touching this offset or beyond fail with EIO.
    read_error_from: Option<u64>,
    /// `.dat` appends fail with this error kind.
    write_error: Option<io::ErrorKind>,
    /// `.idx` appends fail with this error kind.
    idx_write_error: Option<io::ErrorKind>,
    /// Record sync points.
    record_syncs: bool,
    /// `(file, length)` at each successful fsync, in order.
    syncs: Vec<(SyncedFile, u64)>,
    /// While set, the syncer waits before committing its next batch.
    sync_gate_closed: bool,
    /// Compaction steps at which a vacuum stops as if the process died there.
    crash_at: Option<&'static str>,
}

/// Fault plan and sync log of one volume (see the module docs).
#[derive(Debug, Default)]
pub struct Faults {
    armed: AtomicBool,
    plan: Mutex<Plan>,
    gate: Condvar,
}

impl Faults {
    fn plan(&self) -> Option<std::sync::MutexGuard<'_, Plan>> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.plan.read_or_abort())
    }

    /// Fails a `.dat` read of `len` bytes at `pos` if a read fault covers it.
    pub(crate) fn check_read(&self, pos: u64, len: usize) -> io::Result<()> {
        match self.plan().and_then(|p| p.read_error_from) {
            Some(from) if pos + len as u64 > from => Err(io::Error::from_raw_os_error(5)),
            _ => Ok(()),
        }
    }

    /// Fails a `.dat` append if a write fault is set.
    pub(crate) fn check_write(&self) -> io::Result<()> {
        injected(self.plan().and_then(|p| p.write_error))
    }

    /// Fails an `.idx` append if an idx write fault is set.
    pub(crate) fn check_idx_write(&self) -> io::Result<()> {
        injected(self.plan().and_then(|p| p.idx_write_error))
    }

    /// Blocks the syncer while a test holds its gate closed (see `close_sync_gate`).
    pub(crate) fn wait_sync_gate(&self) {
        if let Some(mut p) = self.plan() {
            while p.sync_gate_closed {
                p = self
                    .gate
                    .wait(p)
                    .unwrap_or_else(|_| common::sync::abort("poisoned fault plan"));
            }
        }
    }

    /// Whether a simulated crash is planned at compaction step `step`.
    pub(crate) fn crash_at(&self, step: &'static str) -> bool {
        self.plan().is_some_and(|p| p.crash_at == Some(step))
    }

    /// Notes that `file` was fsynced with `len` bytes durable.
    pub(crate) fn synced(&self, file: SyncedFile, len: u64) {
        if let Some(mut p) = self.plan()
            && p.record_syncs
        {
            p.syncs.push((file, len));
        }
    }
}

fn injected(kind: Option<io::ErrorKind>) -> io::Result<()> {
    match kind {
        Some(io::ErrorKind::StorageFull) => Err(io::Error::from_raw_os_error(28)),
        Some(kind) => Err(io::Error::new(kind, "injected write fault")),
        None => Ok(()),
    }
}

#[cfg(test)]
impl Faults {
    fn arm(&self, f: impl FnOnce(&mut Plan)) {
        f(&mut self.plan.lock().unwrap());
        self.armed.store(true, Ordering::Relaxed);
    }

    /// Makes every `.dat` read at or past `pos` fail with EIO.
    pub fn fail_reads_from(&self, pos: u64) {
        self.arm(|p| p.read_error_from = Some(pos));
    }

    /// Makes every `.dat` append fail with `kind` (`StorageFull` is a real ENOSPC).
    pub fn fail_writes(&self, kind: io::ErrorKind) {
        self.arm(|p| p.write_error = Some(kind));
    }

    /// Makes every `.idx` append fail with `kind`.
    pub fn fail_idx_writes(&self, kind: io::ErrorKind) {
        self.arm(|p| p.idx_write_error = Some(kind));
    }

    /// Stops failing appends (`.dat` and `.idx`).
    pub fn heal_writes(&self) {
        self.arm(|p| {
            p.write_error = None;
            p.idx_write_error = None;
        });
    }

    /// Holds the syncer before its next commit until [`Faults::open_sync_gate`].
    pub fn close_sync_gate(&self) {
        self.arm(|p| p.sync_gate_closed = true);
    }

    /// Lets the syncer go on.
    pub fn open_sync_gate(&self) {
        self.arm(|p| p.sync_gate_closed = false);
        self.gate.notify_all();
    }

    /// Makes the next compaction stop at `step` as if the process died there.
    pub fn crash_compaction_at(&self, step: &'static str) {
        self.arm(|p| p.crash_at = Some(step));
    }

    /// Starts recording sync points.
    pub fn record_syncs(&self) {
        self.arm(|p| p.record_syncs = true);
    }

    /// The length of `file` at its last recorded fsync.
    pub fn last_synced(&self, file: SyncedFile) -> Option<u64> {
        self.plan
            .lock()
            .unwrap()
            .syncs
            .iter()
            .rev()
            .find(|(f, _)| *f == file)
            .map(|(_, len)| *len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_faults_unarmed_never_fail() {
        let f = Faults::default();
        assert!(f.check_read(0, 1 << 20).is_ok());
        assert!(f.check_write().is_ok());
        f.synced(SyncedFile::Dat, 8);
        assert_eq!(f.last_synced(SyncedFile::Dat), None);
    }

    #[test]
    fn test_faults_read_error_covers_only_the_range_past_its_offset() {
        let f = Faults::default();
        f.fail_reads_from(100);
        assert!(f.check_read(0, 100).is_ok());
        let e = f.check_read(96, 8).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        assert!(f.check_read(200, 1).is_err());
    }

    #[test]
    fn test_faults_enospc_and_sync_log() {
        let f = Faults::default();
        f.fail_writes(io::ErrorKind::StorageFull);
        assert_eq!(
            f.check_write().unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        f.heal_writes();
        assert!(f.check_write().is_ok());
        f.record_syncs();
        f.synced(SyncedFile::Dat, 8);
        f.synced(SyncedFile::Idx, 16);
        f.synced(SyncedFile::Dat, 64);
        assert_eq!(f.last_synced(SyncedFile::Dat), Some(64));
        assert_eq!(f.last_synced(SyncedFile::Idx), Some(16));
    }
}
