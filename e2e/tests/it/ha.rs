//! High availability on etcd (issue 18), with real processes:
//!
//! - masters: two `kelp-master`s elect a leader on a real etcd; volume servers heartbeat both;
//!   a filer, a broker and the blob writers are given both. The leader is stopped at random
//!   moments (SIGKILL, every third time SIGTERM) `E2E_MASTER_KILLS` times (default 12) under
//!   blob writes and durable publishes, and cut off from etcd by a TCP proxy;
//! - the whole HA cluster: a three-member etcd, two masters, two filers sharing one namespace
//!   on it, three volume servers and two brokers sharing the partitions; the leading master, a
//!   filer, one of the brokers and an etcd member are SIGKILLed in turn at random moments,
//!   `E2E_HA_KILLS` times (default 52), under blob writes, file writes and durable publishes
//!   (through both brokers, and the probe through the one not killed).
//!
//! After each stop a probe measures how long until writes are acknowledged again; at the end
//! no file key was handed out twice, and every acknowledged blob, file and record reads back
//! byte-identical.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::HttpClient;
use common::client::volume::BlobClient;
use common::ids::FileId;
use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions, ServiceHandle};
use rand::Rng;
use testkit::etcd::Etcd;

/// The leader lease's TTL the masters run with, in seconds.
const TTL_SECS: u64 = 2;

/// A master of the election on `endpoints` (etcd's client addresses, comma-separated).
fn master(root: &std::path::Path, name: &str, endpoints: &str) -> ServiceHandle {
    ServiceHandle::new(
        root,
        name,
        "kelp-master",
        vec![
            "--pulse-ms".into(),
            "300".into(),
            "--etcd-endpoints".into(),
            endpoints.to_owned(),
            "--leader-ttl-secs".into(),
            TTL_SECS.to_string(),
        ],
    )
}

/// Publishes batches of four records durably to `topic` (two partitions) until `stop`, each
/// through the next of `brokers` (a standby redirects to the active one, a dead one is
/// skipped), recording what was acknowledged in `checker`.
fn spawn_publisher(
    brokers: Vec<Broker>,
    topic: &'static str,
    checker: Arc<Mutex<Checker>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let recs: Vec<(u32, String)> = (0..4)
                .map(|i| ((n % 2) as u32, format!("n{n}-i{i}")))
                .collect();
            let broker = &brokers[n as usize % brokers.len()];
            match broker.publish(topic, &recs, "durable").await {
                Ok(offsets) => checker.lock().unwrap().ack(topic, &recs, &offsets),
                Err(_) => {
                    checker.lock().unwrap().rejected += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            n += 1;
        }
    })
}

/// No file key was handed out twice (keys are cluster-wide: one sequencer at a time), and
/// every acknowledged blob reads back byte-identical through `reader`.
async fn check_blobs(acked: &[(FileId, Bytes)], reader: &BlobClient) {
    let mut keys = HashSet::new();
    for (fid, _) in acked {
        assert!(
            keys.insert(fid.key),
            "file key {} handed out twice ({fid})",
            fid.key
        );
    }
    for (fid, data) in acked {
        let got = reader
            .download(fid)
            .await
            .unwrap_or_else(|e| panic!("acknowledged blob {fid}: {e}"));
        assert!(got == *data, "blob {fid} differs");
    }
}

/// The `--master` list of `masters`: their addresses, comma-separated.
fn addr_list(masters: &[ServiceHandle]) -> String {
    masters
        .iter()
        .map(|m| m.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `n` volume servers heartbeating every master of `list`.
async fn start_volumes(root: &std::path::Path, n: usize, list: &str) -> Vec<ServiceHandle> {
    let mut volumes = Vec::new();
    for i in 0..n {
        let mut v = ServiceHandle::new(
            root,
            &format!("volume{i}"),
            "kelp-volume",
            vec![
                "--master".into(),
                list.to_owned(),
                "--heartbeat-interval-ms".into(),
                "200".into(),
            ],
        );
        v.start().await.unwrap();
        volumes.push(v);
    }
    volumes
}

/// Which of `masters` says it leads, waiting up to 20 s for one to.
async fn leader(masters: &[ServiceHandle]) -> usize {
    let http = e2e::http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, m) in masters.iter().enumerate() {
            let status = http.get(format!("{}/cluster/status", m.url())).send().await;
            if let Ok(r) = status
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["IsLeader"] == true
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no master leads after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Uploads blobs until `stop`; returns the acknowledged ones.
async fn write_blobs(blobs: BlobClient, stop: Arc<AtomicBool>) -> Vec<(FileId, Bytes)> {
    let mut acked = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let data = e2e::volume::random(1 + (i * 7919) % 30_000);
        match blobs
            .upload(&AssignQuery::default(), data.clone(), &Default::default())
            .await
        {
            Ok(w) => acked.push((w.fid, data)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_masters_on_etcd_when_the_leader_is_killed_repeatedly_should_resume_writes_and_never_reissue_a_file_id()
 {
    let kills: usize = std::env::var("E2E_MASTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let etcd = Etcd::start();
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-ha-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let mut masters = vec![
        master(root, "master-a", etcd.endpoint()),
        master(root, "master-b", etcd.endpoint()),
    ];
    for m in &mut masters {
        m.start().await.unwrap();
    }
    let list = addr_list(&masters);
    let others = start_volumes(root, 2, &list).await;
    let mut filer = ServiceHandle::new(
        root,
        "filer",
        "kelp-filer",
        vec!["--master".into(), list.clone()],
    );
    filer.start().await.unwrap();
    let mut broker = ServiceHandle::new(
        root,
        "broker",
        "kelp-broker",
        vec![
            "--master".into(),
            list.clone(),
            "--filer".into(),
            filer.addr().to_string(),
            "--kafka-port".into(),
            "0".into(),
        ],
    );
    broker.start().await.unwrap();
    let blobs = || BlobClient::new(HttpClient::new(Duration::from_secs(10)), &list);

    // The standby redirects to the leader: a 307 naming it, which a plain HTTP client
    // (reqwest's defaults, as curl -L) follows to an assign.
    let first = leader(&masters).await;
    let standby = &masters[1 - first];
    let no_follow = e2e::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .post(format!("{}/dir/assign", standby.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/dir/assign", masters[first].addr()).as_str()
    );
    let r = e2e::http_client()
        .post(format!("{}/dir/assign", standby.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let a: serde_json::Value = r.json().await.unwrap();
    assert!(a["fid"].is_string(), "{a}");

    // Writers: blobs through the master list, durable records through the broker.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(write_blobs(blobs(), stop.clone())))
        .collect();
    let pub_broker = Broker::new(broker.url());
    pub_broker.create_topic("ha/master", 2).await;
    let checker = Arc::new(Mutex::new(Checker::default()));
    let publisher = spawn_publisher(
        vec![pub_broker.clone()],
        "ha/master",
        checker.clone(),
        stop.clone(),
    );

    let probe = blobs();
    let mut probed = Vec::new();
    let mut resumes = Vec::new();
    let mut rng = rand::rng();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        let l = leader(&masters).await;
        let how = if k % 3 == 2 { "SIGTERM" } else { "SIGKILL" };
        let stopped = Instant::now();
        if how == "SIGTERM" {
            assert!(masters[l].stop(Duration::from_secs(10)).await, "clean stop");
        } else {
            masters[l].kill();
        }
        // A write started after the stop, acknowledged: the other master took over.
        let resumed = loop {
            let data = e2e::volume::random(100 + k);
            match probe
                .upload(&AssignQuery::default(), data.clone(), &Default::default())
                .await
            {
                Ok(w) => {
                    probed.push((w.fid, data));
                    break stopped.elapsed();
                }
                Err(e) => {
                    assert!(
                        stopped.elapsed() < Duration::from_secs(30),
                        "no write acknowledged 30 s after the leader's {how}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        eprintln!("kill {k}: leader {l} {how}, writes resumed after {resumed:?}");
        resumes.push((how, resumed));
        masters[l].start().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = probed;
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    publisher.await.unwrap();

    check_blobs(&acked, &blobs()).await;
    // Every acknowledged record too.
    assert!(pub_broker.flush().await.is_success());
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    let verified = checker.verify(&pub_broker).await;

    let worst = |how: &str| {
        resumes
            .iter()
            .filter(|(h, _)| *h == how)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    };
    let (kill_worst, term_worst) = (worst("SIGKILL"), worst("SIGTERM"));
    eprintln!(
        "master HA: {kills} leader stops; writes resumed within {kill_worst:?} after a SIGKILL \
         (lease TTL {TTL_SECS} s) and {term_worst:?} after a SIGTERM; {} blobs and {verified} \
         records acknowledged and verified, {} publishes rejected",
        acked.len(),
        checker.rejected
    );
    assert!(checker.acknowledged > 0, "no record was acknowledged");
    // The bound: a SIGKILLed leader's lease expires within the TTL, a standby polls every
    // third of it, and the client's next failover round follows; a stopped leader hands its
    // lease back at once.
    let bound = Duration::from_secs(TTL_SECS * 3 + 3);
    assert!(
        kill_worst < bound,
        "writes resumed only after {kill_worst:?}"
    );
    // After a SIGTERM no lease has to expire: within a standby's poll, a client's failover
    // round and a margin, well below a SIGKILL's TTL plus those.
    assert!(
        term_worst < Duration::from_secs(TTL_SECS) + Duration::from_millis(1500),
        "writes resumed only after {term_worst:?}"
    );
    for s in masters.iter().chain(&others).chain([&filer, &broker]) {
        assert!(
            s.panics().is_empty(),
            "{} panicked: {:?}",
            s.name(),
            s.panics()
        );
    }
}

/// What `/cluster/status` of `m` says: whether it leads, and whom it names as the leader.
async fn status_of(m: &ServiceHandle) -> Option<(bool, String)> {
    let v: serde_json::Value = e2e::http_client()
        .get(format!("{}/cluster/status", m.url()))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((v["IsLeader"] == true, v["Leader"].as_str()?.to_owned()))
}

/// Waits up to `within` for `check` on `m`'s status; returns how long it took.
async fn until_status(
    m: &ServiceHandle,
    within: Duration,
    what: &str,
    check: impl Fn(bool, &str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Some((leads, leader)) = status_of(m).await
            && check(leads, &leader)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{}: not {what} after {within:?}",
            m.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A network partition between the leading master and etcd (a TCP proxy cut in between):
/// the other master is elected within the lease TTL and a poll, the cut-off leader steps down
/// and refuses assigns (503 rather than ids), writes through the master list go on, and once
/// the link heals the old leader follows the new one. No file key is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_leading_master_cut_off_from_etcd_should_hand_over_and_fence_it() {
    let etcd = Etcd::start();
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-ha-cut-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let etcd_addr: std::net::SocketAddr = etcd.endpoint().parse().unwrap();
    let links = [
        e2e::proxy::CutProxy::start(etcd_addr).await,
        e2e::proxy::CutProxy::start(etcd_addr).await,
    ];
    let mut masters = Vec::new();
    for (name, link) in ["master-a", "master-b"].into_iter().zip(&links) {
        let mut m = master(root, name, &link.addr().to_string());
        m.start().await.unwrap();
        masters.push(m);
    }
    let list = addr_list(&masters);
    let _volumes = start_volumes(root, 1, &list).await;
    let blobs = || BlobClient::new(HttpClient::new(Duration::from_secs(10)), &list);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_blobs(blobs(), stop.clone()));

    let old = leader(&masters).await;
    let new = 1 - old;
    let (old_addr, new_addr) = (
        masters[old].addr().to_string(),
        masters[new].addr().to_string(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    links[old].cut();
    // Measured together, from the cut: the new leader's election and the old one's step-down.
    let (elected, stepped_down) = tokio::join!(
        until_status(
            &masters[new],
            Duration::from_secs(15),
            "the leader",
            |l, _| l
        ),
        until_status(
            &masters[old],
            Duration::from_secs(15),
            "stepped down",
            |l, _| !l
        ),
    );
    eprintln!(
        "partition: master {new_addr} elected {elected:?} after the cut; {old_addr} stepped down after {stepped_down:?}"
    );
    // Cut off, the old leader hands out nothing: an assign sent to it straight is refused.
    let r = e2e::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/dir/assign", masters[old].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let acked_before_heal = {
        // Writes go on through the new leader while the old one is cut off.
        let probe = blobs();
        probe
            .upload(
                &AssignQuery::default(),
                Bytes::from_static(b"during"),
                &Default::default(),
            )
            .await
            .unwrap()
    };
    assert_eq!(
        probe_base(&list).await,
        format!("http://{new_addr}"),
        "the client follows the new leader"
    );

    links[old].heal();
    until_status(
        &masters[old],
        Duration::from_secs(15),
        "a follower of the new leader",
        |l, who| !l && who == new_addr,
    )
    .await;
    assert!(
        links[old].refused() > 0,
        "the cut was real: connections were refused"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = writer.await.unwrap();
    acked.push((acked_before_heal.fid, Bytes::from_static(b"during")));
    check_blobs(&acked, &blobs()).await;
    eprintln!(
        "partition: {} blobs acknowledged and read back",
        acked.len()
    );
}

/// The master a fresh client of `list` settles on after one assign.
async fn probe_base(list: &str) -> String {
    let c =
        common::client::master::MasterClient::new(HttpClient::new(Duration::from_secs(10)), list);
    c.assign(&AssignQuery::default()).await.unwrap();
    c.base()
}

/// Writes files `/ha/<i>` through whichever of `filers` answers (starting with the next one
/// each time) until `stop`; returns the acknowledged ones.
async fn write_files(
    filers: Vec<common::client::filer::FilerClient>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Bytes)> {
    let mut acked = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let path = format!("/ha/f{i}");
        let data = e2e::volume::random(1 + (i * 104_729) % 50_000);
        match filers[i % filers.len()].put_file(&path, data.clone()).await {
            Ok(_) => acked.push((path, data)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

/// Retries `op` until it succeeds, failing the test after 60 s; returns when it succeeded.
pub(crate) async fn eventually<
    T,
    E: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{what} still failing after 60 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The whole HA cluster under writes, its members SIGKILLed in turn (see the module doc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_ha_cluster_when_a_master_filer_broker_or_etcd_member_is_killed_repeatedly_should_lose_nothing_acknowledged()
 {
    use common::client::filer::FilerClient;
    let kills: usize = std::env::var("E2E_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(52);
    let mut etcd = testkit::etcd::EtcdCluster::start(3);
    let endpoints = etcd.endpoints().join(",");
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-ha-all-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let mut masters = Vec::new();
    for name in ["master-a", "master-b"] {
        let mut m = master(root, name, &endpoints);
        m.start().await.unwrap();
        masters.push(m);
    }
    let list = addr_list(&masters);
    let volumes = start_volumes(root, 3, &list).await;
    let mut filers = Vec::new();
    for name in ["filer-a", "filer-b"] {
        let mut f = ServiceHandle::new(
            root,
            name,
            "kelp-filer",
            vec![
                "--master".into(),
                list.clone(),
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                endpoints.clone(),
            ],
        );
        f.start().await.unwrap();
        filers.push(f);
    }
    // Two brokers sharing the partitions, each on its own filer.
    let mut brokers = Vec::new();
    for (i, name) in ["broker-a", "broker-b"].into_iter().enumerate() {
        let mut b = ServiceHandle::new(
            root,
            name,
            "kelp-broker",
            vec![
                "--master".into(),
                list.clone(),
                "--filer".into(),
                filers[i].addr().to_string(),
                "--kafka-port".into(),
                "0".into(),
                "--flush-retry-max-ms".into(),
                "200".into(),
                "--lease-ttl-secs".into(),
                "3".into(),
            ],
        );
        // A broker whose filer is down past its lease gives its partitions up (and its
        // in-flight commits may be refused as the other takes them over).
        b.expect_errors("another broker took the partition over")
            .expect_errors("moved to another broker before its buffered records");
        b.start().await.unwrap();
        brokers.push(b);
    }
    let blobs = || BlobClient::new(HttpClient::new(Duration::from_secs(10)), &list);
    let filer_clients = |filers: &[ServiceHandle]| {
        filers
            .iter()
            .map(|f| {
                FilerClient::new(
                    HttpClient::new(Duration::from_secs(10)),
                    &f.addr().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let blob_writer = tokio::spawn(write_blobs(blobs(), stop.clone()));
    let file_writer = tokio::spawn(write_files(filer_clients(&filers), stop.clone()));
    let pub_brokers: Vec<Broker> = brokers.iter().map(|b| Broker::new(b.url())).collect();
    pub_brokers[0].create_topic("ha/all", 2).await;
    let checker = Arc::new(Mutex::new(Checker::default()));
    let publisher = spawn_publisher(pub_brokers.clone(), "ha/all", checker.clone(), stop.clone());

    let probe_blobs = blobs();
    let mut probed_blobs = Vec::new();
    let mut probed_files = Vec::new();
    let mut worst = [Duration::ZERO; 4];
    let names = ["leading master", "filer", "broker", "etcd member"];
    let mut rng = rand::rng();
    let started = Instant::now();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        let role = k % 4;
        let killed = Instant::now();
        match role {
            0 => {
                let l = leader(&masters).await;
                masters[l].kill();
                masters[l].start().await.unwrap();
            }
            1 => {
                let f = (k / 4) % 2;
                filers[f].kill();
                filers[f].start().await.unwrap();
            }
            2 => {
                let b = (k / 4) % 2;
                brokers[b].kill();
                brokers[b].start().await.unwrap();
            }
            _ => {
                let m = (k / 4) % etcd.len();
                // The helper sleeps while etcd comes up: off the runtime's two workers.
                tokio::task::block_in_place(|| {
                    etcd.kill(m);
                    etcd.restart(m);
                });
            }
        }
        // Writes of every kind are acknowledged again.
        let data = e2e::volume::random(200 + k);
        let (query, opts) = (AssignQuery::default(), Default::default());
        let w = eventually("a blob write", || {
            probe_blobs.upload(&query, data.clone(), &opts)
        })
        .await;
        probed_blobs.push((w.fid, data.clone()));
        let path = format!("/ha/probe{k}");
        let fc = filer_clients(&filers);
        eventually("a file write", || fc[k % 2].put_file(&path, data.clone())).await;
        probed_files.push((path, data));
        let recs = vec![(0u32, format!("probe{k}"))];
        // Through the broker that was not killed (it redirects to the owner).
        let via = &pub_brokers[(k / 4 + 1) % 2];
        let offsets = eventually("a durable publish", || {
            via.publish("ha/all", &recs, "durable")
        })
        .await;
        checker.lock().unwrap().ack("ha/all", &recs, &offsets);
        worst[role] = worst[role].max(killed.elapsed());
    }
    let chaos = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut acked_blobs = blob_writer.await.unwrap();
    acked_blobs.extend(probed_blobs);
    let mut acked_files = file_writer.await.unwrap();
    acked_files.extend(probed_files);
    publisher.await.unwrap();

    check_blobs(&acked_blobs, &blobs()).await;
    for fc in filer_clients(&filers) {
        for (path, data) in &acked_files {
            let got = fc
                .get_file(path)
                .await
                .unwrap_or_else(|e| panic!("acknowledged file {path}: {e}"));
            assert!(got == *data, "file {path} differs");
        }
    }
    for b in &pub_brokers {
        assert!(b.flush().await.is_success());
    }
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    let verified = checker.verify(&pub_brokers[0]).await;
    eprintln!(
        "HA chaos: {kills} SIGKILLs in {:.1}s ({} each of the leading master, a filer, one of \
         two brokers and an etcd member); worst time from a kill to blob, file and durable-publish \
         writes all acknowledged again (restart included): {}; {} blobs, {} files and \
         {verified} records acknowledged and verified; {} publishes rejected",
        chaos.as_secs_f64(),
        kills / 4,
        names
            .iter()
            .zip(worst)
            .map(|(n, d)| format!("{n} {d:.2?}"))
            .collect::<Vec<_>>()
            .join(", "),
        acked_blobs.len(),
        acked_files.len(),
        checker.rejected
    );
    for s in masters
        .iter()
        .chain(&volumes)
        .chain(&filers)
        .chain(&brokers)
    {
        assert!(
            s.panics().is_empty(),
            "{} panicked: {:?}",
            s.name(),
            s.panics()
        );
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `h`'s process.
pub(crate) fn signal(h: &ServiceHandle, signal: &str) {
    let pid = h.pid().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Waits until a durable publish through `broker` is acknowledged; returns how long it took.
async fn publish_eventually(
    broker: &Broker,
    recs: &[(u32, String)],
    checker: &Mutex<Checker>,
) -> Duration {
    let start = Instant::now();
    let offsets = eventually("a durable publish", || {
        broker.publish("ha/brokers", recs, "durable")
    })
    .await;
    checker.lock().unwrap().ack("ha/brokers", recs, &offsets);
    start.elapsed()
}

/// Two brokers on one filer with the broker lease (TTL 2 s): the second is a standby that
/// redirects clients to the active one. SIGKILL the active: the standby takes every partition
/// over once the lease expires, and the restarted one is the standby now. SIGSTOP the active
/// past its TTL: the other takes over, and the paused one, resumed, finds itself deposed and
/// stops (its partitions were fenced). Every acknowledged record reads back once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_active_and_a_standby_broker_when_the_active_dies_or_pauses_should_take_over_and_lose_nothing()
 {
    let lease = [
        "--ownership",
        "standby",
        "--lease-ttl-secs",
        "2",
        "--kafka-port",
        "0",
    ];
    let mut c = Cluster::start(ClusterOptions::with_broker(&lease))
        .await
        .unwrap();
    let mut second = c.start_broker("broker2", &lease).await.unwrap();
    let ready: serde_json::Value = e2e::http_client()
        .get(format!("{}/readyz", second.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "standby", "{ready}");
    assert_eq!(ready["active"], c.broker().addr().to_string().as_str());
    let r = e2e::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/topics", second.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);

    let brokers = [Broker::new(c.broker().url()), Broker::new(second.url())];
    brokers[1].create_topic("ha/brokers", 2).await; // through the redirect
    let checker = Arc::new(Mutex::new(Checker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(
        brokers.to_vec(),
        "ha/brokers",
        checker.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Probes that neither follow a standby's redirect nor wait on a paused broker.
    let probe_http = e2e::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let probes = [
        Broker::with_client(c.broker().url(), probe_http.clone()),
        Broker::with_client(second.url(), probe_http),
    ];

    // SIGKILL the active broker: the standby takes over.
    c.broker().kill();
    let took = publish_eventually(&probes[1], &[(0, "after-kill".into())], &checker).await;
    eprintln!("brokers: the standby took over {took:?} after the active one's SIGKILL");
    c.broker().start().await.unwrap();
    let ready: serde_json::Value = e2e::http_client()
        .get(format!("{}/readyz", c.broker().url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["status"], "standby",
        "the restarted broker stands by: {ready}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // SIGSTOP the active one (now the second) past its TTL; the first takes over.
    second
        .expect_errors("another broker took the broker lease over")
        .expect_errors("another broker took the partition over")
        // Publishes in flight when it was paused: never acknowledged, refused when it resumes.
        .expect_errors("could not be flushed before shutdown")
        .expect_errors("deposed: ");
    signal(&second, "STOP");
    let took = publish_eventually(&probes[0], &[(1, "after-pause".into())], &checker).await;
    eprintln!("brokers: took over {took:?} after the active one was paused");
    signal(&second, "CONT");
    // Resumed, the paused broker finds the lease taken and stops.
    let start = Instant::now();
    while second.is_running() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the deposed broker did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    assert!(brokers[0].flush().await.is_success());
    let verified = checker.verify(&brokers[0]).await;
    eprintln!(
        "brokers: {verified} records acknowledged and verified, {} publishes refused",
        checker.rejected
    );
    assert!(verified > 0);
}
