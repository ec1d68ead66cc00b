//! The file system through a real FUSE mount: what survives a power cut (file data, sizes,
//! names), RocksDB-style write patterns, and injected EIO and ENOSPC. Needs /dev/fuse and root
//! (or fusermount3): a mount that fails fails the test, with the reason.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use powercut::{Handle, Options, PowerCutFs, ReadFault};

/// A temp dir with `backing/` and `mnt/`, and the file system mounted.
struct Fixture {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
}

impl Fixture {
    fn new() -> (Self, Handle) {
        let dir = tempfile::tempdir().unwrap();
        let f = Self {
            backing: dir.path().join("backing"),
            mnt: dir.path().join("mnt"),
            _dir: dir,
        };
        let h = f.mount();
        (f, h)
    }

    fn mount(&self) -> Handle {
        PowerCutFs::mount(&self.backing, &self.mnt).unwrap_or_else(|e| panic!("{e}"))
    }

    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }
}

fn fsync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// Creates `rel` with `data`, fsyncs it and its directory (fully durable).
fn durable_file(f: &Fixture, rel: &str, data: &[u8]) {
    let mut file = File::create(f.m(rel)).unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
    fsync_dir(f.m(rel).parent().unwrap());
}

#[test]
fn unsynced_data_of_a_closed_file_is_lost_and_synced_data_is_kept() {
    let (f, h) = Fixture::new();
    durable_file(&f, "a", b"");
    {
        let mut file = OpenOptions::new().append(true).open(f.m("a")).unwrap();
        file.write_all(b"synced;").unwrap();
        file.sync_data().unwrap();
        file.write_all(b"not synced").unwrap();
    }
    // Through the mount the whole file shows; on the platter only the synced part.
    assert_eq!(fs::read(f.m("a")).unwrap(), b"synced;not synced");
    assert_eq!(fs::read(f.b("a")).unwrap(), b"synced;");
    let report = h.power_cut().unwrap();
    assert_eq!(report.files_with_lost_data, [PathBuf::from("a")]);
    assert!(report.not_reverted.is_empty(), "{report:?}");
    assert!(!mounted(&f.mnt), "the power cut unmounts");

    let _h = f.mount();
    assert_eq!(fs::read(f.m("a")).unwrap(), b"synced;");
}

#[test]
fn partial_overwrites_are_merged_until_the_cut_and_kept_once_synced() {
    let (f, h) = Fixture::new();
    let base: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    durable_file(&f, "f", &base);
    let mut expect = base.clone();
    {
        let file = OpenOptions::new().write(true).open(f.m("f")).unwrap();
        file.write_all_at(&[0xAA; 100], 100).unwrap();
        file.write_all_at(&[0xBB; 10], 5000).unwrap();
        expect[100..200].fill(0xAA);
        expect[5000..5010].fill(0xBB);
    }
    assert_eq!(fs::read(f.m("f")).unwrap(), expect);
    h.power_cut().unwrap();

    let h = f.mount();
    assert_eq!(
        fs::read(f.m("f")).unwrap(),
        base,
        "unsynced overwrites are lost"
    );
    {
        let file = OpenOptions::new().write(true).open(f.m("f")).unwrap();
        file.write_all_at(&[0xAA; 100], 100).unwrap();
        file.write_all_at(&[0xBB; 10], 5000).unwrap();
        file.sync_all().unwrap();
        file.write_all_at(&[0xCC; 4], 9000).unwrap();
    }
    h.power_cut().unwrap();
    let _h = f.mount();
    assert_eq!(
        fs::read(f.m("f")).unwrap(),
        expect,
        "synced overwrites are kept"
    );
}

#[test]
fn size_changes_are_pending_until_fsync() {
    let (f, h) = Fixture::new();
    durable_file(&f, "t", &[7u8; 8192]);
    {
        let file = OpenOptions::new().write(true).open(f.m("t")).unwrap();
        file.set_len(10).unwrap();
        assert_eq!(fs::metadata(f.m("t")).unwrap().len(), 10);
        file.set_len(20).unwrap();
        // The cut-off bytes do not come back when the file grows again.
        let mut v = fs::read(f.m("t")).unwrap();
        assert_eq!(v.split_off(10), [0u8; 10]);
        assert_eq!(v, [7u8; 10]);
    }
    h.power_cut().unwrap();
    let h = f.mount();
    assert_eq!(
        fs::read(f.m("t")).unwrap(),
        [7u8; 8192],
        "truncation was not synced"
    );
    {
        let file = OpenOptions::new().write(true).open(f.m("t")).unwrap();
        file.set_len(10).unwrap();
        file.sync_all().unwrap();
        file.set_len(1 << 20).unwrap();
    }
    h.power_cut().unwrap();
    let _h = f.mount();
    assert_eq!(
        fs::read(f.m("t")).unwrap(),
        [7u8; 10],
        "synced truncation, lost extension"
    );
}

#[test]
fn a_new_name_needs_an_fsync_of_its_directory() {
    let (f, h) = Fixture::new();
    fs::create_dir(f.m("d")).unwrap();
    fsync_dir(&f.mnt);
    // Data fsynced, name never covered: gone.
    // Name covered, data not: an empty file.
    let mut b = File::create(f.m("d/empty")).unwrap();
    fsync_dir(&f.m("d"));
    b.write_all(b"y").unwrap();
    let mut a = File::create(f.m("d/lost")).unwrap();
    a.write_all(b"x").unwrap();
    a.sync_all().unwrap();
    // A directory never covered: gone with what it holds.
    fs::create_dir(f.m("e")).unwrap();
    durable_file(&f, "e/inner", b"z");
    drop((a, b));
    let report = h.power_cut().unwrap();
    assert!(report.not_reverted.is_empty(), "{report:?}");

    let _h = f.mount();
    assert!(!f.m("d/lost").exists());
    assert_eq!(fs::read(f.m("d/empty")).unwrap(), b"");
    assert!(!f.m("e").exists());
    let names: Vec<_> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["d"], "the trash is not visible");
}

#[test]
fn uncovered_unlinks_and_renames_are_reverted() {
    let (f, h) = Fixture::new();
    durable_file(&f, "old", b"old contents");
    durable_file(&f, "victim", b"victim contents");
    durable_file(&f, "gone", b"gone contents");
    fs::rename(f.m("old"), f.m("victim")).unwrap();
    fs::remove_file(f.m("gone")).unwrap();
    assert_eq!(fs::read(f.m("victim")).unwrap(), b"old contents");
    assert!(!f.m("old").exists() && !f.m("gone").exists());
    let report = h.power_cut().unwrap();
    assert_eq!(report.reverted.len(), 2, "{report:?}");
    assert!(report.not_reverted.is_empty(), "{report:?}");

    let h = f.mount();
    assert_eq!(fs::read(f.m("old")).unwrap(), b"old contents");
    assert_eq!(fs::read(f.m("victim")).unwrap(), b"victim contents");
    assert_eq!(fs::read(f.m("gone")).unwrap(), b"gone contents");
    // Covered by the directory fsync: durable.
    fs::rename(f.m("old"), f.m("victim")).unwrap();
    fs::remove_file(f.m("gone")).unwrap();
    fsync_dir(&f.mnt);
    h.power_cut().unwrap();
    assert!(!f.b(powercut::TRASH).exists(), "the trash is emptied");
    let _h = f.mount();
    assert!(!f.m("old").exists() && !f.m("gone").exists());
    assert_eq!(fs::read(f.m("victim")).unwrap(), b"old contents");
}

#[test]
fn an_unlinked_open_file_keeps_working_until_closed() {
    let (f, _h) = Fixture::new();
    durable_file(&f, "u", b"abc");
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(f.m("u"))
        .unwrap();
    fs::remove_file(f.m("u")).unwrap();
    file.write_all(b"def").unwrap();
    file.sync_all().unwrap();
    let mut s = String::new();
    File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .unwrap()
    .read_to_string(&mut s)
    .unwrap();
    assert_eq!(s, "abcdef");
}

#[test]
fn rocksdb_style_wal_appends_survive_up_to_the_last_fdatasync() {
    let (f, h) = Fixture::new();
    let mut wal = File::create(f.m("000001.log")).unwrap();
    fsync_dir(&f.mnt);
    let mut synced = Vec::new();
    for i in 0..50 {
        let rec = format!("record {i:04} {}\n", "x".repeat(i * 37));
        wal.write_all(rec.as_bytes()).unwrap();
        if i % 7 == 6 {
            wal.sync_data().unwrap();
            synced = fs::read(f.m("000001.log")).unwrap();
        }
    }
    assert!(synced.len() < fs::metadata(f.m("000001.log")).unwrap().len() as usize);
    drop(wal);
    h.power_cut().unwrap();
    let _h = f.mount();
    assert_eq!(fs::read(f.m("000001.log")).unwrap(), synced);
}

#[test]
fn rocksdb_style_current_file_switch_is_atomic_and_needs_the_directory_fsync() {
    let (f, h) = Fixture::new();
    durable_file(&f, "CURRENT", b"MANIFEST-000001\n");
    let switch = |name: &str, sync_dir: bool| {
        let mut tmp = File::create(f.m("000002.dbtmp")).unwrap();
        tmp.write_all(name.as_bytes()).unwrap();
        tmp.sync_all().unwrap();
        fs::rename(f.m("000002.dbtmp"), f.m("CURRENT")).unwrap();
        if sync_dir {
            fsync_dir(&f.mnt);
        }
    };
    switch("MANIFEST-000005\n", false);
    assert_eq!(fs::read(f.m("CURRENT")).unwrap(), b"MANIFEST-000005\n");
    h.power_cut().unwrap();
    let h = f.mount();
    assert_eq!(fs::read(f.m("CURRENT")).unwrap(), b"MANIFEST-000001\n");
    assert!(!f.m("000002.dbtmp").exists());

    switch("MANIFEST-000007\n", true);
    h.power_cut().unwrap();
    let _h = f.mount();
    assert_eq!(fs::read(f.m("CURRENT")).unwrap(), b"MANIFEST-000007\n");
    assert!(!f.m("000002.dbtmp").exists());
}

#[test]
fn without_strict_namespace_names_are_durable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (b, m) = (dir.path().join("b"), dir.path().join("m"));
    let opts = Options {
        strict_namespace: false,
    };
    let h = PowerCutFs::mount_with(&b, &m, opts.clone()).unwrap();
    let mut file = File::create(m.join("n")).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    drop(file);
    h.power_cut().unwrap();
    let _h = PowerCutFs::mount_with(&b, &m, opts).unwrap();
    assert_eq!(fs::read(m.join("n")).unwrap(), b"data");
}

#[test]
fn read_faults_fail_only_matching_files_within_the_range() {
    let (f, h) = Fixture::new();
    durable_file(&f, "1.dat", &[1u8; 3 * 4096]);
    durable_file(&f, "1.idx", &[2u8; 100]);
    let fault = h.fail_reads(ReadFault::suffix(".dat", libc::EIO).within(4096..8192));
    let file = File::open(f.m("1.dat")).unwrap();
    let mut buf = [0u8; 4096];
    file.read_exact_at(&mut buf, 0).unwrap();
    file.read_exact_at(&mut buf, 8192).unwrap();
    let err = file.read_exact_at(&mut buf, 5000).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(fault.hits() >= 1);
    assert_eq!(fs::read(f.m("1.idx")).unwrap(), [2u8; 100]);
    h.clear_read_faults();
    drop(file);
    assert_eq!(fs::read(f.m("1.dat")).unwrap(), [1u8; 3 * 4096]);
}

#[test]
fn a_space_limit_refuses_growth_with_enospc_but_not_overwrites_or_reads() {
    let (f, h) = Fixture::new();
    durable_file(&f, "big", &[3u8; 20_000]);
    let limit = h.used_bytes() + 10_000;
    h.space_limit(Some(limit));
    // Not O_APPEND: Linux appends a pwrite to an O_APPEND file whatever its offset.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("big"))
        .unwrap();
    file.write_all_at(&[4u8; 8000], 20_000).unwrap();
    let err = file.write_all_at(&[5u8; 4000], 28_000).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // The kernel may split a write: a first part that fits is written (a short write).
    let len = fs::metadata(f.m("big")).unwrap().len();
    assert!((28_000..=30_000).contains(&len), "{len}");
    assert_eq!(h.used_bytes(), len);
    let err = File::create(f.m("other"))
        .and_then(|mut o| o.write_all(&[0u8; 4000]))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    file.write_all_at(&[6u8; 100], 0).unwrap();
    file.sync_all().unwrap();
    let data = fs::read(f.m("big")).unwrap();
    assert_eq!(data.len() as u64, len);
    assert_eq!(&data[..100], [6u8; 100]);
    assert!(data[28_000..].iter().all(|&b| b == 5));
    assert!(h.stats().enospc >= 2);
    h.space_limit(None);
    file.write_all_at(&[5u8; 4000], 28_000).unwrap();
}

#[test]
fn dropping_the_handle_unmounts() {
    let (f, h) = Fixture::new();
    assert!(mounted(&f.mnt));
    drop(h);
    assert!(!mounted(&f.mnt));
}
