//! The filer under real crashes: a tree of files of every shape survives SIGKILLs of the filer
//! and the volume server; listings page; renames and recursive deletes survive restarts.

use std::collections::BTreeMap;

use bytes::Bytes;
use common::client::HttpClient;
use common::client::filer::FilerClient;
use e2e::{Cluster, ClusterOptions};
use rand::Rng;

const MB: usize = 1 << 20;

fn filer_client(c: &mut Cluster) -> FilerClient {
    FilerClient::new(
        HttpClient::new(std::time::Duration::from_secs(120)),
        &c.filer().addr().to_string(),
    )
}

fn random_bytes(len: usize) -> Bytes {
    let mut b = vec![0u8; len];
    rand::rng().fill(&mut b[..]);
    Bytes::from(b)
}

async fn assert_tree(f: &FilerClient, files: &BTreeMap<String, Bytes>) {
    for (path, want) in files {
        let got = f
            .get_file(path)
            .await
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert!(
            got == *want,
            "{path}: read {} bytes that differ from the {} written",
            got.len(),
            want.len()
        );
    }
}

#[tokio::test]
async fn given_a_tree_of_files_when_filer_and_volume_are_killed_should_read_everything_back() {
    let mut c = Cluster::start(ClusterOptions {
        filer: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let f = filer_client(&mut c);
    let mut rng = rand::rng();
    let mut files = BTreeMap::new();
    files.insert("/t/empty".to_owned(), Bytes::new());
    files.insert("/t/one-byte".to_owned(), Bytes::from_static(b"x"));
    files.insert("/t/exactly-one-chunk".to_owned(), random_bytes(4 * MB));
    for i in 0..3 {
        files.insert(
            format!("/t/big/multi-{i}"),
            random_bytes(rng.random_range(4 * MB + 1..=20 * MB)),
        );
    }
    for i in 0..40 {
        files.insert(
            format!("/t/small/f{i:03}"),
            random_bytes(rng.random_range(0..2048)),
        );
    }
    for (path, data) in &files {
        let r = f.put_file(path, data.clone()).await.unwrap();
        assert_eq!(r.size, data.len() as u64, "{path}");
    }

    // Paging through a directory returns every name once, in order.
    let mut names = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = f.list_dir("/t/small", last.as_deref(), 7).await.unwrap();
        names.extend(page.entries.iter().map(|e| e.full_path.clone()));
        if !page.should_display_load_more {
            break;
        }
        last = Some(page.last_file_name.clone());
    }
    let want: Vec<String> = files
        .keys()
        .filter(|k| k.starts_with("/t/small/"))
        .cloned()
        .collect();
    assert_eq!(names, want);

    // SIGKILL both, restart, read everything back.
    c.filer().kill();
    c.volumes[0].restart().await.unwrap();
    c.filer().start().await.unwrap();
    assert_tree(&f, &files).await;

    // Rename a file and a directory, delete a directory recursively; survive another restart.
    f.rename("/t/one-byte", "/t/renamed").await.unwrap();
    let v = files.remove("/t/one-byte").unwrap();
    files.insert("/t/renamed".into(), v);
    f.rename("/t/big", "/t/large").await.unwrap();
    let moved: Vec<String> = files
        .keys()
        .filter(|k| k.starts_with("/t/big/"))
        .cloned()
        .collect();
    for k in moved {
        let v = files.remove(&k).unwrap();
        files.insert(k.replacen("/t/big/", "/t/large/", 1), v);
    }
    f.delete("/t/small", true).await.unwrap();
    files.retain(|k, _| !k.starts_with("/t/small/"));
    c.filer().restart().await.unwrap();
    c.volumes[0].stop(std::time::Duration::from_secs(15)).await;
    c.volumes[0].start().await.unwrap();
    assert_tree(&f, &files).await;
    for gone in ["/t/one-byte", "/t/big/multi-0", "/t/small/f000"] {
        let err = f
            .get_file(gone)
            .await
            .expect_err("gone after rename/delete");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{gone}: {err}");
    }
    let top = f.list_dir("/t", None, 100).await.unwrap();
    let top: Vec<&str> = top.entries.iter().map(|e| e.full_path.as_str()).collect();
    assert_eq!(
        top,
        ["/t/empty", "/t/exactly-one-chunk", "/t/large", "/t/renamed"]
    );
}
