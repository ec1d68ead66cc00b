//! Recovery of one volume when it is opened: rebuild the in-memory index from the `.idx` and the
//! `.dat`, without ever destroying a byte that could hold an acknowledged needle.
//!
//! # Invariant
//! Recovery never cuts an acknowledged needle. The only bytes it ever removes from the `.dat`
//! are a torn tail: what follows the last complete, checksum-valid record when no valid needle
//! follows anywhere after it, and only once a copy of them is durably set aside. A corrupt
//! region followed by a valid needle is skipped, not cut; an I/O error stops recovery with
//! nothing cut or rewritten and the volume read-only. The `.idx` is only cut back to its rows
//! validated against the needle headers they point at, then extended with the rows the scan
//! re-derives from the `.dat`.
//!
//! # Why the `.idx` cannot be trusted as is
//! The `.idx` is never fsynced (a needle is durable once its `.dat` record is synced), so after a
//! power cut its durable prefix can end anywhere before the last acknowledged needle, and its
//! unsynced tail can hold zeros or stale blocks. Rows also carry no checksum, so a flipped
//! offset would start the `.dat` scan in the middle of a needle.
//!
//! # How rows are validated
//! Every row is checked against the record it points at: the row must be plausible (a real
//! key, a size of -1 or more), lie inside the `.dat`, start at or after the end of the previous
//! row's record (rows are appended in `.dat` order), and the 16-byte needle header at its offset
//! must carry the same key and the same size (0 for the tombstone of a deletion row). The first
//! row that fails ends the usable index: it and every later row are dropped, the `.idx` is cut
//! to the good prefix, and the `.dat` is scanned from the end of the last good row, which
//! re-derives every dropped row that points at a real record.
//!
//! We chose this over a new checksummed row format because it is robust against everything a
//! row checksum catches *and* more, with no format change: a row that is torn, zeroed, stale,
//! flipped in any field, or written for data a crash lost (`fsync=false`) no longer matches the
//! header it names; no upgrade path or dual reader is needed, and old volumes are protected
//! at once. The header check costs one small read per row. The needle's CRC is not checked here
//! because it does not decide where records lie (the header does) and is verified on every read
//! and by the start-up scrub; a row whose body is corrupt keeps pointing at its needle, so the
//! needle is answered "corrupt" (500, counted), never silently "not found".
//!
//! # How the `.dat` is scanned
//! From the end of the last good row, each complete record whose checksum holds is re-indexed.
//! At a record that is not a valid needle, the scan looks for the next valid needle: first
//! right after the bad record if its header's size is plausible (a flipped bit in a body), else
//! at every following 8-byte boundary. A candidate must pass cheap structural checks (its body
//! lengths add up to its size) and then the CRC-32C of header and body.
//! - A valid needle follows: the bad region in between is **skipped, not cut** (ERROR log with
//!   offsets, `corrupt_regions` and `bytes_skipped` metrics) and the scan goes on from it.
//! - No valid needle follows: the region is a torn tail. It is first copied to
//!   `<name>.dat.torn.<unix ms>` (fsynced, directory fsynced), then cut from the `.dat`.
//!
//! An I/O error that is not a clean end of file (EIO from a bad sector, say) is never taken for a
//! torn tail: recovery stops, cuts nothing, rewrites nothing, and the volume is opened read-only
//! (poisoned, reported in `/status`, metrics and logs) with the rows it could read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::ids::VolumeId;

use super::SUPERBLOCK_LEN;
use super::VolumeError;
use super::faults::{Faults, SyncedFile};
use super::idx::{self, IdxRow};
use super::needle::{self, Header, Record};
use super::volume::{Loc, apply_row};
use crate::metrics::Metrics;

/// Bytes read at once for headers while scanning: small, so validating the rows of big
/// needles reads little more than their headers.
const WINDOW: usize = 16 << 10;
/// Bytes copied at once when a torn tail is set aside.
const COPY_CHUNK: usize = 1 << 20;

/// What recovery found when the volume was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Needles re-indexed from the `.dat` past the last `.idx` row.
    pub needles_recovered: u64,
    /// Bytes cut from a torn `.dat` tail (no valid needle after them); copied aside first.
    pub bytes_cut: u64,
    /// Where the cut tail was copied (`<name>.dat.torn.<unix ms>`).
    pub torn_copy: Option<PathBuf>,
    /// Corrupt regions followed by valid needles: skipped, left in place.
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub bytes_skipped: u64,
    /// `.idx` rows dropped (torn, zeroed, pointing past the `.dat`, or not matching the needle
    /// header they point at); the scan re-derives them.
    pub idx_rows_dropped: u64,
    /// The I/O error that stopped recovery; the volume is then read-only and nothing was cut.
    pub io_error: Option<String>,
    /// Whether the superblock had no checksum (written by an older Kelp).
    pub unchecked_superblock: bool,
}

/// What recovery rebuilt.
pub(crate) struct Recovered {
    pub index: HashMap<u64, Loc>,
    pub delete_count: u64,
    pub max_key: u64,
    /// Where the next record goes.
    pub end: u64,
    /// Bytes of valid rows in the `.idx`.
    pub idx_len: u64,
    pub report: RecoveryReport,
    /// Set when an I/O error stopped recovery: the volume must not take writes.
    pub failure: Option<String>,
}

/// Reads of the `.dat` during recovery: a window for sequential headers, direct reads for the
/// rest, every read checked against the fault plan. A read past `len` is a clean short read;
/// any other failure is an I/O error.
struct Scanner<'a> {
    file: &'a File,
    faults: &'a Faults,
    len: u64,
    win: Vec<u8>,
    win_start: u64,
    direct: Vec<u8>,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a File, faults: &'a Faults, len: u64) -> Self {
        Self {
            file,
            faults,
            len,
            win: Vec::new(),
            win_start: 0,
            direct: Vec::new(),
        }
    }

    fn pread(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.faults.check_read(pos, buf.len())?;
        self.file.read_exact_at(buf, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // Inside the length we measured: the file shrank under us. Not a torn tail.
                io::Error::other(format!("dat shrank during recovery: {e}"))
            } else {
                e
            }
        })
    }

    /// `n` bytes at `pos` through the window (for sequential reads); `None` past the end.
    fn window(&mut self, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        if pos + n as u64 > self.len {
            return Ok(None);
        }
        let in_window =
            pos >= self.win_start && pos + n as u64 <= self.win_start + self.win.len() as u64;
        if !in_window {
            if n > WINDOW {
                return self.direct(pos, n);
            }
            let fill = (self.len - pos).min(WINDOW as u64) as usize;
            let mut win = std::mem::take(&mut self.win);
            win.resize(fill, 0);
            let res = self.pread(&mut win, pos);
            self.win = win;
            if res.is_err() {
                // A bad sector somewhere in the window: read only what is asked for.
                self.win.clear();
                return self.direct(pos, n);
            }
            self.win_start = pos;
        }
        let at = (pos - self.win_start) as usize;
        Ok(Some(&self.win[at..at + n]))
    }

    /// `n` bytes at `pos`, from the window if there, else read directly without moving it.
    fn direct(&mut self, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        if pos + n as u64 > self.len {
            return Ok(None);
        }
        if pos >= self.win_start && pos + n as u64 <= self.win_start + self.win.len() as u64 {
            let at = (pos - self.win_start) as usize;
            return Ok(Some(&self.win[at..at + n]));
        }
        let mut buf = std::mem::take(&mut self.direct);
        buf.resize(n, 0);
        let res = self.pread(&mut buf, pos);
        self.direct = buf;
        res?;
        Ok(Some(&self.direct[..n]))
    }

    fn header(&mut self, pos: u64) -> io::Result<Option<Header>> {
        Ok(self.window(pos, needle::HEADER_LEN)?.map(|b| {
            let mut h = [0u8; needle::HEADER_LEN];
            h.copy_from_slice(b);
            Header::decode(&h)
        }))
    }

    fn byte(&mut self, pos: u64) -> io::Result<Option<u8>> {
        Ok(self.direct(pos, 1)?.map(|b| b[0]))
    }
}

/// What lies at an offset of the `.dat`.
enum Probe {
    /// A complete record whose checksum holds.
    Needle(Record),
    /// Anything else; `crc_mismatch` when only the checksum failed.
    NotANeedle { crc_mismatch: bool },
}

/// Whether a header could start a record that fits in the file.
fn plausible_header(h: &Header, pos: u64, len: u64) -> bool {
    h.size <= needle::MAX_BODY_SIZE && pos + h.record_len() <= len
}

/// Whether the body of the needle whose header is `h` at `pos` has inner lengths that add up
/// to its size (read a few bytes, not the body).
fn body_lengths_add_up(sc: &mut Scanner<'_>, pos: u64, h: &Header) -> io::Result<bool> {
    if h.size == 0 {
        return Ok(true);
    }
    let body = pos + needle::HEADER_LEN as u64;
    let Some(ds) = sc.direct(body, 4)? else {
        return Ok(false);
    };
    let data_size = u64::from(u32::from_be_bytes([ds[0], ds[1], ds[2], ds[3]]));
    let size = u64::from(h.size);
    let mut used = 4 + data_size + 1;
    if used > size {
        return Ok(false);
    }
    let Some(flags) = sc.byte(body + 4 + data_size)? else {
        return Ok(false);
    };
    if flags & !needle::KNOWN_FLAGS != 0 {
        return Ok(false);
    }
    for bit in [needle::HAS_NAME, needle::HAS_MIME] {
        if flags & bit != 0 {
            if used + 1 > size {
                return Ok(false);
            }
            let Some(n) = sc.byte(body + used)? else {
                return Ok(false);
            };
            used += 1 + u64::from(n);
        }
    }
    if flags & needle::HAS_LAST_MODIFIED != 0 {
        used += 8;
    }
    Ok(used == size)
}

/// Decodes the record at `pos` if it is a valid needle or tombstone. `searching` (looking for
/// a needle at any 8-byte boundary, not following the previous record) also requires a key
/// other than 0, which the master never assigns.
fn probe(sc: &mut Scanner<'_>, pos: u64, searching: bool) -> io::Result<Probe> {
    let not = Probe::NotANeedle {
        crc_mismatch: false,
    };
    let Some(h) = sc.header(pos)? else {
        return Ok(not);
    };
    if (searching && h.key == 0)
        || !plausible_header(&h, pos, sc.len)
        || !body_lengths_add_up(sc, pos, &h)?
    {
        return Ok(not);
    }
    let n = h.record_len() as usize;
    let Some(buf) = sc.direct(pos, n)? else {
        return Ok(not);
    };
    Ok(match needle::decode(buf) {
        Ok(rec) => Probe::Needle(rec),
        Err(needle::NeedleError::Checksum { .. }) => Probe::NotANeedle { crc_mismatch: true },
        Err(_) => not,
    })
}

/// The offset of the next valid needle after the bad record at `pos`, if any.
fn find_next(sc: &mut Scanner<'_>, pos: u64) -> io::Result<Option<u64>> {
    // A flipped bit inside a body leaves the header right: try right after the bad record.
    if let Some(h) = sc.header(pos)?
        && plausible_header(&h, pos, sc.len)
    {
        let next = pos + h.record_len();
        if next < sc.len && matches!(probe(sc, next, false)?, Probe::Needle(_)) {
            return Ok(Some(next));
        }
    }
    let mut q = pos + needle::ALIGN;
    while q + needle::record_len(0) <= sc.len {
        if matches!(probe(sc, q, true)?, Probe::Needle(_)) {
            return Ok(Some(q));
        }
        q += needle::ALIGN;
    }
    Ok(None)
}

/// Copies `[from, len)` of the `.dat` to `<dat>.torn.<unix ms>`, durably; returns its path.
fn copy_aside(sc: &Scanner<'_>, dat_path: &Path, from: u64) -> io::Result<PathBuf> {
    let mut name = dat_path.as_os_str().to_owned();
    name.push(format!(".torn.{}", common::time::now_ms()));
    let path = PathBuf::from(name);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut pos = from;
    while pos < sc.len {
        let n = (sc.len - pos).min(COPY_CHUNK as u64) as usize;
        sc.pread(&mut buf[..n], pos)?;
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.sync_all()?;
    if let Some(dir) = path.parent() {
        common::fs::fsync_dir(dir)?;
    }
    Ok(path)
}

/// Rebuilds the index of volume `id` (see the module docs). `Err` only for failures to change
/// the files (cutting the idx or the tail); I/O errors while reading are in `failure`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn recover(
    id: VolumeId,
    dat: &File,
    dat_path: &Path,
    dat_len: u64,
    idx_file: &File,
    idx_bytes: &[u8],
    metrics: &Metrics,
    faults: &Faults,
) -> Result<Recovered, VolumeError> {
    let io = |op: &'static str| {
        move |source| VolumeError::Io {
            volume: id,
            op,
            source,
        }
    };
    let mut sc = Scanner::new(dat, faults, dat_len);
    let mut report = RecoveryReport::default();
    let (rows, _) = idx::decode_all(idx_bytes);
    let mut index: HashMap<u64, Loc> = HashMap::new();
    let mut delete_count = 0u64;
    let mut max_key = 0u64;
    let mut indexed_end = SUPERBLOCK_LEN;
    let mut good_rows = 0usize;
    let mut failure: Option<String> = None;
    for row in &rows {
        let end = row.offset() + needle::record_len(row.body_size());
        if !row.is_plausible() || row.offset() < indexed_end || end > dat_len {
            break;
        }
        let mut cookie = 0;
        if failure.is_none() {
            match sc.header(row.offset()) {
                Ok(Some(h)) if h.key == row.key && h.size == row.body_size() => cookie = h.cookie,
                Ok(_) => {
                    tracing::warn!(
                        volume = id,
                        row = good_rows,
                        key = format_args!("{:x}", row.key),
                        offset = row.offset(),
                        "idx row does not match the needle header it points at"
                    );
                    break;
                }
                Err(e) => {
                    // Keep the remaining in-bounds rows unvalidated (every read checks the
                    // needle's CRC) but change nothing on disk.
                    failure = Some(format!(
                        "read error at offset {} while validating the idx: {e}",
                        row.offset()
                    ));
                }
            }
        }
        apply_row(&mut index, row, cookie, &mut delete_count);
        max_key = max_key.max(row.key);
        indexed_end = end;
        good_rows += 1;
    }
    report.idx_rows_dropped = (rows.len() - good_rows) as u64;
    let good_idx_len = (good_rows * idx::ROW_LEN) as u64;
    if let Some(reason) = failure {
        return Ok(failed(
            id,
            metrics,
            index,
            delete_count,
            max_key,
            dat_len,
            good_idx_len,
            report,
            reason,
        ));
    }
    if report.idx_rows_dropped > 0 {
        tracing::warn!(
            volume = id,
            dropped = report.idx_rows_dropped,
            "idx rows past the usable index dropped; re-scanning the dat"
        );
    }
    if good_idx_len != idx_bytes.len() as u64 {
        idx_file.set_len(good_idx_len).map_err(io("truncate idx"))?;
    }

    let mut pos = indexed_end;
    let mut new_rows = Vec::new();
    let mut failure = None;
    while pos < dat_len {
        let probed = match probe(&mut sc, pos, false) {
            Ok(p) => p,
            Err(e) => {
                failure = Some(format!("read error at offset {pos} while scanning: {e}"));
                break;
            }
        };
        match probed {
            Probe::Needle(rec) => {
                let row = IdxRow {
                    key: rec.header.key,
                    offset_units: (pos / needle::ALIGN) as u32,
                    size: if rec.needle.is_none() {
                        -1
                    } else {
                        rec.header.size as i32
                    },
                };
                apply_row(&mut index, &row, rec.header.cookie, &mut delete_count);
                max_key = max_key.max(row.key);
                new_rows.extend_from_slice(&row.encode());
                report.needles_recovered += 1;
                pos += rec.header.record_len();
            }
            Probe::NotANeedle { crc_mismatch } => {
                if crc_mismatch {
                    metrics.crc_failures.inc();
                }
                let next = match find_next(&mut sc, pos) {
                    Ok(n) => n,
                    Err(e) => {
                        failure = Some(format!(
                            "read error after offset {pos} while looking for the next needle: {e}"
                        ));
                        break;
                    }
                };
                match next {
                    Some(next) => {
                        report.corrupt_regions += 1;
                        report.bytes_skipped += next - pos;
                        tracing::error!(
                            volume = id,
                            offset = pos,
                            bytes = next - pos,
                            next_needle = next,
                            "corrupt region in the dat is followed by valid needles; skipped, not cut"
                        );
                        pos = next;
                    }
                    None => {
                        let copy = match copy_aside(&sc, dat_path, pos) {
                            Ok(p) => p,
                            Err(e) => {
                                failure = Some(format!(
                                    "cannot copy the torn tail at offset {pos} aside: {e}"
                                ));
                                break;
                            }
                        };
                        report.bytes_cut = dat_len - pos;
                        tracing::warn!(
                            volume = id,
                            offset = pos,
                            bytes_cut = report.bytes_cut,
                            copy = %copy.display(),
                            "cutting the torn tail of the dat (no valid needle follows); a copy is kept"
                        );
                        report.torn_copy = Some(copy);
                        dat.set_len(pos).map_err(io("truncate dat"))?;
                        dat.sync_all().map_err(io("sync dat"))?;
                        faults.synced(SyncedFile::Dat, pos);
                        break;
                    }
                }
            }
        }
    }
    if let Some(reason) = failure {
        // Nothing was changed in the .dat; rows found so far stay in memory only.
        return Ok(failed(
            id,
            metrics,
            index,
            delete_count,
            max_key,
            dat_len,
            good_idx_len,
            report,
            reason,
        ));
    }
    if !new_rows.is_empty() {
        idx_file
            .write_all_at(&new_rows, good_idx_len)
            .map_err(io("append idx"))?;
        idx_file.sync_data().map_err(io("sync idx"))?;
        faults.synced(SyncedFile::Idx, good_idx_len + new_rows.len() as u64);
        tracing::info!(
            volume = id,
            needles = report.needles_recovered,
            "re-indexed needles past the last idx row"
        );
    }
    metrics.needles_recovered.inc_by(report.needles_recovered);
    metrics.bytes_cut.inc_by(report.bytes_cut);
    metrics.idx_rows_dropped.inc_by(report.idx_rows_dropped);
    metrics.corrupt_regions.inc_by(report.corrupt_regions);
    metrics.bytes_skipped.inc_by(report.bytes_skipped);
    Ok(Recovered {
        index,
        delete_count,
        max_key,
        end: pos,
        idx_len: good_idx_len + new_rows.len() as u64,
        report,
        failure: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn failed(
    id: VolumeId,
    metrics: &Metrics,
    index: HashMap<u64, Loc>,
    delete_count: u64,
    max_key: u64,
    dat_len: u64,
    idx_len: u64,
    mut report: RecoveryReport,
    reason: String,
) -> Recovered {
    tracing::error!(
        volume = id,
        reason = %reason,
        "volume recovery stopped by an I/O error; nothing was cut, the volume is read-only"
    );
    metrics.recovery_io_errors.inc();
    report.io_error = Some(reason.clone());
    Recovered {
        index,
        delete_count,
        max_key,
        end: dat_len,
        idx_len,
        report,
        failure: Some(reason),
    }
}

#[cfg(test)]
mod tests;
