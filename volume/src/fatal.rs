//! The volume server's panic and lock-poison policy: a panic inside a critical section is
//! fatal.
//!
//! The volume's in-memory state (the key map, the published end, the poison flag, the set of
//! volumes) is changed under `std` locks by the syncer thread and the handlers. A panic while
//! one of them is held may leave that state half-updated (a key published without its `.idx`
//! row, say), and serving from it could answer for data that is not on disk. So a poisoned
//! lock is never recovered: whoever finds one logs an ERROR and aborts the process, and
//! recovery at the next start rebuilds the state from the files (which is always safe, see
//! `store::recover`). The same holds for the group-commit threads: if the appender or the
//! syncer panics, the process aborts instead of running on with a volume that silently
//! refuses every write.
//!
//! Every lock in the crate is taken through [`LockExt`], and every long-lived thread is
//! started with [`spawn_critical`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// Logs why and aborts the process (see the module docs).
#[cold]
pub(crate) fn abort(what: &str) -> ! {
    tracing::error!(
        what,
        "fatal: a panic inside a volume critical section; aborting so recovery rebuilds the state from disk"
    );
    std::process::abort()
}

/// Locking that treats a poisoned lock as fatal (see the module docs).
pub(crate) trait LockExt {
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
}

impl<T> LockExt for RwLock<T> {
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

impl<T> LockExt for Mutex<T> {
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

/// Starts a thread whose panic aborts the process (see the module docs).
pub(crate) fn spawn_critical(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if catch_unwind(AssertUnwindSafe(f)).is_err() {
            abort("a group-commit thread panicked");
        }
    })
}
