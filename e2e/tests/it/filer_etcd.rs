//! Several filers on one namespace (issue 18): two real `kelp-filer` processes with
//! `--store etcd` on one real etcd, beside a master and a volume server. What one writes the
//! other reads; one is SIGKILLed under writes through both, the other goes on, and every
//! acknowledged file reads back byte-identical through the survivor and the restarted one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::HttpClient;
use common::client::filer::FilerClient;
use e2e::{Cluster, ClusterOptions, ServiceHandle};
use testkit::etcd::Etcd;

/// A filer of `c`'s master whose namespace is in `etcd`.
fn etcd_filer(c: &Cluster, etcd: &Etcd, name: &str) -> ServiceHandle {
    ServiceHandle::new(
        c.root(),
        name,
        "kelp-filer",
        vec![
            "--master".into(),
            c.master.addr().to_string(),
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            etcd.endpoint().to_owned(),
        ],
    )
}

fn client(f: &ServiceHandle) -> FilerClient {
    FilerClient::new(
        HttpClient::new(Duration::from_secs(30)),
        &f.addr().to_string(),
    )
}

/// Writes files `/ha/<tag>-<i>` through `filer` until `stop`; returns those acknowledged,
/// each with when its answer came.
async fn write_until(
    filer: FilerClient,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Bytes, Instant)> {
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = format!("/ha/{tag}-{i}");
        i += 1;
        let data = e2e::volume::random(1 + (i * 977) % 20_000);
        if filer.put_file(&path, data.clone()).await.is_ok() {
            acked.push((path, data, Instant::now()));
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_filers_on_one_etcd_when_one_is_sigkilled_under_writes_should_lose_no_acknowledged_file()
 {
    let etcd = Etcd::start();
    let c = Cluster::start(ClusterOptions::default()).await.unwrap();
    let mut a = etcd_filer(&c, &etcd, "filer-a");
    let mut b = etcd_filer(&c, &etcd, "filer-b");
    a.start().await.unwrap();
    b.start().await.unwrap();

    // One namespace: a file written through A is read through B and the other way round,
    // and a directory listed through either holds both.
    let one = Bytes::from_static(b"written through A");
    let two = Bytes::from_static(b"written through B");
    client(&a)
        .put_file("/shared/one.txt", one.clone())
        .await
        .unwrap();
    client(&b)
        .put_file("/shared/two.txt", two.clone())
        .await
        .unwrap();
    assert_eq!(client(&b).get_file("/shared/one.txt").await.unwrap(), one);
    assert_eq!(client(&a).get_file("/shared/two.txt").await.unwrap(), two);

    // Writes through both; A is SIGKILLed with requests in flight, B goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let through_a = tokio::spawn(write_until(client(&a), "a", stop.clone()));
    let through_b = tokio::spawn(write_until(client(&b), "b", stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked_a, acked_b) = (through_a.await.unwrap(), through_b.await.unwrap());
    eprintln!(
        "acknowledged {} files through A (SIGKILLed), {} through B ({} after the kill)",
        acked_a.len(),
        acked_b.len(),
        acked_b.iter().filter(|(_, _, at)| *at > killed).count()
    );
    assert!(
        !acked_a.is_empty() && !acked_b.is_empty(),
        "both filers took writes"
    );
    let after_kill = acked_b.iter().filter(|(_, _, at)| *at > killed).count();
    assert!(after_kill > 0, "B took no write after A was killed");

    // Every acknowledged file, through the survivor and through the restarted A.
    a.start().await.unwrap();
    for filer in [&b, &a] {
        let fc = client(filer);
        for (path, data, _) in acked_a.iter().chain(&acked_b) {
            let got = fc
                .get_file(path)
                .await
                .unwrap_or_else(|e| panic!("{}: acknowledged {path}: {e}", filer.addr()));
            assert!(got == *data, "{}: {path} differs", filer.addr());
        }
    }
    drop((a, b, c, etcd));
}
