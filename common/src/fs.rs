//! Crash-safe file helpers and the data-directory lock.
//!
//! A file is replaced by writing a temp file (`create_new`), fsyncing it, renaming it over the
//! target and fsyncing the directory, so a crash leaves either the old or the new content.
//! Directories are created with their parents fsynced, so a new file's name survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, fsyncing each parent whose entry list changed.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || fs::metadata(p).is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match fs::create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// Atomically and durably replaces `path` with `contents`.
pub fn durable_overwrite(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = tmp_path(path);
    // A stale temp file from a crash mid-write is garbage: remove it and start over.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    fsync_dir(&dir)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// An exclusive lock on a service's data directory, held for the life of the process.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates `dir` (durably) and takes an exclusive lock on `<dir>/LOCK`; fails if another
    /// process holds it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        create_dir_all(dir)?;
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data directory {} is locked by another process",
                    dir.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_durable_overwrite_replaces_content_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        durable_overwrite(&path, b"one").unwrap();
        durable_overwrite(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(fs::metadata(tmp_path(&path)).is_err());
    }

    #[test]
    fn test_durable_overwrite_survives_stale_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(tmp_path(&path), b"garbage").unwrap();
        durable_overwrite(&path, b"fresh").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"fresh");
    }

    #[test]
    fn test_dir_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        let lock = DirLock::acquire(&data).unwrap();
        assert!(DirLock::acquire(&data).is_err());
        drop(lock);
        DirLock::acquire(&data).unwrap();
    }
}
