//! The one panic and lock-poison policy of every Kelp service: a panic inside a critical
//! section is fatal.
//!
//! Services keep in-memory state (a volume's key map and published end, the master's topology,
//! a partition's buffer and offsets, the registry's schema cache) under `std` locks. A panic
//! while one of them is held may leave that state half-updated (a key published without its
//! `.idx` row, an offset advanced past a record that was never appended), and serving from it
//! could answer for data that is not on disk. So a poisoned lock is never recovered: whoever
//! finds one logs an ERROR naming the lock and aborts the process, and recovery at the next
//! start rebuilds the state from what is durable (always safe: that is what restarts are
//! tested for). The same holds for long-lived threads that own such state: if one panics, the
//! process aborts instead of running on without it.
//!
//! Take every `std` lock through [`LockExt`] and start every long-lived thread with
//! [`spawn_critical`]. `tokio` locks do not poison and need neither.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// Logs why and aborts the process (see the module docs).
#[cold]
pub fn abort(what: &str) -> ! {
    tracing::error!(
        what,
        "fatal: a panic inside a critical section; aborting so recovery rebuilds the state from disk"
    );
    std::process::abort()
}

/// Locking that treats a poisoned lock as fatal (see the module docs).
pub trait LockExt {
    /// The guard of a shared lock.
    type Read<'a>
    where
        Self: 'a;
    /// The guard of an exclusive lock.
    type Write<'a>
    where
        Self: 'a;
    /// A shared guard, or abort if a panic poisoned the lock.
    fn read_or_abort(&self) -> Self::Read<'_>;
    /// An exclusive guard, or abort if a panic poisoned the lock.
    fn write_or_abort(&self) -> Self::Write<'_>;
    /// The guard of a mutex (the same as [`LockExt::write_or_abort`]).
    fn lock_or_abort(&self) -> Self::Write<'_> {
        self.write_or_abort()
    }
}

impl<T: ?Sized> LockExt for RwLock<T> {
    type Read<'a>
        = RwLockReadGuard<'a, T>
    where
        T: 'a;
    type Write<'a>
        = RwLockWriteGuard<'a, T>
    where
        T: 'a;
    fn read_or_abort(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|_| abort("poisoned rwlock"))
    }
    fn write_or_abort(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|_| abort("poisoned rwlock"))
    }
}

impl<T: ?Sized> LockExt for Mutex<T> {
    type Read<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    type Write<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    fn read_or_abort(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|_| abort("poisoned mutex"))
    }
    fn write_or_abort(&self) -> MutexGuard<'_, T> {
        self.read_or_abort()
    }
}

/// Starts a named thread whose panic aborts the process (see the module docs).
pub fn spawn_critical(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if catch_unwind(AssertUnwindSafe(f)).is_err() {
            abort("a critical thread panicked");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unpoisoned_locks_hand_out_their_guards() {
        let m = Mutex::new(1);
        *m.lock_or_abort() += 1;
        assert_eq!(*m.read_or_abort(), 2);
        let l = RwLock::new(vec![1]);
        l.write_or_abort().push(2);
        assert_eq!(l.read_or_abort().len(), 2);
        spawn_critical("t".into(), || {}).unwrap().join().unwrap();
    }
}
