//! The broker's ownership and ordering rules on a real filer (issue 11, findings 5 and 6).
//!
//! Two brokers on one filer: the second one to start takes every partition over with a
//! higher owner epoch; the first one's next commit is refused by the filer (fenced), it
//! answers `partition_fenced` and stops serving the partition instead of stalling or retrying
//! forever; no acknowledged record is lost or duplicated. A group's committed offset never
//! goes backwards unless the commit asks for a reset.

use std::time::{Duration, Instant};

use e2e::ServiceHandle;
use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};

const TOPIC: &str = "ns/fenced";

/// Publishes durably to `b` until `until`; returns when a publish is fenced (with the
/// fenced count) or the time is up.
async fn publish_until_fenced(
    b: &Broker,
    checker: &mut Checker,
    next: &mut u64,
    until: Instant,
) -> usize {
    let mut fenced = 0;
    while Instant::now() < until {
        let p = (*next % 2) as u32;
        let records = vec![(p, format!("r{next}")), (p, format!("r{next}b"))];
        *next += 1;
        match b.publish(TOPIC, &records, "durable").await {
            Ok(offsets) => checker.ack(TOPIC, &records, &offsets),
            Err(r) if r.body.contains("partition_fenced") => {
                assert_eq!(r.status, 503, "{}", r.body);
                checker.rejected += 1;
                fenced += 1;
                if fenced >= 2 {
                    return fenced;
                }
            }
            Err(r) => {
                checker.rejected += 1;
                assert!(
                    r.status == 503 || r.status == 0,
                    "unexpected rejection {}: {}",
                    r.status,
                    r.body
                );
            }
        }
    }
    fenced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_brokers_on_one_filer_when_the_second_starts_should_fence_the_first() {
    // Without the broker lease (`--lease-ttl-secs 0`), a broker that starts takes every
    // partition over at once: the fencing of a live broker is what is tested here.
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--kafka-port",
        "0",
        "--lease-ttl-secs",
        "0",
    ]))
    .await
    .expect("start the cluster");
    let first = Broker::new(c.broker().url());
    // Being taken over is an ERROR on the first broker: two brokers claimed its partitions.
    c.broker()
        .expect_errors("another broker took the partition over");
    first.create_topic(TOPIC, 2).await;
    let mut checker = Checker::default();
    let mut next = 0;
    // Durable load on the first broker, then a second broker starts on the same filer.
    publish_until_fenced(
        &first,
        &mut checker,
        &mut next,
        Instant::now() + Duration::from_millis(800),
    )
    .await;
    let acked_before = checker.acknowledged;
    assert!(acked_before > 0);
    let maddr = c.master.addr().to_string();
    let faddr = c.filer().addr().to_string();
    let mut second_handle = ServiceHandle::new(
        c.root(),
        "broker2",
        "kelp-broker",
        vec![
            "--master".into(),
            maddr,
            "--filer".into(),
            faddr,
            "--kafka-port".into(),
            "0".into(),
            "--lease-ttl-secs".into(),
            "0".into(),
        ],
    );
    second_handle
        .start()
        .await
        .expect("start the second broker");
    let second = Broker::new(second_handle.url());

    // The first broker is fenced at its next commit: it says so, and does not stall.
    let fenced = publish_until_fenced(
        &first,
        &mut checker,
        &mut next,
        Instant::now() + Duration::from_secs(20),
    )
    .await;
    assert!(fenced >= 2, "the first broker was never fenced");
    let ready = e2e::get(format!("{}/readyz", c.broker().url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("fenced"));

    // The second broker owns both partitions and goes on after the last durable record.
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        let p = (next % 2) as u32;
        let records = vec![(p, format!("r{next}"))];
        next += 1;
        let offsets = second
            .publish(TOPIC, &records, "durable")
            .await
            .expect("the owner accepts durable publishes");
        checker.ack(TOPIC, &records, &offsets);
    }
    let verified = checker.verify(&second).await;
    assert_eq!(verified, checker.acknowledged);
    assert!(
        checker.acknowledged > acked_before,
        "the owner acknowledged more"
    );
    second_handle.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_late_group_commit_should_not_rewind_the_group_unless_reset() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&["--kafka-port", "0"]))
        .await
        .expect("start the cluster");
    let url = c.broker().url();
    Broker::new(url.clone()).create_topic(TOPIC, 1).await;
    let http = e2e::http_client();
    let commit = |offset: u64, reset: bool| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = serde_json::json!({"topic": TOPIC, "partition": 0, "offset": offset, "reset": reset});
            let r = http
                .put(format!("{url}/groups/g/offsets"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            v["offsets"][0]["offset"].as_u64().unwrap()
        }
    };
    assert_eq!(commit(10, false).await, 10);
    assert_eq!(commit(4, false).await, 10, "a late, lower commit keeps 10");
    c.broker().kill();
    c.broker().restart().await.unwrap();
    assert_eq!(commit(3, false).await, 10, "durable across a SIGKILL");
    assert_eq!(commit(3, true).await, 3, "a reset goes down");
}
