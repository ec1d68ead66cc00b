//! The volatile page cache of one file: the bytes written since its last fsync, kept in memory
//! over the backing file (which stands for what is on the platter).
//!
//! Invariant: the file's visible contents are, for every offset `o < size`, the dirty page's byte
//! if page `o / PAGE` is dirty, else the backing file's byte if `o < floor`, else zero; `floor`
//! (the smallest size the file had since its last sync, never above the backing length) hides
//! backing bytes that a pending truncation cut off; and every dirty-page byte at or past `size`
//! is zero. [`Overlay::sync_to`] writes exactly that picture to the backing file, and dropping
//! the overlay (a power cut) leaves the backing file as it was at the last sync.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The page size of the simulated page cache.
pub const PAGE: u64 = 4096;

/// The unsynced state of one file.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Dirty pages by page index, each `PAGE` bytes.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The file's visible size.
    size: u64,
    /// Backing bytes at or past this offset are not visible (a pending truncation).
    floor: u64,
}

impl Overlay {
    /// A clean overlay over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Self {
        Self {
            pages: BTreeMap::new(),
            size: backing_len,
            floor: backing_len,
        }
    }

    /// The file's visible size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in dirty pages (what a power cut would drop, page-rounded).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Reads `len` bytes at `off` of the visible file (short at its end).
    pub fn read(&self, backing: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - off) as usize];
        let mut pos = off;
        while pos < end {
            let page = pos / PAGE;
            let page_end = ((page + 1) * PAGE).min(end);
            let dst = &mut out[(pos - off) as usize..(page_end - off) as usize];
            if let Some(p) = self.pages.get(&page) {
                let s = (pos % PAGE) as usize;
                dst.copy_from_slice(&p[s..s + dst.len()]);
            } else if pos < self.floor {
                let n = (page_end.min(self.floor) - pos) as usize;
                read_full(backing, &mut dst[..n], pos)?;
            }
            pos = page_end;
        }
        Ok(out)
    }

    /// Writes `data` at `off` into the page cache (loading partial pages from the backing file).
    pub fn write(&mut self, backing: &File, off: u64, data: &[u8]) -> io::Result<()> {
        let end = off + data.len() as u64;
        let mut pos = off;
        while pos < end {
            let page = pos / PAGE;
            let page_end = ((page + 1) * PAGE).min(end);
            if !self.pages.contains_key(&page) {
                let loaded = self.load_page(backing, page)?;
                self.pages.insert(page, loaded);
            }
            let p = self.pages.get_mut(&page).expect("page just loaded");
            let s = (pos % PAGE) as usize;
            let src = &data[(pos - off) as usize..(page_end - off) as usize];
            p[s..s + src.len()].copy_from_slice(src);
            pos = page_end;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the visible size (truncate or extend with zeros).
    pub fn set_size(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE);
            self.pages.retain(|&p, _| p < first_gone);
            if !size.is_multiple_of(PAGE)
                && let Some(p) = self.pages.get_mut(&(size / PAGE))
            {
                p[(size % PAGE) as usize..].fill(0);
            }
            self.floor = self.floor.min(size);
        }
        self.size = size;
    }

    /// Makes the visible picture durable: writes it to `backing` (whose length is `backing_len`).
    /// Returns the new backing length (the visible size). The caller drops the overlay after.
    pub fn sync_to(&self, backing: &File, backing_len: u64) -> io::Result<u64> {
        if self.floor < backing_len {
            backing.set_len(self.floor)?;
        }
        for (&page, p) in &self.pages {
            let start = page * PAGE;
            if start >= self.size {
                break;
            }
            let n = (self.size - start).min(PAGE) as usize;
            backing.write_all_at(&p[..n], start)?;
        }
        if backing.metadata()?.len() != self.size {
            backing.set_len(self.size)?;
        }
        Ok(self.size)
    }

    /// Page `page` as the file shows it now (backing bytes below `floor`, zeros elsewhere).
    fn load_page(&self, backing: &File, page: u64) -> io::Result<Box<[u8]>> {
        let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = page * PAGE;
        let visible_end = (start + PAGE).min(self.floor).min(self.size);
        if start < visible_end {
            read_full(backing, &mut buf[..(visible_end - start) as usize], start)?;
        }
        Ok(buf)
    }
}

/// Fills `buf` from `file` at `off`; bytes past the file's end stay zero.
fn read_full(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn backing(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn contents(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    /// A reference model: the whole file as a vector.
    fn check(o: &Overlay, f: &File, model: &[u8]) {
        assert_eq!(o.size(), model.len() as u64);
        assert_eq!(o.read(f, 0, u64::MAX / 2).unwrap(), model);
        if model.len() > 10 {
            assert_eq!(o.read(f, 5, 7).unwrap(), &model[5..12]);
        }
    }

    #[test]
    fn writes_reads_truncates_and_syncs_like_a_plain_vector() {
        let base: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let f = backing(&base);
        let mut o = Overlay::new(base.len() as u64);
        let mut model = base.clone();

        o.write(&f, 4090, &[1; 20]).unwrap();
        model[4090..4110].fill(1);
        check(&o, &f, &model);

        // Truncate into the middle of a dirty page, then extend: the cut bytes read as zeros,
        // neither the old dirty bytes nor the backing bytes come back.
        o.set_size(4100);
        model.truncate(4100);
        o.set_size(9000);
        model.resize(9000, 0);
        check(&o, &f, &model);

        o.write(&f, 12_000, b"tail").unwrap();
        model.resize(12_000, 0);
        model.extend_from_slice(b"tail");
        check(&o, &f, &model);

        // Nothing reached the backing file yet.
        assert_eq!(contents(&f), base);
        let len = o.sync_to(&f, base.len() as u64).unwrap();
        assert_eq!(len, model.len() as u64);
        assert_eq!(contents(&f), model);
    }

    #[test]
    fn a_pending_truncation_to_zero_then_rewrite_syncs_only_the_new_bytes() {
        let f = backing(&[7u8; 9000]);
        let mut o = Overlay::new(9000);
        o.set_size(0);
        o.write(&f, 0, b"new").unwrap();
        assert_eq!(o.read(&f, 0, 100).unwrap(), b"new");
        o.sync_to(&f, 9000).unwrap();
        assert_eq!(contents(&f), b"new");
    }
}
