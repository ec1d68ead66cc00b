//! Operational scenarios: a graceful rolling restart under buffered load, a volume server that
//! never comes back (with and without replication), and the filer or master unreachable while
//! publishers keep publishing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};

/// Publishers that keep publishing `acks` batches until stopped, recording every ack.
struct Load {
    stop: Arc<AtomicBool>,
    checker: Arc<Mutex<Checker>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        broker: &Broker,
        topic: &'static str,
        partitions: u32,
        acks: &'static str,
        workers: u32,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let checker = Arc::new(Mutex::new(Checker::default()));
        let tasks = (0..workers)
            .map(|w| {
                let (broker, stop, checker) = (broker.clone(), stop.clone(), checker.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let p = ((n + u64::from(w)) % u64::from(partitions)) as u32;
                        let recs: Vec<(u32, String)> =
                            (0..10).map(|i| (p, format!("w{w}-{n}-{i}"))).collect();
                        match broker.publish(topic, &recs, acks).await {
                            Ok(o) => checker.lock().unwrap().ack(topic, &recs, &o),
                            Err(_) => {
                                checker.lock().unwrap().rejected += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            checker,
            tasks,
        }
    }

    async fn finish(self) -> Checker {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.checker).unwrap().into_inner().unwrap()
    }
}

async fn flush_until_ok(b: &Broker, within: Duration) {
    let deadline = Instant::now() + within;
    while !b.flush().await.is_success() {
        assert!(
            Instant::now() < deadline,
            "the broker never became durable again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn given_buffered_load_when_every_service_is_restarted_gracefully_in_turn_should_lose_nothing()
 {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[]))
        .await
        .unwrap();
    let b = Broker::new(c.broker().url());
    b.create_topic("roll/t", 4).await;
    let load = Load::start(&b, "roll/t", 4, "buffered", 3);
    let grace = Duration::from_secs(30);
    for step in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let svc = match step {
            0 => &mut c.master,
            1 => &mut c.volumes[0],
            2 => c.filer.as_mut().unwrap(),
            _ => c.broker.as_mut().unwrap(),
        };
        assert!(svc.stop(grace).await, "{} exits 0 on SIGTERM", svc.name());
        svc.start().await.unwrap();
        if step < 2 {
            c.wait_volumes_registered(1).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let checker = load.finish().await;
    flush_until_ok(&b, Duration::from_secs(30)).await;
    let verified = checker.verify(&b).await;
    println!(
        "rolling restart: 4 graceful restarts; {} records acknowledged (buffered), {verified} verified, {} publishes rejected",
        checker.acknowledged, checker.rejected
    );
    assert_eq!(verified, checker.acknowledged);
}

#[tokio::test]
async fn given_replication_001_when_a_volume_server_never_comes_back_should_keep_reading_and_publishing()
 {
    // Three servers: with one gone for good, two copies can still be placed. (With exactly two
    // servers a 001 write cannot have two copies and is refused, never acknowledged with one:
    // see the blob tests.)
    let mut c = Cluster::start(ClusterOptions {
        volumes: 3,
        broker: true,
        broker_args: vec![
            "--replication".into(),
            "001".into(),
            "--flush-retry-max-ms".into(),
            "300".into(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let b = Broker::new(c.broker().url());
    b.create_topic("rep/t", 2).await;
    let mut checker = Checker::default();
    for i in 0..20 {
        let recs: Vec<(u32, String)> = (0..5).map(|j| (j % 2, format!("before-{i}-{j}"))).collect();
        let o = b.publish("rep/t", &recs, "durable").await.unwrap();
        checker.ack("rep/t", &recs, &o);
    }
    let mut gone = c.volumes.remove(0);
    gone.kill();
    // Reads continue from the surviving copies (the broker's segment cache is bypassed by a
    // restart, so every segment is read from a volume server).
    c.broker().restart().await.unwrap();
    let b = Broker::new(c.broker().url());
    assert_eq!(checker.verify(&b).await, 100);
    // Durable publishes continue (new volumes grow on the two live servers).
    for i in 0..20 {
        let recs: Vec<(u32, String)> = (0..5).map(|j| (j % 2, format!("after-{i}-{j}"))).collect();
        let o = b
            .publish("rep/t", &recs, "durable")
            .await
            .expect("durable publish with one server gone");
        checker.ack("rep/t", &recs, &o);
    }
    assert_eq!(checker.verify(&b).await, 200);
    drop(gone);
}

#[tokio::test]
async fn given_no_replication_when_a_volume_server_never_comes_back_should_name_the_missing_volume()
{
    let mut c = Cluster::start(ClusterOptions {
        volumes: 2,
        broker: true,
        broker_args: vec!["--flush-retry-max-ms".into(), "300".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let b = Broker::new(c.broker().url());
    b.create_topic("norep/t", 1).await;
    let first: Vec<(u32, String)> = (0..5).map(|i| (0, format!("r{i}"))).collect();
    b.publish("norep/t", &first, "durable").await.unwrap();
    // Find the server holding the segment and kill it for good.
    let holder = c
        .volumes
        .iter()
        .position(|v| {
            std::fs::read_dir(v.dir())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".dat"))
        })
        .unwrap();
    let mut gone = c.volumes.remove(holder);
    gone.kill();
    c.broker().restart().await.unwrap();
    let b = Broker::new(c.broker().url());
    let r = e2e::get(format!(
        "{}/topics/norep/t/partitions/0/records?offset=0",
        c.broker().url()
    ))
    .await
    .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(
        status >= 500,
        "reading a lost segment is an error, not a silent skip: {status} {body}"
    );
    assert!(
        body.contains("volume") || body.contains(','),
        "the error names the fid or volume: {body}"
    );
    // Durable publishes go on (to the survivor) and are acknowledged only once durable.
    let mut checker = Checker::default();
    let recs: Vec<(u32, String)> = (0..5).map(|i| (0, format!("later{i}"))).collect();
    let o = b
        .publish("norep/t", &recs, "durable")
        .await
        .expect("durable publish on the surviving server");
    assert_eq!(o, vec![5, 6, 7, 8, 9]);
    checker.ack("norep/t", &recs, &o);
    let (_, durable, end) = b.offsets("norep/t", 0).await;
    assert_eq!((durable, end), (10, 10));
    let r = e2e::get(format!(
        "{}/topics/norep/t/partitions/0/records?offset=5",
        c.broker().url()
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    drop(gone);
}

async fn unreachable_then_recover(which: &str) {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--max-buffer-mb",
        "2",
        "--durable-timeout-ms",
        "1500",
        "--flush-retry-max-ms",
        "300",
    ]))
    .await
    .unwrap();
    let b = Broker::new(c.broker().url());
    b.create_topic("cut/t", 1).await;
    let mut checker = Checker::default();
    let warm: Vec<(u32, String)> = vec![(0, "warm".into())];
    let o = b.publish("cut/t", &warm, "durable").await.unwrap();
    checker.ack("cut/t", &warm, &o);

    let svc = if which == "filer" {
        c.filer.as_mut().unwrap()
    } else {
        &mut c.master
    };
    assert!(svc.stop(Duration::from_secs(15)).await);
    // A durable publish cannot become durable: 503 with Retry-After, not an ack.
    let r = b
        .publish("cut/t", &[(0, "durable-while-cut".into())], "durable")
        .await
        .expect_err("not durable");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.retry_after.is_some(), "{r:?}");
    // Buffered publishes are accepted until the memory limit, then 503 with Retry-After.
    let value = "z".repeat(32 * 1024);
    let rejection = loop {
        match b.publish("cut/t", &[(0, value.clone())], "buffered").await {
            Ok(o) => checker.ack("cut/t", &[(0, value.clone())], &o),
            Err(r) => break r,
        }
        assert!(
            checker.acknowledged < 200,
            "a 2 MiB buffer accepted {} records of 32 KiB",
            checker.acknowledged
        );
    };
    assert_eq!(rejection.status, 503, "{rejection:?}");
    assert!(rejection.retry_after.is_some());
    let svc = if which == "filer" {
        c.filer.as_mut().unwrap()
    } else {
        &mut c.master
    };
    svc.start().await.unwrap();
    c.wait_volumes_registered(1).await.unwrap();
    flush_until_ok(&b, Duration::from_secs(30)).await;
    // The record of the timed-out durable publish stays buffered and becomes durable too, so
    // the partition has one more record than was acknowledged, at the offset it was given.
    let verified = checker.verify(&b).await;
    println!(
        "{which} unreachable: {} acknowledged, {verified} verified",
        checker.acknowledged
    );
    assert_eq!(verified, checker.acknowledged);
}

#[tokio::test]
async fn given_the_filer_unreachable_should_back_up_to_503_and_recover_with_nothing_lost() {
    unreachable_then_recover("filer").await;
}

#[tokio::test]
async fn given_the_master_unreachable_should_back_up_to_503_and_recover_with_nothing_lost() {
    unreachable_then_recover("master").await;
}
