//! Power cuts (unsynced bytes dropped), I/O errors and a full disk, through the real binaries.
//!
//! `kelp server` runs with its data directory on a [`powercut`] FUSE mount: every byte a
//! service wrote but did not fsync (and every name whose directory it did not fsync) is lost
//! when the test cuts the power. The checks:
//! - under load, blob writes, filer files and durable publishes are acknowledged; the server is
//!   SIGKILLed, the power cut, the disk remounted and the server restarted, three times: every
//!   acknowledged blob, file and record reads back byte-identical, and every record once
//!   reported durable is still there, unchanged;
//! - an EIO on a volume's `.dat` during recovery: the volume is reported read-only (metric,
//!   `/status`, log), nothing is cut, and once the disk reads again every blob is there;
//! - a full disk under a volume write: 507 JSON, every acknowledged blob still reads, also
//!   after a power cut.
//! - a vacuum cut by SIGKILL and a power cut at random moments (calibrated to how long one
//!   takes): every live blob reads back, no deleted one returns, and the space a finished
//!   vacuum gave back stays given back.
//!
//! Needs /dev/fuse and root (as CI has): a mount that fails fails the test with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::HttpClient;
use common::client::filer::FilerClient;
use common::client::volume::{BlobClient, WriteOptions};
use common::ids::FileId;
use e2e::broker::{Broker, Checker, Read};
use e2e::server::KelpServer;
use e2e::volume::{metric, random, vacuum};
use powercut::{Handle, PowerCutFs, ReadFault};
use rand::Rng;

const TOPIC: &str = "pc/t";
const PARTITIONS: u32 = 2;

/// A temp dir holding the backing directory, the mount point and the server log.
struct Disk {
    tmp: tempfile::TempDir,
}

impl Disk {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kelp-e2e-powercut-")
            .tempdir()
            .unwrap();
        Self { tmp }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn backing(&self) -> PathBuf {
        self.dir().join("backing")
    }

    /// The server's data directory, on the mount.
    fn data(&self) -> PathBuf {
        self.dir().join("mnt").join("data")
    }

    fn mount(&self) -> Handle {
        PowerCutFs::mount(self.backing(), self.dir().join("mnt")).unwrap_or_else(|e| {
            panic!("the power-cut tests need a FUSE mount (/dev/fuse, root): {e}")
        })
    }

    fn start(&self) -> KelpServer {
        KelpServer::start_with_data(self.dir(), &self.data())
    }

    async fn url(&self, service: &str) -> String {
        KelpServer::ready_url_with_data(self.dir(), &self.data(), service).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }
}

/// SIGKILLs the server and reaps it.
fn kill(mut server: KelpServer) {
    server.0.kill().unwrap();
    server.0.wait().unwrap();
}

fn http() -> HttpClient {
    HttpClient::new(Duration::from_secs(30))
}

/// The clients of one running server.
struct Clients {
    blobs: BlobClient,
    filer: FilerClient,
    broker: Broker,
}

impl Clients {
    async fn of(disk: &Disk) -> Self {
        Self {
            blobs: BlobClient::new(http(), &disk.url("master").await),
            filer: FilerClient::new(http(), &disk.url("filer").await),
            broker: Broker::new(disk.url("broker").await),
        }
    }
}

/// Everything acknowledged so far, and what the broker reported durable.
#[derive(Default)]
struct Acked {
    blobs: Vec<(FileId, Bytes)>,
    files: Vec<(String, Bytes)>,
    records: Checker,
    /// Per partition, the records read back at the last verification (all durable then).
    durable: BTreeMap<u32, Vec<Read>>,
}

impl Acked {
    /// Checks everything acknowledged reads back, and that no record reported durable before
    /// is gone or changed.
    async fn verify(&mut self, c: &Clients, when: &str) {
        for (fid, data) in &self.blobs {
            let got = c.blobs.download(fid).await;
            let got = got.unwrap_or_else(|e| panic!("{when}: acknowledged blob {fid}: {e}"));
            assert!(got == *data, "{when}: blob {fid} differs");
        }
        for (path, data) in &self.files {
            let got = c.filer.get_file(path).await;
            let got = got.unwrap_or_else(|e| panic!("{when}: acknowledged file {path}: {e}"));
            assert!(got == *data, "{when}: file {path} differs");
        }
        self.records.verify(&c.broker).await;
        for p in 0..PARTITIONS {
            let (_, durable, end) = c.broker.offsets(TOPIC, p).await;
            assert!(durable <= end, "{when}: partition {p}: {durable} > {end}");
            let read = c.broker.read_all(TOPIC, p, 0).await;
            assert_eq!(
                read.len() as u64,
                durable,
                "{when}: partition {p} serves a record past its durable offset, or misses one"
            );
            let before = self.durable.entry(p).or_default();
            assert!(
                read.len() >= before.len() && read[..before.len()] == before[..],
                "{when}: partition {p}: records once reported durable are gone or changed \
                 ({} before, {} now)",
                before.len(),
                read.len()
            );
            *before = read;
        }
    }
}

/// Counts of acknowledgements during one load phase.
#[derive(Default)]
struct Progress {
    blobs: AtomicUsize,
    files: AtomicUsize,
    publishes: AtomicUsize,
}

/// Runs blob, file and publish loops until `stop`; returns what each acknowledged.
async fn load(
    c: Arc<Clients>,
    cycle: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> (
    Vec<(FileId, Bytes)>,
    Vec<(String, Bytes)>,
    Vec<(Vec<(u32, String)>, Vec<u64>)>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let going = move |stop: &AtomicBool| !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    let blobs = {
        let (c, stop, progress) = (c.clone(), stop.clone(), progress.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while going(&stop) {
                let data = random(rand::rng().random_range(1..48 << 10));
                if let Ok(w) = c
                    .blobs
                    .upload(
                        &AssignQuery::default(),
                        data.clone(),
                        &WriteOptions::default(),
                    )
                    .await
                {
                    acked.push((w.fid, data));
                    progress.blobs.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        })
    };
    let files = {
        let (c, stop, progress) = (c.clone(), stop.clone(), progress.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while going(&stop) {
                let path = format!("/pc/cycle{cycle}/f{i}.bin");
                i += 1;
                let data = random(rand::rng().random_range(1..24 << 10));
                if c.filer.put_file(&path, data.clone()).await.is_ok() {
                    acked.push((path, data));
                    progress.files.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        })
    };
    let publishes = {
        let (c, stop, progress) = (c.clone(), stop.clone(), progress.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while going(&stop) {
                let recs: Vec<(u32, String)> = (0..5)
                    .map(|j| (j % PARTITIONS, format!("c{cycle}-p{i}-r{j}")))
                    .collect();
                i += 1;
                if let Ok(o) = c.broker.publish(TOPIC, &recs, "durable").await {
                    acked.push((recs, o));
                    progress.publishes.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        })
    };
    (
        blobs.await.unwrap(),
        files.await.unwrap(),
        publishes.await.unwrap(),
    )
}

/// Polls `done` until it holds (30 s at most).
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_kelp_server_on_a_disk_that_loses_unsynced_bytes_when_the_power_is_cut_three_times_under_load_should_keep_everything_acknowledged()
 {
    let disk = Disk::new();
    let mut fs = disk.mount();
    // The filer's RocksDB directory used to be created without an fsync of its parent: the
    // first run of this test lost the whole metadata store at a power cut (issue 11).
    let mut acked = Acked::default();
    for cycle in 0..3 {
        let server = disk.start();
        let c = Arc::new(Clients::of(&disk).await);
        if cycle == 0 {
            c.broker.create_topic(TOPIC, PARTITIONS).await;
        }
        acked.verify(&c, &format!("after power cut {cycle}")).await;

        // Load, and SIGKILL while requests are in flight once each kind has a few acks.
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let load = tokio::spawn(load(c.clone(), cycle, stop.clone(), progress.clone()));
        wait_for("acknowledgements under load", || {
            progress.blobs.load(Ordering::Relaxed) >= 15
                && progress.files.load(Ordering::Relaxed) >= 8
                && progress.publishes.load(Ordering::Relaxed) >= 8
        })
        .await;
        kill(server);
        stop.store(true, Ordering::Relaxed);
        let (blobs, files, publishes) = load.await.unwrap();
        eprintln!(
            "cycle {cycle}: acknowledged {} blobs, {} files, {} durable publishes",
            blobs.len(),
            files.len(),
            publishes.len()
        );
        acked.blobs.extend(blobs);
        acked.files.extend(files);
        for (recs, offsets) in publishes {
            acked.records.ack(TOPIC, &recs, &offsets);
        }

        let report = fs.power_cut().unwrap();
        eprintln!(
            "power cut {cycle}: {} files lost {} unsynced bytes, {} namespace operations \
             undone ({:?}), not reverted: {:?}",
            report.files_with_lost_data.len(),
            report.lost_dirty_bytes,
            report.reverted.len(),
            report.reverted.iter().take(10).collect::<Vec<_>>(),
            report.not_reverted
        );
        fs = disk.mount();
    }
    let _server = disk.start();
    let c = Clients::of(&disk).await;
    acked.verify(&c, "after the last power cut").await;
    let log = disk.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(_server);
    drop(fs);
}

/// The volume data files of the server under `data`.
fn dat_files(backing_data: &Path) -> Vec<PathBuf> {
    let dir = backing_data.join("volume");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    v.sort();
    v
}

async fn upload(c: &Clients, n: usize) -> Vec<(FileId, Bytes)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let data = random(4000);
        let w = c
            .blobs
            .upload(
                &AssignQuery::default(),
                data.clone(),
                &WriteOptions::default(),
            )
            .await
            .expect("upload a blob");
        out.push((w.fid, data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_eio_on_a_volume_dat_during_recovery_should_report_the_volume_read_only_and_cut_nothing()
 {
    let disk = Disk::new();
    let fs = disk.mount();
    let server = disk.start();
    let c = Clients::of(&disk).await;
    let blobs = upload(&c, 20).await;
    kill(server);
    fs.power_cut().unwrap();

    let backing_data = disk.backing().join("data");
    let dats = dat_files(&backing_data);
    assert!(!dats.is_empty(), "no .dat under {}", backing_data.display());
    let lens: Vec<u64> = dats
        .iter()
        .map(|d| std::fs::metadata(d).unwrap().len())
        .collect();
    // Every read of a .dat past its 8-byte superblock fails: recovery reads each needle header.
    let fs = disk.mount();
    let fault = fs.fail_reads(ReadFault::suffix(".dat", libc::EIO).within(8..u64::MAX));
    let server = disk.start();
    let volume = disk.url("volume").await;
    assert!(fault.hits() > 0, "recovery never read the .dat");
    assert!(metric(&volume, "kelp_volume_recovery_io_errors_total").await >= 1);
    let status: serde_json::Value = e2e::get(format!("{volume}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vols = status["Volumes"].as_array().expect("Volumes");
    assert!(
        vols.iter().any(|v| v["read_only"] == true),
        "a volume whose recovery hit EIO is read-only: {status}"
    );
    assert!(
        disk.log()
            .contains("volume recovery stopped by an I/O error"),
        "{}",
        disk.log()
    );
    for (d, len) in dats.iter().zip(&lens) {
        assert_eq!(
            std::fs::metadata(d).unwrap().len(),
            *len,
            "{} was cut",
            d.display()
        );
    }

    // The disk reads again: every blob is there.
    kill(server);
    fs.clear_read_faults();
    let _server = disk.start();
    let c = Clients::of(&disk).await;
    for (fid, data) in &blobs {
        assert_eq!(&c.blobs.download(fid).await.unwrap(), data, "{fid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_full_disk_when_a_volume_write_hits_it_should_answer_507_keep_serving_reads_and_lose_nothing_acknowledged()
 {
    let disk = Disk::new();
    let fs = disk.mount();
    let server = disk.start();
    let c = Clients::of(&disk).await;
    let mut acked = upload(&c, 5).await;
    fs.space_limit(Some(fs.used_bytes() + (1 << 20)));
    let mut full = None;
    for _ in 0..100 {
        let data = random(64 << 10);
        match c
            .blobs
            .upload(
                &AssignQuery::default(),
                data.clone(),
                &WriteOptions::default(),
            )
            .await
        {
            Ok(w) => acked.push((w.fid, data)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("1 MiB of room fills up");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(507), "{err}");
    assert_eq!(err.code(), Some("insufficient_storage"), "{err}");
    assert!(fs.stats().enospc > 0);
    for (fid, data) in &acked {
        assert_eq!(&c.blobs.download(fid).await.unwrap(), data, "{fid}");
    }
    kill(server);
    fs.power_cut().unwrap();
    let _fs = disk.mount();
    let _server = disk.start();
    let c = Clients::of(&disk).await;
    for (fid, data) in &acked {
        assert_eq!(&c.blobs.download(fid).await.unwrap(), data, "{fid}");
    }
}

/// Every live blob reads back byte-identical and no deleted one is back.
async fn verify_vacuumed(c: &Clients, live: &[(FileId, Bytes)], deleted: &[FileId], when: &str) {
    for (fid, data) in live {
        let got = c.blobs.download(fid).await;
        let got = got.unwrap_or_else(|e| panic!("{when}: live blob {fid}: {e}"));
        assert!(got == *data, "{when}: blob {fid} differs");
    }
    for fid in deleted {
        let err = c.blobs.download(fid).await.err();
        assert_eq!(
            err.as_ref().and_then(|e| e.status()).map(|s| s.as_u16()),
            Some(404),
            "{when}: deleted blob {fid} is back ({err:?})"
        );
    }
}

/// Uploads `n` blobs and deletes 70% of them: garbage for the next vacuum.
async fn churn(c: &Clients, n: usize, live: &mut Vec<(FileId, Bytes)>, deleted: &mut Vec<FileId>) {
    for (i, (fid, data)) in upload(c, n).await.into_iter().enumerate() {
        if i % 10 < 7 {
            c.blobs.delete(&fid).await.expect("delete a blob");
            deleted.push(fid);
        } else {
            live.push((fid, data));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_vacuum_on_a_disk_that_loses_unsynced_bytes_when_the_power_is_cut_during_it_should_keep_every_live_blob_and_still_give_space_back()
 {
    let disk = Disk::new();
    let mut fs = disk.mount();
    let mut server = disk.start();
    let mut c = Clients::of(&disk).await;
    let (mut live, mut deleted) = (Vec::new(), Vec::new());
    // Calibration: how long a vacuum of one round's garbage takes here.
    churn(&c, 400, &mut live, &mut deleted).await;
    let started = Instant::now();
    let v = vacuum(&disk.url("volume").await).await.expect("a vacuum");
    let took = started.elapsed();
    assert!(
        !v.compacted.is_empty(),
        "the calibration vacuum compacted nothing: {v:?}"
    );
    eprintln!("a vacuum of 400 blobs' garbage took {took:?}");
    // New garbage, then a SIGKILL and a power cut at a random moment within 1.5x that time,
    // four times: the compacted copy is written beside the old volume, fsynced, then swapped
    // in with a rename and a directory fsync, so whichever side of the swap the cut lands on
    // is whole.
    let window = (took.as_micros() as u64 * 3 / 2).max(1);
    for round in 0..4 {
        churn(&c, 400, &mut live, &mut deleted).await;
        let url = disk.url("volume").await;
        let run = tokio::spawn(async move { vacuum(&url).await });
        let at = Duration::from_micros(rand::rng().random_range(0..window));
        tokio::time::sleep(at).await;
        kill(server);
        let outcome = run.await.unwrap();
        let report = fs.power_cut().unwrap();
        eprintln!(
            "round {round}: killed after {at:?} (vacuum {}), power cut: {} files lost {} \
             unsynced bytes, {} namespace operations undone",
            if outcome.is_ok() {
                "answered"
            } else {
                "cut short"
            },
            report.files_with_lost_data.len(),
            report.lost_dirty_bytes,
            report.reverted.len()
        );
        fs = disk.mount();
        server = disk.start();
        c = Clients::of(&disk).await;
        verify_vacuumed(&c, &live, &deleted, &format!("after power cut {round}")).await;
    }
    // A vacuum that answered, then a power cut at once: the space it gave back stays given.
    let url = disk.url("volume").await;
    vacuum(&url).await.expect("a vacuum after the power cuts");
    kill(server);
    fs.power_cut().unwrap();
    fs = disk.mount();
    let server = disk.start();
    let c = Clients::of(&disk).await;
    verify_vacuumed(&c, &live, &deleted, "after the last vacuum and a power cut").await;
    let live_bytes: u64 = live.iter().map(|(_, d)| d.len() as u64).sum();
    let dat_bytes: u64 = dat_files(&disk.backing().join("data"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!("live bytes {live_bytes}, .dat bytes after the vacuum {dat_bytes}");
    assert!(
        dat_bytes <= live_bytes + live_bytes / 5,
        "the vacuum's space did not stay given back: {dat_bytes} .dat bytes for {live_bytes} live"
    );
    let log = disk.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(server);
    drop(fs);
}
