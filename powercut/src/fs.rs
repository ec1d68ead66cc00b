//! The FUSE file system: a passthrough to the backing directory whose file data goes through a
//! simulated page cache ([`Overlay`]) and whose namespace operations are journaled until a
//! directory fsync covers them ([`crate::namespace`]); read faults and a space limit on top.
//!
//! Invariant: the backing directory holds exactly what a disk would hold after a power cut at
//! this instant, except for namespace operations still in the journal (done in the backing tree,
//! undone by [`State::power_cut`]); every operation runs under one lock, and after a power cut
//! every operation fails with EIO until the file system is unmounted.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::namespace::{self, Pending, Undo};
use crate::overlay::Overlay;
use crate::{PowerCutReport, ReadFault, Stats};

/// The hidden directory (in the backing root) that keeps removed names until they are durable.
pub const TRASH: &str = ".powercut-trash";

/// How long the kernel may cache attributes and names (the file system is its only writer).
const TTL: Duration = Duration::from_secs(1);

/// One file or directory the kernel knows.
struct Node {
    /// Path relative to the backing root ("" for the root).
    path: PathBuf,
    /// Its type.
    kind: FileType,
    /// Unsynced data and size, if any.
    overlay: Option<Overlay>,
    /// The backing file, open while the file is open or has unsynced data.
    file: Option<File>,
    /// Open handles.
    opens: u32,
}

/// An open handle.
enum Open {
    /// A file handle.
    File,
    /// A directory listing taken at opendir: (name, type, inode).
    Dir(Vec<(OsString, FileType, u64)>),
}

/// Everything the file system knows, under one lock.
pub struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Open>,
    next_fh: u64,
    journal: Vec<Pending>,
    next_trash: u64,
    /// Read faults in force.
    pub faults: Vec<ReadFault>,
    /// The space limit in bytes, if any.
    pub space_limit: Option<u64>,
    /// Whether namespace operations wait for a directory fsync (else they are durable at once).
    strict_namespace: bool,
    /// Set by a power cut: every operation fails from then on.
    dead: bool,
    /// Counters.
    pub stats: Stats,
}

impl State {
    /// A state over `backing` (which must exist); clears a leftover trash.
    pub fn new(backing: PathBuf, strict_namespace: bool) -> io::Result<Self> {
        let trash = backing.join(TRASH);
        if trash.exists() {
            fs::remove_dir_all(&trash)?;
        }
        fs::create_dir(&trash)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: PathBuf::new(),
                kind: FileType::Directory,
                overlay: None,
                file: None,
                opens: 0,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), INodeNo::ROOT.0);
        Ok(Self {
            backing,
            nodes,
            by_path,
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            journal: Vec::new(),
            next_trash: 0,
            faults: Vec::new(),
            space_limit: None,
            strict_namespace,
            dead: false,
            stats: Stats::default(),
        })
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// The path of `name` in directory `parent` (the trash is not visible).
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT.0 && name == TRASH {
            return Err(Errno::ENOENT);
        }
        let p = self.node(parent)?;
        if p.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(p.path.join(name))
    }

    /// The inode of `rel`, known or new.
    fn node_for(&mut self, rel: &Path, kind: FileType) -> u64 {
        if let Some(&ino) = self.by_path.get(rel) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.kind = kind;
            }
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                path: rel.to_path_buf(),
                kind,
                overlay: None,
                file: None,
                opens: 0,
            },
        );
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    /// Renames, in the node table, `from` and everything under it to `to`.
    fn move_paths(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(u64, PathBuf)> = self
            .nodes
            .iter()
            .filter_map(|(&ino, n)| {
                n.path.strip_prefix(from).ok().map(|rest| {
                    (
                        ino,
                        if rest.as_os_str().is_empty() {
                            to.to_path_buf()
                        } else {
                            to.join(rest)
                        },
                    )
                })
            })
            .collect();
        for (ino, _) in &moved {
            let old = self.nodes[ino].path.clone();
            if self.by_path.get(&old) == Some(ino) {
                self.by_path.remove(&old);
            }
        }
        for (ino, new) in moved {
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = new;
            }
        }
    }

    /// Forgets every path under `rel` (it was removed from the backing tree).
    fn forget_paths(&mut self, rel: &Path) {
        self.by_path.retain(|p, _| !p.starts_with(rel));
    }

    /// The attributes of inode `ino`.
    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let n = self.node(ino)?;
        let meta = match fs::symlink_metadata(self.abs(&n.path)) {
            Ok(m) => m,
            Err(e) => match &n.file {
                Some(f) => f.metadata()?,
                None => return Err(e.into()),
            },
        };
        let size = n.overlay.as_ref().map_or(meta.len(), Overlay::size);
        let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.max(0) as u32);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t(meta.atime(), meta.atime_nsec()),
            mtime: t(meta.mtime(), meta.mtime_nsec()),
            ctime: t(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(n.kind),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The backing file of `ino`, opened if needed.
    fn file(&mut self, ino: u64) -> Result<&File, Errno> {
        let abs = self.abs(&self.node(ino)?.path);
        let n = self.node_mut(ino)?;
        if n.file.is_none() {
            let f = match OpenOptions::new().read(true).write(true).open(&abs) {
                Ok(f) => f,
                Err(_) => File::open(&abs)?,
            };
            n.file = Some(f);
        }
        Ok(n.file.as_ref().expect("just opened"))
    }

    /// The visible size of `ino`.
    fn size(&mut self, ino: u64) -> Result<u64, Errno> {
        if let Some(o) = &self.node(ino)?.overlay {
            return Ok(o.size());
        }
        Ok(self.file(ino)?.metadata()?.len())
    }

    /// Fails with ENOSPC if growing the visible data by `growth` bytes passes the limit.
    fn check_space(&mut self, growth: u64) -> Result<(), Errno> {
        let Some(limit) = self.space_limit else {
            return Ok(());
        };
        if growth == 0 {
            return Ok(());
        }
        if self.used_bytes() + growth > limit {
            self.stats.enospc += 1;
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// Bytes used: each visible file's size (the larger of its backing and pending sizes).
    pub fn used_bytes(&self) -> u64 {
        let mut total = 0;
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(self.abs(&dir)) else {
                continue;
            };
            for e in rd.flatten() {
                let rel = dir.join(e.file_name());
                if rel == Path::new(TRASH) {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(rel);
                } else {
                    let pending = self
                        .by_path
                        .get(&rel)
                        .and_then(|i| self.nodes.get(i))
                        .and_then(|n| n.overlay.as_ref())
                        .map_or(0, Overlay::size);
                    total += meta.len().max(pending);
                }
            }
        }
        total
    }

    fn new_fh(&mut self, open: Open) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, open);
        fh
    }

    /// Whether a read fault applies to `rel`.
    fn faulty(&self, rel: &Path) -> bool {
        self.faults.iter().any(|f| (f.matcher)(rel))
    }

    /// Records a namespace operation (or nothing, when namespace operations are durable at once).
    fn journal(&mut self, mut p: Pending) -> Result<(), Errno> {
        p.waits_on.sort_unstable();
        p.waits_on.dedup();
        if self.strict_namespace {
            self.journal.push(p);
            Ok(())
        } else {
            self.settle(vec![p])
        }
    }

    /// Deletes the trash of operations that became durable.
    fn settle(&mut self, durable: Vec<Pending>) -> Result<(), Errno> {
        for p in durable {
            for t in p.trash {
                let abs = self.abs(&t);
                let r = if abs.is_dir() {
                    fs::remove_dir_all(&abs)
                } else {
                    fs::remove_file(&abs)
                };
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// A fresh name in the trash, relative to the backing root.
    fn trash_name(&mut self) -> PathBuf {
        self.next_trash += 1;
        Path::new(TRASH).join(self.next_trash.to_string())
    }

    /// Moves `rel` into the trash; returns its trash name.
    fn move_to_trash(&mut self, rel: &Path) -> Result<PathBuf, Errno> {
        let t = self.trash_name();
        fs::rename(self.abs(rel), self.abs(&t))?;
        self.move_paths(rel, &t);
        Ok(t)
    }

    /// Syncs the unsynced data of `ino` into the backing file.
    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        self.stats.fsyncs += 1;
        if self.node(ino)?.overlay.is_none() {
            return Ok(());
        }
        self.file(ino)?;
        let n = self.node_mut(ino)?;
        let f = n.file.as_ref().expect("opened above");
        let o = n.overlay.as_ref().expect("checked above");
        o.sync_to(f, f.metadata()?.len())?;
        n.overlay = None;
        if n.opens == 0 {
            n.file = None;
        }
        Ok(())
    }

    /// The power cut: drops every overlay, undoes every uncovered namespace operation (newest
    /// first) and empties the trash. Every later operation fails with EIO.
    pub fn power_cut(&mut self) -> PowerCutReport {
        self.dead = true;
        let mut report = PowerCutReport::default();
        for n in self.nodes.values_mut() {
            if let Some(o) = n.overlay.take() {
                report.files_with_lost_data.push(n.path.clone());
                report.lost_dirty_bytes += o.dirty_bytes();
            }
            n.file = None;
        }
        report.files_with_lost_data.sort();
        self.handles.clear();
        while let Some(p) = self.journal.pop() {
            for u in p.undo {
                if let Err(e) = self.undo(&u) {
                    report.not_reverted.push(format!("{}: {u:?}: {e}", p.what));
                }
            }
            report.reverted.push(p.what);
        }
        let trash = self.abs(Path::new(TRASH));
        if let Err(e) = fs::remove_dir_all(&trash) {
            report
                .not_reverted
                .push(format!("remove {}: {e}", trash.display()));
        }
        report
    }

    fn resolve(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        let p = self
            .nodes
            .get(&parent)
            .ok_or_else(|| io::Error::other("parent directory unknown"))?;
        if p.path.starts_with(TRASH) {
            return Err(io::Error::other("parent directory was removed"));
        }
        Ok(p.path.join(name))
    }

    fn undo(&mut self, u: &Undo) -> io::Result<()> {
        match u {
            Undo::Remove { parent, name } => {
                let rel = self.resolve(*parent, name)?;
                let abs = self.abs(&rel);
                if fs::symlink_metadata(&abs)?.is_dir() {
                    fs::remove_dir_all(&abs)?;
                } else {
                    fs::remove_file(&abs)?;
                }
                self.forget_paths(&rel);
            }
            Undo::Restore {
                trash,
                parent,
                name,
            } => {
                let rel = self.resolve(*parent, name)?;
                fs::rename(self.abs(trash), self.abs(&rel))?;
                self.move_paths(trash, &rel);
            }
            Undo::Rename { from, to } => {
                let old = self.resolve(from.0, &from.1)?;
                let new = self.resolve(to.0, &to.1)?;
                fs::rename(self.abs(&new), self.abs(&old))?;
                self.move_paths(&new, &old);
            }
        }
        Ok(())
    }
}

/// The [`Filesystem`] the session runs: the shared state.
pub struct Fs(pub Arc<Mutex<State>>);

/// Locks `state`, even if a panicking thread poisoned it.
pub fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fs {
    /// Runs `f` on the state unless the power was cut.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> Result<R, Errno>) -> Result<R, Errno> {
        let mut s = lock(&self.0);
        if s.dead {
            return Err(Errno::EIO);
        }
        f(&mut s)
    }
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|s| {
            let rel = s.child(parent.0, name)?;
            let meta = fs::symlink_metadata(s.abs(&rel))?;
            let ino = s.node_for(&rel, kind_of(&meta));
            s.attr(ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.with(|s| {
            let abs = s.abs(&s.node(ino.0)?.path);
            if let Some(m) = mode {
                fs::set_permissions(&abs, fs::Permissions::from_mode(m & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&abs, uid, gid)?;
            }
            if let Some(new) = size {
                let old = s.size(ino.0)?;
                s.check_space(new.saturating_sub(old))?;
                let len = s.file(ino.0)?.metadata()?.len();
                s.node_mut(ino.0)?
                    .overlay
                    .get_or_insert_with(|| Overlay::new(len))
                    .set_size(new);
            }
            s.attr(ino.0)
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.with(|s| {
            let rel = s.child(parent.0, name)?;
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(s.abs(&rel))?;
            s.journal(Pending {
                waits_on: vec![parent.0],
                undo: vec![Undo::Remove {
                    parent: parent.0,
                    name: name.to_owned(),
                }],
                trash: Vec::new(),
                removes_dir: None,
                what: format!("mkdir {}", rel.display()),
            })?;
            let ino = s.node_for(&rel, FileType::Directory);
            s.attr(ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let from = s.child(parent.0, name)?;
            let to = s.child(newparent.0, newname)?;
            let src = fs::symlink_metadata(s.abs(&from))?;
            let dst = match fs::symlink_metadata(s.abs(&to)) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            };
            let mut undo = vec![Undo::Rename {
                from: (parent.0, name.to_owned()),
                to: (newparent.0, newname.to_owned()),
            }];
            let mut trash = Vec::new();
            let mut removes_dir = None;
            if let Some(d) = &dst {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if from == to {
                    return Ok(());
                }
                match (src.is_dir(), d.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) => {
                        if fs::read_dir(s.abs(&to))?.next().is_some() {
                            return Err(Errno::ENOTEMPTY);
                        }
                        removes_dir = s.by_path.get(&to).copied();
                    }
                    (false, false) => {}
                }
                let t = s.move_to_trash(&to)?;
                undo.push(Undo::Restore {
                    trash: t.clone(),
                    parent: newparent.0,
                    name: newname.to_owned(),
                });
                trash.push(t);
            }
            if let Err(e) = fs::rename(s.abs(&from), s.abs(&to)) {
                if let Some(t) = trash.first() {
                    let _ = fs::rename(s.abs(t), s.abs(&to));
                    s.move_paths(&t.clone(), &to);
                }
                return Err(e.into());
            }
            s.move_paths(&from, &to);
            s.journal(Pending {
                waits_on: vec![parent.0, newparent.0],
                undo,
                trash,
                removes_dir,
                what: format!("rename {} -> {}", from.display(), to.display()),
            })
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| {
            s.file(ino.0)?;
            let n = s.node_mut(ino.0)?;
            n.opens += 1;
            let direct = s.faulty(&s.node(ino.0)?.path);
            let fh = s.new_fh(Open::File);
            Ok((fh, direct))
        }) {
            Ok((fh, direct)) => reply.opened(
                FileHandle(fh),
                if direct {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                },
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|s| {
            let want = offset..offset + size as u64;
            let path = s.node(ino.0)?.path.clone();
            if let Some(f) = s
                .faults
                .iter()
                .find(|f| (f.matcher)(&path) && f.range.as_ref().is_none_or(|r| overlaps(r, &want)))
            {
                f.hits.fetch_add(1, Ordering::Relaxed);
                return Err(Errno::from_i32(f.errno));
            }
            s.file(ino.0)?;
            let n = s.node(ino.0)?;
            let file = n.file.as_ref().expect("opened above");
            match &n.overlay {
                Some(o) => Ok(o.read(file, offset, size as u64)?),
                None => {
                    let mut buf = vec![0u8; size as usize];
                    let mut done = 0;
                    while done < buf.len() {
                        match file.read_at(&mut buf[done..], offset + done as u64)? {
                            0 => break,
                            n => done += n,
                        }
                    }
                    buf.truncate(done);
                    Ok(buf)
                }
            }
        }) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|s| {
            let size = s.size(ino.0)?;
            s.check_space((offset + data.len() as u64).saturating_sub(size))?;
            s.file(ino.0)?;
            let n = s.node_mut(ino.0)?;
            let file = n.file.as_ref().expect("opened above");
            if n.overlay.is_none() {
                n.overlay = Some(Overlay::new(file.metadata()?.len()));
            }
            let o = n.overlay.as_mut().expect("set above");
            o.write(file, offset, data)?;
            s.stats.writes += 1;
            Ok(())
        }) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing a file is not durability: nothing moves from the overlay.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.0);
        s.handles.remove(&fh.0);
        if let Some(n) = s.nodes.get_mut(&ino.0) {
            n.opens = n.opens.saturating_sub(1);
            if n.opens == 0 && n.overlay.is_none() {
                n.file = None;
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| s.sync_file(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| {
            let n = s.node(ino.0)?;
            let dir = n.path.clone();
            let parent = dir
                .parent()
                .and_then(|p| s.by_path.get(p).copied())
                .unwrap_or(INodeNo::ROOT.0);
            let mut entries = vec![
                (OsString::from("."), FileType::Directory, ino.0),
                (OsString::from(".."), FileType::Directory, parent),
            ];
            let mut names: Vec<(OsString, FileType)> = Vec::new();
            for e in fs::read_dir(s.abs(&dir))? {
                let e = e?;
                if ino.0 == INodeNo::ROOT.0 && e.file_name() == TRASH {
                    continue;
                }
                let kind = e
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                names.push((e.file_name(), kind));
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, kind) in names {
                let child = s.node_for(&dir.join(&name), kind);
                entries.push((name, kind, child));
            }
            Ok(s.new_fh(Open::Dir(entries)))
        }) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = lock(&self.0);
        if s.dead {
            return reply.error(Errno::EIO);
        }
        let Some(Open::Dir(entries)) = s.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, kind, ino)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.0).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| {
            s.stats.dir_fsyncs += 1;
            let durable = namespace::cover(&mut s.journal, ino.0);
            s.settle(durable)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = lock(&self.0);
        let (blocks, free) = match s.space_limit {
            Some(limit) => {
                let used = s.used_bytes();
                (limit / 4096, limit.saturating_sub(used) / 4096)
            }
            None => (1 << 32, 1 << 32),
        };
        reply.statfs(blocks, free, free, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|s| {
            let rel = s.child(parent.0, name)?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode & !umask & 0o7777)
                .open(s.abs(&rel))?;
            s.journal(Pending {
                waits_on: vec![parent.0],
                undo: vec![Undo::Remove {
                    parent: parent.0,
                    name: name.to_owned(),
                }],
                trash: Vec::new(),
                removes_dir: None,
                what: format!("create {}", rel.display()),
            })?;
            let ino = s.node_for(&rel, FileType::RegularFile);
            let n = s.node_mut(ino)?;
            n.file = Some(f);
            n.overlay = None;
            n.opens += 1;
            let direct = s.faulty(&rel);
            let fh = s.new_fh(Open::File);
            Ok((s.attr(ino)?, fh, direct))
        }) {
            Ok((a, fh, direct)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                if direct {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                },
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| {
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Err(Errno::from_i32(libc::EOPNOTSUPP));
            }
            if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Ok(());
            }
            let size = s.size(ino.0)?;
            let end = offset + length;
            if end > size {
                s.check_space(end - size)?;
                let len = s.file(ino.0)?.metadata()?.len();
                s.node_mut(ino.0)?
                    .overlay
                    .get_or_insert_with(|| Overlay::new(len))
                    .set_size(end);
            }
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Fs {
    /// unlink (`dir == false`) or rmdir: the name moves to the trash until it is durable.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        match self.with(|s| {
            let rel = s.child(parent.0, name)?;
            let meta = fs::symlink_metadata(s.abs(&rel))?;
            if dir {
                if !meta.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                if fs::read_dir(s.abs(&rel))?.next().is_some() {
                    return Err(Errno::ENOTEMPTY);
                }
            } else if meta.is_dir() {
                return Err(Errno::EISDIR);
            }
            let removed = s.by_path.get(&rel).copied();
            let t = s.move_to_trash(&rel)?;
            s.journal(Pending {
                waits_on: vec![parent.0],
                undo: vec![Undo::Restore {
                    trash: t.clone(),
                    parent: parent.0,
                    name: name.to_owned(),
                }],
                trash: vec![t],
                removes_dir: if dir { removed } else { None },
                what: format!("{} {}", if dir { "rmdir" } else { "unlink" }, rel.display()),
            })
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// Whether two byte ranges overlap.
fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}
