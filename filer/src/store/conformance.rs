//! One conformance suite run against every [`MetaStore`] implementation, plus RocksDB reopen
//! tests and a model-based property test (with `Reopen`).

use std::collections::BTreeMap;

use common::api::filer::{Chunk, Entry};
use proptest::prelude::*;

use super::*;

/// An etcd store on `etcd` under `prefix`.
pub(crate) fn etcd_store(etcd: &testkit::etcd::Etcd, prefix: &str) -> EtcdStore {
    let http = common::client::HttpClient::new(std::time::Duration::from_secs(10)).with_attempts(1);
    let client = common::etcd::EtcdClient::new(&[etcd.endpoint().to_owned()], http).unwrap();
    EtcdStore::open(client, prefix, EtcdLimits::default()).unwrap()
}

/// Runs `case` against a fresh in-memory store, a fresh RocksDB store and a fresh etcd store
/// (a real etcd). The etcd case runs beside another namespace (another prefix) holding an
/// entry at every path the suite uses, which must neither show through nor change.
fn for_each_store(case: fn(&dyn MetaStore)) {
    case(&MemoryStore::new());
    let tmp = tempfile::tempdir().unwrap();
    let rocks = RocksStore::open(&tmp.path().join("meta")).unwrap();
    case(&rocks);
    let etcd = testkit::etcd::Etcd::start();
    let neighbour = etcd_store(&etcd, "/kelp/filer/neighbour/");
    let planted = [
        dir("/a"),
        dir("/d"),
        dir("/t"),
        file("/x", &["9,0900000001"]),
    ];
    put_all(&neighbour, planted.to_vec());
    // A prefix that is a byte-prefix of the neighbour's: isolation must not rely on luck.
    case(&etcd_store(&etcd, "/kelp/filer/n"));
    for e in &planted {
        assert_eq!(neighbour.get(&e.full_path).unwrap().as_ref(), Some(e));
    }
    assert_eq!(
        list(&neighbour, "/", None, false, 100, false).entries.len(),
        4
    );
}

fn file(path: &str, fids: &[&str]) -> Entry {
    let chunks: Vec<Chunk> = fids
        .iter()
        .enumerate()
        .map(|(i, f)| Chunk {
            fid: (*f).to_owned(),
            offset: i as u64,
            size: 1,
            etag: String::new(),
        })
        .collect();
    Entry {
        full_path: path.to_owned(),
        size: chunks.len() as u64,
        chunks,
        version: 1,
        ..Entry::default()
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        full_path: path.to_owned(),
        is_dir: true,
        version: 1,
        ..Entry::default()
    }
}

fn put_all(store: &dyn MetaStore, entries: Vec<Entry>) {
    let mut b = Batch::new();
    for e in entries {
        b.put(e);
    }
    store.write(&b).unwrap();
}

fn names(page: &Page) -> Vec<String> {
    page.entries
        .iter()
        .map(|e| crate::path::name(&e.full_path).to_owned())
        .collect()
}

fn list(
    store: &dyn MetaStore,
    d: &str,
    start: Option<&str>,
    inclusive: bool,
    limit: usize,
    reverse: bool,
) -> Page {
    store
        .list(
            d,
            &ListOpts {
                start: start.map(str::to_owned),
                inclusive,
                limit,
                reverse,
            },
        )
        .unwrap()
}

#[test]
fn test_store_put_get_delete() {
    for_each_store(|s| {
        assert_eq!(s.get("/x").unwrap(), None);
        assert_eq!(s.get("/").unwrap(), None);
        let e = file("/x", &["1,0100000001"]);
        put_all(s, vec![e.clone()]);
        assert_eq!(s.get("/x").unwrap(), Some(e.clone()));
        let mut e2 = e.clone();
        e2.version = 2;
        e2.extended.insert("k".to_owned(), "v".to_owned());
        put_all(s, vec![e2.clone()]);
        assert_eq!(s.get("/x").unwrap(), Some(e2));
        let mut b = Batch::new();
        b.delete("/x");
        b.delete("/never-existed");
        s.write(&b).unwrap();
        assert_eq!(s.get("/x").unwrap(), None);
        s.check().unwrap();
    });
}

#[test]
fn test_store_list_pages_forward_and_backward() {
    for_each_store(|s| {
        let names_in: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        put_all(
            s,
            names_in
                .iter()
                .map(|n| file(&format!("/d/{n}"), &[]))
                .collect(),
        );
        put_all(s, vec![dir("/d")]);

        let p = list(s, "/d", None, false, 100, false);
        assert_eq!(names(&p), names_in);
        assert!(!p.has_more);

        let p = list(s, "/d", None, false, 3, false);
        assert_eq!(names(&p), ["f0", "f1", "f2"]);
        assert!(p.has_more);
        let p = list(s, "/d", Some("f2"), false, 3, false);
        assert_eq!(names(&p), ["f3", "f4", "f5"]);
        let p = list(s, "/d", Some("f2"), true, 3, false);
        assert_eq!(names(&p), ["f2", "f3", "f4"]);
        let p = list(s, "/d", Some("f7"), false, 3, false);
        assert_eq!(names(&p), ["f8", "f9"]);
        assert!(!p.has_more);
        let p = list(s, "/d", Some("f9"), false, 3, false);
        assert!(p.entries.is_empty() && !p.has_more);
        // A start name that does not exist starts at the next name.
        let p = list(s, "/d", Some("f25"), false, 2, false);
        assert_eq!(names(&p), ["f3", "f4"]);
        let p = list(s, "/d", Some("f9"), true, 1, false);
        assert_eq!(names(&p), ["f9"]);
        assert!(!p.has_more);

        let p = list(s, "/d", None, false, 3, true);
        assert_eq!(names(&p), ["f9", "f8", "f7"]);
        assert!(p.has_more);
        let p = list(s, "/d", Some("f7"), false, 3, true);
        assert_eq!(names(&p), ["f6", "f5", "f4"]);
        let p = list(s, "/d", Some("f7"), true, 3, true);
        assert_eq!(names(&p), ["f7", "f6", "f5"]);
        let p = list(s, "/d", Some("f2"), false, 5, true);
        assert_eq!(names(&p), ["f1", "f0"]);
        assert!(!p.has_more);
        let p = list(s, "/d", Some("f25"), false, 2, true);
        assert_eq!(names(&p), ["f2", "f1"]);
        let p = list(s, "/d", Some("f0"), false, 2, true);
        assert!(p.entries.is_empty());
        let p = list(s, "/d", Some("zzz"), false, 1, true);
        assert_eq!(names(&p), ["f9"]);

        // Paging forwards through everything with `start = last name` visits each once.
        let mut seen = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let p = list(s, "/d", start.as_deref(), false, 4, false);
            seen.extend(names(&p));
            if !p.has_more {
                break;
            }
            start = seen.last().cloned();
        }
        assert_eq!(seen, names_in);

        let p = list(s, "/empty", None, false, 10, false);
        assert!(p.entries.is_empty() && !p.has_more);
        let p = list(s, "/empty", None, false, 10, true);
        assert!(p.entries.is_empty() && !p.has_more);
    });
}

#[test]
fn test_store_isolates_sibling_directories_with_shared_prefixes() {
    for_each_store(|s| {
        put_all(
            s,
            vec![
                dir("/a"),
                dir("/ab"),
                dir("/a-"),
                file("/a/x", &[]),
                file("/a/y", &[]),
                file("/ab/x", &[]),
                file("/ab/z", &[]),
                file("/a-/q", &[]),
                dir("/a/b"),
                file("/a/b/deep", &[]),
                file("/0", &[]),
                file("/b", &[]),
            ],
        );
        assert_eq!(
            names(&list(s, "/a", None, false, 100, false)),
            ["b", "x", "y"]
        );
        assert_eq!(
            names(&list(s, "/a", None, false, 100, true)),
            ["y", "x", "b"]
        );
        assert_eq!(names(&list(s, "/ab", None, false, 100, false)), ["x", "z"]);
        assert_eq!(names(&list(s, "/ab", None, false, 100, true)), ["z", "x"]);
        assert_eq!(names(&list(s, "/a-", None, false, 100, true)), ["q"]);
        assert_eq!(names(&list(s, "/a/b", None, false, 100, false)), ["deep"]);
        assert_eq!(
            names(&list(s, "/", None, false, 100, false)),
            ["0", "a", "a-", "ab", "b"]
        );
        assert_eq!(
            names(&list(s, "/", None, false, 100, true)),
            ["b", "ab", "a-", "a", "0"]
        );
        assert_eq!(
            names(&list(s, "/a", Some("y"), false, 100, false)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&list(s, "/ab", Some("a"), false, 100, true)),
            Vec::<String>::new()
        );
        assert!(has_children(s, "/a").unwrap());
        assert!(!has_children(s, "/a/x").unwrap());
    });
}

#[test]
fn test_store_recursive_delete_removes_subtree_and_queues_chunks() {
    for_each_store(|s| {
        put_all(
            s,
            vec![
                dir("/t"),
                dir("/t/sub"),
                file("/t/f1", &["1,0100000001"]),
                file("/t/sub/f2", &["1,0200000001", "1,0300000001"]),
                dir("/tt"),
                file("/tt/keep", &["1,0400000001"]),
            ],
        );
        let root = s.get("/t").unwrap().unwrap();
        let mut b = Batch::new();
        let n = plan_delete(s, &root, 7, &mut b).unwrap();
        assert_eq!(n, 4);
        s.write(&b).unwrap();
        for p in ["/t", "/t/sub", "/t/f1", "/t/sub/f2"] {
            assert_eq!(s.get(p).unwrap(), None, "{p} survived");
        }
        assert!(list(s, "/t", None, false, 10, false).entries.is_empty());
        assert!(s.get("/tt/keep").unwrap().is_some());
        let pending: Vec<String> = s
            .pending_deletions(100)
            .unwrap()
            .into_iter()
            .map(|d| d.fid)
            .collect();
        assert_eq!(pending, ["1,0100000001", "1,0200000001", "1,0300000001"]);
        let mut b = Batch::new();
        b.ops.push(Op::Dequeue("1,0200000001".to_owned()));
        s.write(&b).unwrap();
        assert_eq!(s.pending_deletions(100).unwrap().len(), 2);
        assert_eq!(s.pending_deletions(1).unwrap().len(), 1);
    });
}

#[test]
fn test_store_rename_file_and_directory_subtree() {
    for_each_store(|s| {
        put_all(
            s,
            vec![
                dir("/src"),
                dir("/src/d"),
                file("/src/d/f", &["1,0100000001"]),
                file("/src/g", &[]),
                file("/lone", &["1,0200000001"]),
                dir("/srcx"),
                file("/srcx/other", &[]),
            ],
        );
        // A file.
        let lone = s.get("/lone").unwrap().unwrap();
        let mut b = Batch::new();
        let moved = plan_rename(s, &lone, "/renamed", &mut b).unwrap();
        s.write(&b).unwrap();
        assert_eq!(moved.full_path, "/renamed");
        assert_eq!(moved.version, 2);
        assert_eq!(s.get("/lone").unwrap(), None);
        let got = s.get("/renamed").unwrap().unwrap();
        assert_eq!(got.chunks, lone.chunks);

        // A directory, with its subtree, into a new parent.
        let src = s.get("/src").unwrap().unwrap();
        let mut b = Batch::new();
        plan_rename(s, &src, "/new/place", &mut b).unwrap();
        b.put(dir("/new"));
        s.write(&b).unwrap();
        assert_eq!(s.get("/src").unwrap(), None);
        assert!(list(s, "/src", None, false, 10, false).entries.is_empty());
        assert!(list(s, "/src/d", None, false, 10, false).entries.is_empty());
        assert!(s.get("/new/place").unwrap().unwrap().is_dir);
        assert_eq!(
            names(&list(s, "/new/place", None, false, 10, false)),
            ["d", "g"]
        );
        let f = s.get("/new/place/d/f").unwrap().unwrap();
        assert_eq!(f.chunks[0].fid, "1,0100000001");
        // The sibling with a shared prefix is untouched.
        assert_eq!(names(&list(s, "/srcx", None, false, 10, false)), ["other"]);
        // Renames queue no chunk deletions.
        assert!(s.pending_deletions(10).unwrap().is_empty());
    });
}

#[test]
fn test_rocks_store_data_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("meta");
    {
        let s = RocksStore::open(&path).unwrap();
        put_all(&s, vec![dir("/a"), file("/a/f", &["1,0100000001"])]);
        let mut b = Batch::new();
        b.queue_chunks(&file("/gone", &["1,0900000001"]), 1);
        s.write(&b).unwrap();
    }
    let s = RocksStore::open(&path).unwrap();
    assert!(s.get("/a").unwrap().unwrap().is_dir);
    assert_eq!(
        s.get("/a/f").unwrap().unwrap().chunks[0].fid,
        "1,0100000001"
    );
    assert_eq!(s.pending_deletions(10).unwrap()[0].fid, "1,0900000001");
    assert_eq!(s.path(), path);
}

#[test]
fn test_rocks_store_refuses_foreign_format() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("meta");
    {
        let db = rocksdb::DB::open_default(&path).unwrap();
        db.put(codec::FORMAT_KEY, b"something-else").unwrap();
    }
    assert!(matches!(
        RocksStore::open(&path),
        Err(StoreError::Format { .. })
    ));
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put {
        dir: usize,
        name: usize,
        version: u64,
    },
    Delete {
        dir: usize,
        name: usize,
    },
    Reopen,
}

const DIRS: [&str; 4] = ["/", "/a", "/ab", "/a/b"];
const NAMES: [&str; 5] = ["a", "b", "ab", "b0", "z"];

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0..DIRS.len(), 0..NAMES.len(), 1u64..100).prop_map(|(dir, name, version)| ModelOp::Put { dir, name, version }),
        2 => (0..DIRS.len(), 0..NAMES.len()).prop_map(|(dir, name)| ModelOp::Delete { dir, name }),
        1 => Just(ModelOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random puts, deletes and reopens against both stores, compared with a model after each
    /// step through full listings in both directions and paged listings.
    #[test]
    fn test_store_matches_model(ops in proptest::collection::vec(model_op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("meta");
        let mut rocks = Some(RocksStore::open(&path).unwrap());
        let memory = MemoryStore::new();
        let mut model: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for op in ops {
            match op {
                ModelOp::Put { dir: d, name: n, version } => {
                    let full = crate::path::join(DIRS[d], NAMES[n]);
                    let mut e = file(&full, &[]);
                    e.version = version;
                    let mut b = Batch::new();
                    b.put(e);
                    memory.write(&b).unwrap();
                    rocks.as_ref().unwrap().write(&b).unwrap();
                    model.entry(DIRS[d].to_owned()).or_default().insert(NAMES[n].to_owned(), version);
                }
                ModelOp::Delete { dir: d, name: n } => {
                    let full = crate::path::join(DIRS[d], NAMES[n]);
                    let mut b = Batch::new();
                    b.delete(full);
                    memory.write(&b).unwrap();
                    rocks.as_ref().unwrap().write(&b).unwrap();
                    model.entry(DIRS[d].to_owned()).or_default().remove(NAMES[n]);
                }
                ModelOp::Reopen => {
                    drop(rocks.take());
                    rocks = Some(RocksStore::open(&path).unwrap());
                }
            }
            for store in [&memory as &dyn MetaStore, rocks.as_ref().unwrap() as &dyn MetaStore] {
                for d in DIRS {
                    let want: Vec<(String, u64)> = model.get(d).map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
                    let got: Vec<(String, u64)> = list(store, d, None, false, 100, false).entries.iter()
                        .map(|e| (crate::path::name(&e.full_path).to_owned(), e.version)).collect();
                    prop_assert_eq!(&got, &want);
                    let mut rev = want.clone();
                    rev.reverse();
                    let got_rev: Vec<(String, u64)> = list(store, d, None, false, 100, true).entries.iter()
                        .map(|e| (crate::path::name(&e.full_path).to_owned(), e.version)).collect();
                    prop_assert_eq!(got_rev, rev);
                    // Page by 2 from each name, exclusive, forwards.
                    for start in NAMES {
                        let want_after: Vec<String> = want.iter().map(|(k, _)| k.clone()).filter(|k| k.as_str() > start).take(2).collect();
                        let p = list(store, d, Some(start), false, 2, false);
                        prop_assert_eq!(names(&p), want_after);
                        let want_before: Vec<String> = want.iter().rev().map(|(k, _)| k.clone()).filter(|k| k.as_str() <= start).take(2).collect();
                        let p = list(store, d, Some(start), true, 2, true);
                        prop_assert_eq!(names(&p), want_before);
                    }
                }
            }
        }
    }
}

fn owners(s: &dyn MetaStore, fid: &str) -> Vec<String> {
    s.chunk_owners(fid).unwrap()
}

fn pending_fids(s: &dyn MetaStore) -> Vec<String> {
    s.pending_deletions(1000)
        .unwrap()
        .into_iter()
        .map(|d| d.fid)
        .collect()
}

const X: &str = "1,0100000001";
const Y: &str = "1,0200000001";
const Z: &str = "1,0300000001";

#[test]
fn test_store_chunk_index_refuses_a_second_owner() {
    for_each_store(|s| {
        put_all(s, vec![file("/a", &[X, Y])]);
        assert_eq!(owners(s, X), ["/a"]);
        assert_eq!(owners(s, Y), ["/a"]);
        assert!(owners(s, Z).is_empty());
        // Another entry naming X: refused, naming the owner, and nothing of the batch written.
        let mut b = Batch::new();
        b.put(dir("/d"));
        b.put(file("/d/b", &[Z, X]));
        match s.write(&b) {
            Err(StoreError::ChunkInUse { fid, path, owner }) => {
                assert_eq!(
                    (fid.as_str(), path.as_str(), owner.as_str()),
                    (X, "/d/b", "/a")
                );
            }
            other => panic!("expected ChunkInUse, got {other:?}"),
        }
        assert_eq!(s.get("/d").unwrap(), None);
        assert_eq!(s.get("/d/b").unwrap(), None);
        assert!(owners(s, Z).is_empty());
        // Re-committing the owner with its own chunks (the broker's idempotent commit) is fine.
        put_all(s, vec![file("/a", &[X, Y])]);
        assert_eq!(owners(s, X), ["/a"]);
        // Two entries of one batch cannot share a chunk either.
        let mut b = Batch::new();
        b.put(file("/p", &[Z]));
        b.put(file("/q", &[Z]));
        assert!(matches!(s.write(&b), Err(StoreError::ChunkInUse { .. })));
        assert!(owners(s, Z).is_empty());
        // A file naming the same chunk twice owns it once.
        put_all(s, vec![file("/twice", &[Z, Z])]);
        assert_eq!(owners(s, Z), ["/twice"]);
    });
}

#[test]
fn test_store_chunk_index_follows_replace_rename_and_recursive_delete() {
    for_each_store(|s| {
        put_all(s, vec![dir("/t"), file("/t/f", &[X, Y])]);
        // Replace: X is given up and queued in the same batch, Y kept, Z taken.
        let mut b = Batch::new();
        b.put(file("/t/f", &[Y, Z]));
        b.queue_chunks(&file("/t/f", &[X]), 1);
        s.write(&b).unwrap();
        assert!(owners(s, X).is_empty());
        assert_eq!(owners(s, Y), ["/t/f"]);
        assert_eq!(owners(s, Z), ["/t/f"]);
        assert_eq!(pending_fids(s), [X]);
        // A queued chunk cannot be taken by anyone.
        match s.write(&{
            let mut b = Batch::new();
            b.put(file("/late", &[X]));
            b
        }) {
            Err(StoreError::ChunkQueued { fid, was, .. }) => {
                assert_eq!((fid.as_str(), was.as_str()), (X, "/t/f"));
            }
            other => panic!("expected ChunkQueued, got {other:?}"),
        }
        // Rename of the directory moves ownership with the entries.
        let t = s.get("/t").unwrap().unwrap();
        let mut b = Batch::new();
        plan_rename(s, &t, "/u", &mut b).unwrap();
        s.write(&b).unwrap();
        assert_eq!(owners(s, Y), ["/u/f"]);
        assert_eq!(owners(s, Z), ["/u/f"]);
        // Deleting the subtree frees and queues every chunk.
        let u = s.get("/u").unwrap().unwrap();
        let mut b = Batch::new();
        plan_delete(s, &u, 2, &mut b).unwrap();
        s.write(&b).unwrap();
        assert!(owners(s, Y).is_empty() && owners(s, Z).is_empty());
        assert_eq!(pending_fids(s), [X, Y, Z]);
    });
}

#[test]
fn test_store_never_queues_a_referenced_chunk() {
    for_each_store(|s| {
        put_all(s, vec![file("/live", &[X])]);
        // A stray queue op for a live chunk is dropped; the rest of the batch is applied.
        let mut b = Batch::new();
        b.queue_chunks(&file("/other", &[X, Y]), 1);
        b.put(file("/n", &[]));
        s.write(&b).unwrap();
        assert_eq!(pending_fids(s), [Y]);
        assert!(s.get("/n").unwrap().is_some());
        // Moving a chunk from one entry to another in one batch (a rename) is not a share.
        let mut b = Batch::new();
        b.delete("/live");
        b.put(file("/moved", &[X]));
        b.queue_chunks(&file("/live", &[X]), 1);
        s.write(&b).unwrap();
        assert_eq!(owners(s, X), ["/moved"]);
        assert_eq!(pending_fids(s), [Y]);
    });
}

#[test]
fn test_rocks_store_upgrades_v1_and_builds_the_chunk_index() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("meta");
    {
        let db = rocksdb::DB::open_default(&path).unwrap();
        db.put(codec::FORMAT_KEY, codec::FORMAT_V1).unwrap();
        for e in [dir("/a"), file("/a/f", &[X, Y]), file("/g", &[Z])] {
            db.put(codec::entry_key(&e.full_path), codec::encode(&e))
                .unwrap();
        }
        // A v1 database may hold a shared chunk; the index records both owners.
        let shared = file("/shared", &[Z]);
        db.put(codec::entry_key("/shared"), codec::encode(&shared))
            .unwrap();
    }
    let s = RocksStore::open(&path).unwrap();
    assert_eq!(owners(&s, X), ["/a/f"]);
    assert_eq!(owners(&s, Z), ["/g", "/shared"]);
    // Deleting one of two legacy owners does not queue the other's chunk.
    let g = s.get("/g").unwrap().unwrap();
    let mut b = Batch::new();
    plan_delete(&s, &g, 1, &mut b).unwrap();
    s.write(&b).unwrap();
    assert!(pending_fids(&s).is_empty());
    assert_eq!(owners(&s, Z), ["/shared"]);
    drop(s);
    let s = RocksStore::open(&path).unwrap();
    assert_eq!(owners(&s, Y), ["/a/f"]);
}

#[derive(Debug, Clone)]
enum ChunkOp {
    /// Write file `path` with chunks `fids` the way the filer does: put, queue what the old
    /// version had and the new one does not.
    Put {
        path: usize,
        fids: Vec<usize>,
    },
    Delete {
        path: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Collect,
    Reopen,
}

const CPATHS: [&str; 4] = ["/a", "/b", "/c", "/d"];
const CFIDS: [&str; 5] = [
    "1,0100000001",
    "1,0200000001",
    "1,0300000001",
    "1,0400000001",
    "1,0500000001",
];

fn chunk_op() -> impl Strategy<Value = ChunkOp> {
    prop_oneof![
        4 => (0..CPATHS.len(), proptest::collection::vec(0..CFIDS.len(), 0..3))
            .prop_map(|(path, fids)| ChunkOp::Put { path, fids }),
        2 => (0..CPATHS.len()).prop_map(|path| ChunkOp::Delete { path }),
        2 => (0..CPATHS.len(), 0..CPATHS.len()).prop_map(|(from, to)| ChunkOp::Rename { from, to }),
        1 => Just(ChunkOp::Collect),
        1 => Just(ChunkOp::Reopen),
    ]
}

/// Applies `op` to `s` as the filer would; `Ok(false)` when the store refused it.
fn apply_chunk_op(s: &dyn MetaStore, op: &ChunkOp) -> bool {
    let mut b = Batch::new();
    match op {
        ChunkOp::Put { path, fids } => {
            let fids: Vec<&str> = fids.iter().map(|i| CFIDS[*i]).collect();
            let new = file(CPATHS[*path], &fids);
            if let Some(old) = s.get(CPATHS[*path]).unwrap() {
                let gone: Vec<&str> = old
                    .chunks
                    .iter()
                    .map(|c| c.fid.as_str())
                    .filter(|f| !fids.contains(f))
                    .collect();
                b.queue_chunks(&file(CPATHS[*path], &gone), 1);
            }
            b.put(new);
        }
        ChunkOp::Delete { path } => {
            let Some(e) = s.get(CPATHS[*path]).unwrap() else {
                return true;
            };
            plan_delete(s, &e, 1, &mut b).unwrap();
        }
        ChunkOp::Rename { from, to } => {
            let Some(e) = s.get(CPATHS[*from]).unwrap() else {
                return true;
            };
            if s.get(CPATHS[*to]).unwrap().is_some() {
                return true;
            }
            plan_rename(s, &e, CPATHS[*to], &mut b).unwrap();
        }
        ChunkOp::Collect => {
            for d in s.pending_deletions(100).unwrap() {
                b.ops.push(Op::Dequeue(d.fid));
            }
        }
        ChunkOp::Reopen => return true,
    }
    match s.write(&b) {
        Ok(()) => true,
        Err(StoreError::ChunkInUse { .. } | StoreError::ChunkQueued { .. }) => false,
        Err(e) => panic!("store failed: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random writes, deletes, renames, collections and reopens against both stores, checked
    /// after each step: the owner index equals the entries' chunks, no chunk has two owners,
    /// no queued chunk is referenced (so the collector never deletes a live chunk), and a
    /// refused write changed nothing.
    #[test]
    fn test_store_chunk_index_matches_entries(ops in proptest::collection::vec(chunk_op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("meta");
        let mut rocks = Some(RocksStore::open(&path).unwrap());
        let memory = MemoryStore::new();
        for op in ops {
            if matches!(op, ChunkOp::Reopen) {
                drop(rocks.take());
                rocks = Some(RocksStore::open(&path).unwrap());
            }
            let r = rocks.as_ref().unwrap();
            let snapshot = |s: &dyn MetaStore| -> (Vec<Option<Entry>>, Vec<String>) {
                (CPATHS.iter().map(|p| s.get(p).unwrap()).collect(), pending_fids(s))
            };
            let before = snapshot(&memory);
            let applied_mem = apply_chunk_op(&memory, &op);
            let applied_rocks = apply_chunk_op(r, &op);
            prop_assert_eq!(applied_mem, applied_rocks);
            if !applied_mem {
                prop_assert_eq!(&snapshot(&memory), &before);
            }
            for s in [&memory as &dyn MetaStore, r as &dyn MetaStore] {
                prop_assert_eq!(&snapshot(s), &snapshot(&memory));
                let queued = pending_fids(s);
                for fid in CFIDS {
                    let want: Vec<String> = CPATHS
                        .iter()
                        .filter(|p| s.get(p).unwrap().is_some_and(|e| e.chunks.iter().any(|c| c.fid == fid)))
                        .map(|p| (*p).to_owned())
                        .collect();
                    prop_assert!(want.len() <= 1, "{} shared by {:?}", fid, want);
                    prop_assert_eq!(owners(s, fid), want.clone());
                    prop_assert!(want.is_empty() || !queued.iter().any(|q| q == fid), "{} queued while owned by {:?}", fid, want);
                }
            }
        }
    }
}

#[test]
fn test_store_guards_refuse_stale_state_and_write_nothing() {
    for_each_store(|s| {
        put_all(s, vec![dir("/g"), file("/g/f", &[X])]);
        let f = s.get("/g/f").unwrap().unwrap();
        // A stale version: refused, nothing of the batch written.
        let mut b = Batch::new();
        b.guard("/g/f", Some(f.version + 1));
        b.put(file("/g/new", &[Y]));
        match s.write(&b) {
            Err(StoreError::GuardFailed { path, .. }) => assert_eq!(path, "/g/f"),
            other => panic!("expected GuardFailed, got {other:?}"),
        }
        assert_eq!(s.get("/g/new").unwrap(), None);
        assert!(owners(s, Y).is_empty());
        // Expecting absence of an entry that exists, or presence of one that does not.
        for (path, version) in [("/g/f", None), ("/g/none", Some(1))] {
            let mut b = Batch::new();
            b.guard(path, version);
            b.put(file("/g/new", &[]));
            assert!(
                matches!(s.write(&b), Err(StoreError::GuardFailed { .. })),
                "{path} {version:?}"
            );
            assert_eq!(s.get("/g/new").unwrap(), None);
        }
        // Children: exactly these names, or refused.
        let mut b = Batch::new();
        b.guard_children("/g", vec![]);
        b.delete("/g");
        assert!(matches!(s.write(&b), Err(StoreError::GuardFailed { .. })));
        assert!(s.get("/g").unwrap().is_some());
        let mut b = Batch::new();
        b.guard_children("/g", vec!["f".to_owned(), "other".to_owned()]);
        b.delete("/g");
        assert!(matches!(s.write(&b), Err(StoreError::GuardFailed { .. })));
        // Guards that hold: the batch is applied.
        let mut b = Batch::new();
        b.guard("/g/f", Some(f.version));
        b.guard("/g/none", None);
        b.guard("/", None);
        b.guard_children("/g", vec!["f".to_owned()]);
        let mut f2 = f.clone();
        f2.version += 1;
        b.put(f2.clone());
        s.write(&b).unwrap();
        assert_eq!(s.get("/g/f").unwrap(), Some(f2));
        // A batch guarding one path at two versions can never hold.
        let mut b = Batch::new();
        b.guard("/g/f", Some(f.version + 1));
        b.guard("/g/f", Some(f.version));
        b.delete("/g/f");
        assert!(matches!(s.write(&b), Err(StoreError::GuardFailed { .. })));
        assert!(s.get("/g/f").unwrap().is_some());
        // plan_delete guards the subtree it walked: a child added since is refused.
        let g = s.get("/g").unwrap().unwrap();
        let mut b = Batch::new();
        plan_delete(s, &g, 1, &mut b).unwrap();
        put_all(s, vec![file("/g/late", &[Z])]);
        assert!(matches!(s.write(&b), Err(StoreError::GuardFailed { .. })));
        assert!(s.get("/g/late").unwrap().is_some());
        assert_eq!(owners(s, Z), ["/g/late"]);
        assert!(pending_fids(s).is_empty());
    });
}

#[test]
fn test_etcd_store_refuses_batches_over_its_limits_whole() {
    let etcd = testkit::etcd::Etcd::start();
    let s = etcd_store(&etcd, "/kelp/filer/limits/");
    let max = EtcdLimits::default().max_chunks();
    // A file with one chunk too many: refused before anything is sent.
    let fids: Vec<String> = (0..=max).map(|i| format!("1,{:08x}01", i + 1)).collect();
    let fids: Vec<&str> = fids.iter().map(String::as_str).collect();
    let mut b = Batch::new();
    b.put(file("/big", &fids));
    assert!(matches!(s.write(&b), Err(StoreError::TooLarge(_))));
    assert_eq!(s.get("/big").unwrap(), None);
    // At the limit it fits, and so does replacing it with as many new chunks.
    put_all(&s, vec![file("/big", &fids[..max])]);
    assert_eq!(owners(&s, fids[0]), ["/big"]);
    let others: Vec<String> = (0..max).map(|i| format!("2,{:08x}01", i + 1)).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let mut b = Batch::new();
    b.put(file("/big", &others));
    b.queue_chunks(&file("/big", &fids[..max]), 1);
    s.write(&b).unwrap();
    assert_eq!(pending_fids(&s).len(), max);
    // 200 entries in one batch: over 128 writes, refused whole.
    let mut b = Batch::new();
    for i in 0..200 {
        b.put(file(&format!("/many/f{i:03}"), &[]));
    }
    assert!(matches!(s.write(&b), Err(StoreError::TooLarge(_))));
    assert!(list(&s, "/many", None, false, 10, false).entries.is_empty());
}
