//! SeaweedFS's JSON shapes on the file API: an [`Entry`] as SeaweedFS's `filer.Entry`
//! ([`SeaweedEntry`]) and a directory page as its listing ([`SeaweedListing`]), so SeaweedFS
//! clients read Kelp's listings and `?metadata=true` answers unchanged. Kelp's own shape stays
//! on `/__meta/`.
//!
//! What Kelp does not keep is filled the way SeaweedFS fills an unset field: `Crtime` is the
//! modification time (Kelp keeps no creation time), `Atime` is `Mtime`, `Ctime` is Go's zero
//! time, `Md5` is `null` (chunks carry Kelp's CRC-32C ETags), `Inode` is a hash of the path.
//! Like SeaweedFS, the listing includes each file's chunks with their fids (cookies included):
//! whoever can list a directory can read its chunks from the volume servers directly.

use common::api::filer::{
    Entry, SEAWEED_MODE_DIR, SeaweedChunk, SeaweedEntry, SeaweedFid, SeaweedListing,
};
use common::ids::FileId;

use crate::path::{self, ROOT};
use crate::store::Page;

/// Go's zero `time.Time` as JSON, what SeaweedFS shows for a time it never set.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The `Version` of a listing.
pub fn version() -> String {
    format!("Kelp {}", env!("CARGO_PKG_VERSION"))
}

/// `entry` in SeaweedFS's shape.
pub fn entry(e: &Entry) -> SeaweedEntry {
    let mtime = rfc3339(e.mtime_ms, true);
    let mtime_ns = i64::try_from(e.mtime_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    SeaweedEntry {
        full_path: e.full_path.clone(),
        atime: mtime.clone(),
        crtime: rfc3339(e.mtime_ms, false),
        mtime,
        ctime: GO_ZERO_TIME.to_owned(),
        mode: (e.mode & 0o7777) | if e.is_dir { SEAWEED_MODE_DIR } else { 0 },
        uid: 0,
        gid: 0,
        mime: e.mime.clone(),
        ttl_sec: 0,
        user_name: String::new(),
        group_names: None,
        symlink_target: String::new(),
        md5: None,
        file_size: e.size,
        rdev: 0,
        inode: inode(&e.full_path),
        extended: (!e.extended.is_empty()).then(|| {
            e.extended
                .iter()
                .map(|(k, v)| (k.clone(), base64(v.as_bytes())))
                .collect()
        }),
        chunks: e
            .chunks
            .iter()
            .map(|c| SeaweedChunk {
                file_id: c.fid.clone(),
                offset: c.offset,
                size: c.size,
                modified_ts_ns: mtime_ns,
                e_tag: c.etag.clone(),
                fid: c.fid.parse::<FileId>().ok().map(|f| SeaweedFid {
                    volume_id: f.volume_id,
                    file_key: f.key,
                    cookie: f.cookie,
                }),
            })
            .collect(),
        hard_link_id: None,
        hard_link_counter: 0,
        content: None,
        remote: None,
        quota: 0,
        worm_enforced_at_ts_ns: 0,
    }
}

/// A page of directory `dir` as SeaweedFS lists it: the root's `Path` is `""`, `Entries` is
/// `null` on an empty page, and `LastFileName` falls back to the name asked to start after.
pub fn listing(dir: &str, page: &Page, limit: usize, after: Option<&str>) -> SeaweedListing {
    let last_file_name = page
        .entries
        .last()
        .map(|e| path::name(&e.full_path).to_owned())
        .unwrap_or_else(|| after.unwrap_or("").to_owned());
    SeaweedListing {
        version: version(),
        path: if dir == ROOT {
            String::new()
        } else {
            dir.to_owned()
        },
        entries: (!page.entries.is_empty()).then(|| page.entries.iter().map(entry).collect()),
        limit,
        last_file_name,
        should_display_load_more: page.has_more,
        empty_folder: page.entries.is_empty(),
    }
}

/// A stable inode number for `path` (FNV-1a, 64 bit).
fn inode(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Standard base64 with padding, as Go encodes `[]byte` in JSON.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `ms` since the Unix epoch as RFC 3339 in UTC, as Go's `time.Time` marshals: with the
/// fraction (trailing zeros dropped) when `fraction`, else whole seconds.
fn rfc3339(ms: u64, fraction: bool) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let millis = ms % 1000;
    if fraction && millis != 0 {
        let f = format!(".{millis:03}");
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use common::api::filer::Chunk;

    use super::*;

    #[test]
    fn test_rfc3339_matches_go() {
        assert_eq!(rfc3339(0, true), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_098_033_742, true), "2026-12-01T04:07:13.742Z");
        assert_eq!(rfc3339(1_796_098_033_742, false), "2026-12-01T04:07:13Z");
        assert_eq!(rfc3339(951_782_400_500, true), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339(253_402_300_799_000, true), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn test_base64_pads_like_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello\n"), "aGVsbG8K");
    }

    #[test]
    fn test_entry_has_seaweedfs_fields() {
        let dir = Entry {
            full_path: "/d".to_owned(),
            is_dir: true,
            mode: 0o755,
            ..Entry::default()
        };
        let d = entry(&dir);
        assert_eq!(d.mode, SEAWEED_MODE_DIR | 0o755);
        assert!(d.chunks.is_empty());
        let file = Entry {
            full_path: "/d/f".to_owned(),
            mode: 0o644,
            mtime_ms: 1_500,
            size: 12,
            chunks: vec![Chunk {
                fid: "3,01637037d6".to_owned(),
                offset: 0,
                size: 12,
                etag: "abcd".to_owned(),
            }],
            extended: [("k".to_owned(), "v".to_owned())].into(),
            ..Entry::default()
        };
        let v = serde_json::to_value(entry(&file)).unwrap();
        assert_eq!(v["Mode"], 0o644);
        assert_eq!(v["FileSize"], 12);
        assert_eq!(v["Mtime"], "1970-01-01T00:00:01.5Z");
        assert_eq!(v["Crtime"], "1970-01-01T00:00:01Z");
        assert_eq!(v["Extended"]["k"], "dg==");
        let c = &v["chunks"][0];
        assert_eq!(c["file_id"], "3,01637037d6");
        assert!(c.get("offset").is_none(), "zero offset omitted: {c}");
        assert_eq!(c["size"], 12);
        assert_eq!(c["modified_ts_ns"], 1_500_000_000);
        assert_eq!(c["fid"]["volume_id"], 3);
        assert_eq!(c["fid"]["file_key"], 1);
        assert_eq!(c["fid"]["cookie"], 0x637037d6);
        assert_ne!(inode("/d/f"), inode("/d/g"));
    }

    #[test]
    fn test_listing_of_root_and_empty_pages() {
        let l = listing(ROOT, &Page::default(), 10, Some("x"));
        assert_eq!(l.path, "");
        assert_eq!(l.entries, None);
        assert!(l.empty_folder);
        assert_eq!(l.last_file_name, "x");
        let page = Page {
            entries: vec![Entry {
                full_path: "/a/b".to_owned(),
                ..Entry::default()
            }],
            has_more: true,
        };
        let l = listing("/a", &page, 1, None);
        assert_eq!(l.path, "/a");
        assert_eq!(l.last_file_name, "b");
        assert!(l.should_display_load_more && !l.empty_folder);
    }
}
