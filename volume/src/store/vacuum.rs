//! Online compaction (vacuum) of one volume: the live needles are copied to a new `.dat`
//! beside the old one, the writes that arrived meanwhile are replayed onto it, and it is
//! swapped in, while reads and writes go on.
//!
//! # Protocol
//! 1. **Copy** (no lock; reads and writes go on): snapshot the index and the published end
//!    `E0` together (the syncer moves `end` under the index lock), copy every live record
//!    verbatim (checksum verified) in offset order to `<stem>.cpd` after a fresh superblock,
//!    with its row in `<stem>.cpx`. A record that fails its checksum stops the compaction:
//!    vacuum never drops a byte it cannot vouch for.
//! 2. **Replay** (on the appender thread, so writes wait in its queue; reads go on): wait
//!    until the syncer has committed every batch appended so far, then copy every record of
//!    the old `.dat` from `E0` to its end (writes and tombstones, in order) onto the copy.
//! 3. **Sync**: `fsync` the `.cpd` and the `.cpx`.
//! 4. **Commit marker**: write `<stem>.cpc` (temp file, fsync, rename, fsync of the directory)
//!    holding the lengths of the `.cpd` and `.cpx`. From here on the compaction is decided.
//! 5. **Swap**: rename `.cpd` over `.dat`, `.cpx` over `.idx`, fsync the directory, remove the
//!    marker, fsync the directory; then, under the index's write lock, point reads, the
//!    appender and the syncer at the new files.
//!
//! # Crash safety
//! On open (`finish_or_discard`, before the volume's files are read):
//! - a marker present means steps 1–4 completed: the renames of step 5 that did not happen
//!   are done (each `.cpd`/`.cpx` still present must have the length the marker names), then
//!   the marker is removed — the new volume, whole;
//! - no marker means the old `.dat`/`.idx` were never touched: any `.cpd`/`.cpx` are
//!   removed — the old volume, whole.
//!
//! No acknowledged needle is lost either way: until the marker exists every acknowledged
//! write is in the old `.dat`, and no write is appended between the replay and the swap (the
//! appender is doing the compaction), so the copy holds every acknowledged write when it is
//! committed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::ids::VolumeId;

use super::idx::IdxRow;
use super::needle;
use super::volume::{Loc, apply_row};
use super::{SUPERBLOCK_LEN, VolumeError};

/// The compaction steps at which tests simulate a crash (see `Faults::crash_compaction_at`).
pub const CRASH_STEPS: [&str; 5] = ["copied", "synced", "marked", "dat_renamed", "renamed"];

/// The files of one compaction.
pub(crate) struct Paths {
    pub(crate) dat: PathBuf,
    pub(crate) idx: PathBuf,
    pub(crate) cpd: PathBuf,
    pub(crate) cpx: PathBuf,
    pub(crate) marker: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Paths {
    pub(crate) fn new(dir: &Path, stem: &str) -> Self {
        Self {
            dat: dir.join(format!("{stem}.dat")),
            idx: dir.join(format!("{stem}.idx")),
            cpd: dir.join(format!("{stem}.cpd")),
            cpx: dir.join(format!("{stem}.cpx")),
            marker: dir.join(format!("{stem}.cpc")),
            dir: dir.to_path_buf(),
        }
    }
}

/// The compacted copy being built.
pub(crate) struct Copy {
    pub(crate) dat: File,
    pub(crate) idx: File,
    pub(crate) dat_len: u64,
    pub(crate) idx_len: u64,
    pub(crate) index: HashMap<u64, Loc>,
    pub(crate) max_key: u64,
}

fn io_err(volume: VolumeId, op: &'static str) -> impl Fn(io::Error) -> VolumeError {
    move |source| VolumeError::Io { volume, op, source }
}

/// Finishes or discards a compaction a crash interrupted (see the module docs). Runs before
/// the volume's files are opened.
pub(crate) fn finish_or_discard(volume: VolumeId, p: &Paths) -> Result<(), VolumeError> {
    let io = |op| io_err(volume, op);
    match std::fs::read_to_string(&p.marker) {
        Ok(text) => {
            let lens: Vec<u64> = text
                .split_whitespace()
                .filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse().ok()))
                .collect();
            let [dat_len, idx_len] = lens[..] else {
                return Err(VolumeError::Corrupt {
                    volume,
                    what: format!("compaction marker {} is unreadable", p.marker.display()),
                });
            };
            for (from, to, len) in [(&p.cpd, &p.dat, dat_len), (&p.cpx, &p.idx, idx_len)] {
                match std::fs::metadata(from) {
                    Ok(m) if m.len() == len => {
                        std::fs::rename(from, to).map_err(io("rename compacted file"))?
                    }
                    Ok(m) => {
                        return Err(VolumeError::Corrupt {
                            volume,
                            what: format!(
                                "{} is {} bytes, its compaction marker says {len}",
                                from.display(),
                                m.len()
                            ),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("stat compacted file")(e)),
                }
            }
            common::fs::fsync_dir(&p.dir).map_err(io("fsync dir"))?;
            std::fs::remove_file(&p.marker).map_err(io("remove compaction marker"))?;
            common::fs::fsync_dir(&p.dir).map_err(io("fsync dir"))?;
            tracing::warn!(
                volume,
                "finished a compaction a crash interrupted after its commit marker"
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut removed = false;
            for f in [&p.cpd, &p.cpx] {
                match std::fs::remove_file(f) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove unfinished compaction")(e)),
                }
            }
            if removed {
                common::fs::fsync_dir(&p.dir).map_err(io("fsync dir"))?;
                tracing::warn!(
                    volume,
                    "discarded a compaction a crash interrupted before its commit marker; the volume is as before it"
                );
            }
            Ok(())
        }
        Err(e) => Err(io("read compaction marker")(e)),
    }
}

/// Step 1: copies the live records of `snapshot` (in `old`) to a new `.cpd`/`.cpx`.
pub(crate) fn copy_live(
    volume: VolumeId,
    p: &Paths,
    superblock: &[u8],
    old: &File,
    snapshot: &HashMap<u64, Loc>,
) -> Result<Copy, VolumeError> {
    let io = |op| io_err(volume, op);
    let create = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    };
    let dat = create(&p.cpd).map_err(io("create cpd"))?;
    let idx = create(&p.cpx).map_err(io("create cpx"))?;
    let mut live: Vec<(u64, Loc)> = snapshot.iter().map(|(k, l)| (*k, *l)).collect();
    live.sort_by_key(|(_, l)| l.offset);
    let mut copy = Copy {
        dat,
        idx,
        dat_len: 0,
        idx_len: 0,
        index: HashMap::with_capacity(live.len()),
        max_key: 0,
    };
    let (dat_w, idx_w) = (
        copy.dat.try_clone().map_err(io("clone cpd"))?,
        copy.idx.try_clone().map_err(io("clone cpx"))?,
    );
    let mut dat_out = BufWriter::with_capacity(1 << 20, dat_w);
    let mut idx_out = BufWriter::with_capacity(64 << 10, idx_w);
    dat_out.write_all(superblock).map_err(io("write cpd"))?;
    copy.dat_len = SUPERBLOCK_LEN;
    let mut buf = Vec::new();
    for (key, loc) in live {
        buf.resize(needle::record_len(loc.size) as usize, 0);
        old.read_exact_at(&mut buf, loc.offset)
            .map_err(io("read live needle"))?;
        match needle::decode(&buf) {
            Ok(r) if r.header.key == key && r.needle.is_some() => {}
            _ => {
                return Err(VolumeError::Corrupt {
                    volume,
                    what: format!(
                        "needle {key:x} at offset {} fails its checksum; not compacting",
                        loc.offset
                    ),
                });
            }
        }
        append(&mut copy, &mut dat_out, &mut idx_out, &buf, volume)?;
    }
    dat_out.flush().map_err(io("write cpd"))?;
    idx_out.flush().map_err(io("write cpx"))?;
    drop((dat_out, idx_out));
    Ok(copy)
}

/// Appends one verbatim record (a needle or a tombstone) to the copy, with its row.
fn append(
    copy: &mut Copy,
    dat_out: &mut impl Write,
    idx_out: &mut impl Write,
    record: &[u8],
    volume: VolumeId,
) -> Result<(), VolumeError> {
    let mut h = [0u8; needle::HEADER_LEN];
    h.copy_from_slice(&record[..needle::HEADER_LEN]);
    let h = needle::Header::decode(&h);
    let row = IdxRow {
        key: h.key,
        offset_units: (copy.dat_len / needle::ALIGN) as u32,
        size: if h.size == 0 { -1 } else { h.size as i32 },
    };
    dat_out
        .write_all(record)
        .map_err(io_err(volume, "write cpd"))?;
    idx_out
        .write_all(&row.encode())
        .map_err(io_err(volume, "write cpx"))?;
    let mut deletes = 0;
    apply_row(&mut copy.index, &row, h.cookie, &mut deletes);
    copy.max_key = copy.max_key.max(h.key);
    copy.dat_len += record.len() as u64;
    copy.idx_len += super::idx::ROW_LEN as u64;
    Ok(())
}

/// Step 2: appends every record of `old` in `[from, to)` to the copy, in order.
pub(crate) fn replay(
    volume: VolumeId,
    copy: &mut Copy,
    old: &File,
    from: u64,
    to: u64,
) -> Result<u64, VolumeError> {
    let io = |op| io_err(volume, op);
    let (dat, idx) = (
        copy.dat.try_clone().map_err(io("clone cpd"))?,
        copy.idx.try_clone().map_err(io("clone cpx"))?,
    );
    let mut dat_out = Appender {
        file: &dat,
        pos: copy.dat_len,
    };
    let mut idx_out = Appender {
        file: &idx,
        pos: copy.idx_len,
    };
    let mut pos = from;
    let mut replayed = 0;
    let mut head = [0u8; needle::HEADER_LEN];
    let mut buf = Vec::new();
    while pos < to {
        old.read_exact_at(&mut head, pos)
            .map_err(io("read replayed record"))?;
        let len = needle::Header::decode(&head).record_len();
        buf.resize(len as usize, 0);
        old.read_exact_at(&mut buf, pos)
            .map_err(io("read replayed record"))?;
        needle::decode(&buf).map_err(|e| VolumeError::Corrupt {
            volume,
            what: format!("record at offset {pos} written during the compaction: {e}"),
        })?;
        append(copy, &mut dat_out, &mut idx_out, &buf, volume)?;
        pos += len;
        replayed += 1;
    }
    Ok(replayed)
}

/// Positional writes at the end of a file (the copy's handles are shared with the syncer
/// later, so no cursor is relied on).
struct Appender<'a> {
    file: &'a File,
    pos: u64,
}

impl Write for Appender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Step 3: syncs the copy.
pub(crate) fn sync_copy(volume: VolumeId, copy: &Copy) -> Result<(), VolumeError> {
    let io = |op| io_err(volume, op);
    copy.dat.sync_all().map_err(io("sync cpd"))?;
    copy.idx.sync_all().map_err(io("sync cpx"))?;
    Ok(())
}

/// Step 4: the commit marker.
pub(crate) fn mark(volume: VolumeId, p: &Paths, copy: &Copy) -> Result<(), VolumeError> {
    let text = format!("dat_len={} idx_len={}\n", copy.dat_len, copy.idx_len);
    common::fs::durable_overwrite(&p.marker, text.as_bytes())
        .map_err(io_err(volume, "write compaction marker"))
}

/// Step 5, on disk: the renames and the marker's removal, each made durable. `crash` is
/// asked after the `.dat` rename and after both (tests stop there).
pub(crate) fn swap_files(
    volume: VolumeId,
    p: &Paths,
    crash: impl Fn(&'static str) -> bool,
) -> Result<(), VolumeError> {
    let io = |op| io_err(volume, op);
    std::fs::rename(&p.cpd, &p.dat).map_err(io("rename cpd"))?;
    if crash("dat_renamed") {
        return Err(simulated_crash(volume, "dat_renamed"));
    }
    std::fs::rename(&p.cpx, &p.idx).map_err(io("rename cpx"))?;
    common::fs::fsync_dir(&p.dir).map_err(io("fsync dir"))?;
    if crash("renamed") {
        return Err(simulated_crash(volume, "renamed"));
    }
    std::fs::remove_file(&p.marker).map_err(io("remove compaction marker"))?;
    common::fs::fsync_dir(&p.dir).map_err(io("fsync dir"))?;
    Ok(())
}

/// Removes a copy that will not be committed (before its marker exists).
pub(crate) fn discard(p: &Paths) {
    for f in [&p.cpd, &p.cpx] {
        if let Err(e) = std::fs::remove_file(f)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %f.display(), error = %e, "cannot remove a discarded compaction file; the next start removes it");
        }
    }
}

/// The error a simulated crash stops a compaction with (tests only arm it).
pub(crate) fn simulated_crash(volume: VolumeId, step: &'static str) -> VolumeError {
    VolumeError::Io {
        volume,
        op: "compaction (simulated crash)",
        source: io::Error::other(format!("simulated crash at step {step}")),
    }
}

#[cfg(test)]
mod tests;
