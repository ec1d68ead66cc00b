//! `powercut`: a FUSE file system for tests that behaves like a disk behind a volatile page
//! cache, in the spirit of LazyFS, so that a test can cut the power under a real process and see
//! what survives; plus injected read errors and a full disk.
//!
//! [`PowerCutFs::mount`] mounts a passthrough view of a backing directory (which stands for the
//! platter) in the test process, on a thread of its own. Through the mount:
//!
//! - **File data** written goes to an in-memory page cache per file (dirty 4 KiB pages and a
//!   pending size; truncations and extensions are pending too). Reads see the merged picture.
//!   `fsync` and `fdatasync` of a file write that file's pages and size to the backing file.
//!   Closing a file is not durability: a closed file's unsynced data is still lost.
//! - **Namespace operations** (create, mkdir, unlink, rmdir, rename) are done in the backing tree
//!   at once but journaled until an fsync of the directory they changed (both directories for a
//!   rename) covers them; a removed name waits in a hidden trash meanwhile. As on a strict POSIX
//!   file system, fsyncing a new file does not make its name durable: only its directory's fsync
//!   does. [`Options::strict_namespace`] `false` makes them durable at once instead.
//! - [`Handle::power_cut`] (also what dropping the handle does) drops every page cache, undoes
//!   every uncovered namespace operation newest first, and unmounts: the backing directory then
//!   holds what a disk would after the power loss, and can be mounted again.
//! - [`Handle::fail_reads`] makes reads fail with an errno (EIO) for files matching a suffix or a
//!   predicate, optionally only within a byte range; [`Handle::space_limit`] makes writes,
//!   truncations and allocations that would grow the tree past a byte count fail with ENOSPC.
//!
//! Not modelled (say so before relying on it): the backing directory itself is never fsynced
//! (the test machine does not lose power, only the simulated disk does); hard links, symlinks,
//! device nodes and xattrs are refused; permission, owner and time changes are durable at once;
//! a power cut loses all or nothing of a file's unsynced pages (no torn subset of them), and a
//! write is never torn within itself; an undo that a later covered operation made impossible
//! (its parent renamed away for good, its name taken) is skipped and listed in
//! [`PowerCutReport::not_reverted`]; a read fault applies to files opened after it was set (they
//! bypass the kernel's page cache; files opened before may still be served from it).
//!
//! Mounting needs `/dev/fuse` and either root (mount(2) directly) or `fusermount3` (the `fuse3`
//! package); no libfuse is linked. The file system serves requests under one lock on a single
//! thread, which is plenty for tests.

#![deny(missing_docs)]

mod fs;
pub mod namespace;
pub mod overlay;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

use crate::fs::{Fs, State, lock};

pub use crate::fs::TRASH;

/// The file system's entry point; see the crate documentation.
pub struct PowerCutFs;

/// Mount options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace operations are durable only once their directory is fsynced (default `true`).
    pub strict_namespace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            strict_namespace: true,
        }
    }
}

/// Counters of what the file system saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// File writes.
    pub writes: u64,
    /// File fsyncs and fdatasyncs.
    pub fsyncs: u64,
    /// Directory fsyncs.
    pub dir_fsyncs: u64,
    /// Operations refused with ENOSPC.
    pub enospc: u64,
}

/// What a power cut dropped.
#[derive(Debug, Clone, Default)]
pub struct PowerCutReport {
    /// Files (relative to the backing directory) whose unsynced data or size was dropped.
    pub files_with_lost_data: Vec<PathBuf>,
    /// Dirty bytes dropped (in whole pages).
    pub lost_dirty_bytes: u64,
    /// Namespace operations undone, newest first.
    pub reverted: Vec<String>,
    /// Undo steps that could not be done, with why.
    pub not_reverted: Vec<String>,
}

/// A read fault: reads of matching files (within `range`, if set) fail with `errno`.
#[derive(Clone)]
pub struct ReadFault {
    matcher: Arc<dyn Fn(&Path) -> bool + Send + Sync>,
    range: Option<Range<u64>>,
    errno: i32,
    hits: Arc<AtomicU64>,
}

impl std::fmt::Debug for ReadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFault")
            .field("range", &self.range)
            .field("errno", &self.errno)
            .field("hits", &self.hits())
            .finish()
    }
}

impl ReadFault {
    /// Reads of files whose path (relative to the backing directory) ends with `suffix`.
    pub fn suffix(suffix: &str, errno: i32) -> Self {
        let suffix = suffix.to_owned();
        Self::predicate(move |p| p.to_string_lossy().ends_with(&suffix), errno)
    }

    /// Reads of files whose path (relative to the backing directory) satisfies `f`.
    pub fn predicate(f: impl Fn(&Path) -> bool + Send + Sync + 'static, errno: i32) -> Self {
        Self {
            matcher: Arc::new(f),
            range: None,
            errno,
            hits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Only reads that touch `range` (byte offsets) fail.
    pub fn within(mut self, range: Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// How many reads this fault failed so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// A mounted [`PowerCutFs`]; dropping it cuts the power and unmounts (also when a test panics).
pub struct Handle {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    backing: PathBuf,
}

impl PowerCutFs {
    /// Mounts a view of `backing` at `mountpoint` (both created if missing) with default
    /// [`Options`].
    pub fn mount(backing: impl AsRef<Path>, mountpoint: impl AsRef<Path>) -> io::Result<Handle> {
        Self::mount_with(backing, mountpoint, Options::default())
    }

    /// Mounts a view of `backing` at `mountpoint` with `options`. The error says why a mount
    /// failed (no `/dev/fuse`, not root and no `fusermount3`, …).
    pub fn mount_with(
        backing: impl AsRef<Path>,
        mountpoint: impl AsRef<Path>,
        options: Options,
    ) -> io::Result<Handle> {
        let (backing, mountpoint) = (backing.as_ref(), mountpoint.as_ref());
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "powercut: /dev/fuse is missing (load the fuse module, or run the container with --device /dev/fuse)",
            ));
        }
        let state = Arc::new(Mutex::new(State::new(
            backing.clone(),
            options.strict_namespace,
        )?));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".into()),
            MountOption::Subtype("powercut".into()),
        ];
        let session = fuser::spawn_mount(Fs(state.clone()), &mountpoint, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "powercut: mounting {} at {} failed: {e} (needs /dev/fuse and root with \
                     CAP_SYS_ADMIN, or fusermount3 from the fuse3 package)",
                    backing.display(),
                    mountpoint.display()
                ),
            )
        })?;
        Ok(Handle {
            state,
            session: Some(session),
            mountpoint,
            backing,
        })
    }
}

impl Handle {
    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Adds a read fault; returns it (its [`ReadFault::hits`] counts the reads it failed).
    pub fn fail_reads(&self, fault: ReadFault) -> ReadFault {
        lock(&self.state).faults.push(fault.clone());
        fault
    }

    /// Removes every read fault.
    pub fn clear_read_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Limits the bytes the tree may hold (`None`: no limit); growth past it fails with ENOSPC.
    pub fn space_limit(&self, bytes: Option<u64>) {
        lock(&self.state).space_limit = bytes;
    }

    /// Bytes the tree holds now (what the space limit counts).
    pub fn used_bytes(&self) -> u64 {
        lock(&self.state).used_bytes()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats.clone()
    }

    /// Cuts the power: drops unsynced data, undoes uncovered namespace operations, unmounts.
    /// Processes using the mount should be dead first (their later requests fail with EIO).
    pub fn power_cut(mut self) -> io::Result<PowerCutReport> {
        self.cut()
    }

    fn cut(&mut self) -> io::Result<PowerCutReport> {
        let report = lock(&self.state).power_cut();
        if let Some(session) = self.session.take() {
            unmount(session, &self.mountpoint)?;
        }
        Ok(report)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.session.is_some()
            && let Err(e) = self.cut()
        {
            eprintln!("powercut: unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

/// Unmounts and joins the session; if the mount is busy, detaches it lazily instead (the
/// kernel then ends the session once the last user is gone).
fn unmount(session: BackgroundSession, mountpoint: &Path) -> io::Result<()> {
    match session.umount_and_join() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
