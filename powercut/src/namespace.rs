//! The namespace journal: every create, mkdir, unlink, rmdir and rename that no fsync of the
//! directories it changed has covered yet, with how to undo it at a power cut.
//!
//! Invariant: the backing tree always shows every namespace operation as done; an entry stays in
//! the journal until each directory in its `waits_on` was fsynced (or was itself removed for
//! good), and a power cut undoes the remaining entries newest first. A name an operation removed
//! (unlink, rmdir, a rename's replaced target) is moved into the trash, never deleted, until the
//! operation is covered, so that undoing it can put the very same file back.

use std::ffi::OsString;
use std::path::PathBuf;

/// One step that undoes (part of) a namespace operation. Directories are named by inode, so
/// that a later rename of a parent does not make the step name a stale path.
#[derive(Debug, Clone)]
pub enum Undo {
    /// Remove `parent/name` (and everything under it): it was created.
    Remove {
        /// Parent directory's inode.
        parent: u64,
        /// The created name.
        name: OsString,
    },
    /// Move `trash` (relative to the backing root) back to `parent/name`: it was removed.
    Restore {
        /// Where the removed file waits, relative to the backing root.
        trash: PathBuf,
        /// Parent directory's inode.
        parent: u64,
        /// The removed name.
        name: OsString,
    },
    /// Move `to` back to `from`: it was renamed.
    Rename {
        /// The old name: (parent inode, name).
        from: (u64, OsString),
        /// The new name: (parent inode, name).
        to: (u64, OsString),
    },
}

/// One namespace operation not yet covered by directory fsyncs.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The directories (inodes) whose fsync makes the operation durable; it is durable once empty.
    pub waits_on: Vec<u64>,
    /// Steps that undo it, in order.
    pub undo: Vec<Undo>,
    /// Trash entries (relative to the backing root) deleted for good once it is durable.
    pub trash: Vec<PathBuf>,
    /// A directory (inode) that the operation removed: once durable, operations waiting on that
    /// directory can never be covered and are durable as far as they matter (they are gone).
    pub removes_dir: Option<u64>,
    /// What the operation was, for reports.
    pub what: String,
}

/// Splits `journal` after `dir` was fsynced: returns the entries that became durable (in
/// order) and leaves the rest, in order, in `journal`.
pub fn cover(journal: &mut Vec<Pending>, dir: u64) -> Vec<Pending> {
    let mut gone = vec![dir];
    let mut durable = Vec::new();
    let mut first = true;
    while let Some(d) = gone.pop() {
        let mut keep = Vec::with_capacity(journal.len());
        for mut p in journal.drain(..) {
            if first {
                p.waits_on.retain(|&w| w != d);
            } else if p.waits_on.contains(&d) {
                // Waits on a directory removed for good: it can never be undone or covered.
                p.waits_on.clear();
            }
            if p.waits_on.is_empty() {
                if let Some(r) = p.removes_dir {
                    gone.push(r);
                }
                durable.push(p);
            } else {
                keep.push(p);
            }
        }
        *journal = keep;
        first = false;
    }
    durable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(waits: &[u64], removes_dir: Option<u64>, what: &str) -> Pending {
        Pending {
            waits_on: waits.to_vec(),
            undo: Vec::new(),
            trash: Vec::new(),
            removes_dir,
            what: what.into(),
        }
    }

    #[test]
    fn a_directory_fsync_covers_only_the_operations_in_that_directory() {
        let mut j = vec![
            op(&[1], None, "mkdir /d"),
            op(&[2], None, "create /d/f"),
            op(&[2, 1], None, "rename /d/f -> /f"),
        ];
        let durable = cover(&mut j, 2);
        assert_eq!(durable.len(), 1);
        assert_eq!(durable[0].what, "create /d/f");
        let left: Vec<_> = j.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(left, ["mkdir /d", "rename /d/f -> /f"]);
        assert_eq!(j[1].waits_on, [1]);
        let durable = cover(&mut j, 1);
        assert_eq!(durable.len(), 2);
        assert!(j.is_empty());
    }

    #[test]
    fn a_durable_rmdir_settles_the_operations_inside_the_removed_directory() {
        let mut j = vec![
            op(&[5], None, "create /d/f"),
            op(&[5], None, "unlink /d/f"),
            op(&[1], Some(5), "rmdir /d"),
            op(&[7], None, "create /e/g"),
        ];
        let durable: Vec<_> = cover(&mut j, 1).into_iter().map(|p| p.what).collect();
        assert_eq!(durable, ["rmdir /d", "create /d/f", "unlink /d/f"]);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].what, "create /e/g");
    }
}
