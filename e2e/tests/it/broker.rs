//! The broker's promise under real crashes: write → flush → restart → read, always.

use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};

fn broker_of(c: &mut Cluster) -> Broker {
    Broker::new(c.broker().url())
}

fn values(prefix: &str, n: usize) -> Vec<(u32, String)> {
    (0..n)
        .map(|i| (0, format!("{prefix}-{i}-{}", "x".repeat(i % 50))))
        .collect()
}

/// SIGKILLs every service, then starts them again in dependency order.
async fn kill_and_restart_all(c: &mut Cluster) {
    c.broker().kill();
    c.filer().kill();
    for v in &mut c.volumes {
        v.kill();
    }
    c.master.kill();
    c.master.start().await.unwrap();
    for v in &mut c.volumes {
        v.start().await.unwrap();
    }
    c.wait_volumes_registered(c.volumes.len()).await.unwrap();
    c.filer().start().await.unwrap();
    c.broker().start().await.unwrap();
}

fn volume_files(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for v in &c.volumes {
        for e in std::fs::read_dir(v.dir()).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".dat") || n.ends_with(".idx") {
                out.push(format!("{}/{n}", v.name()));
            }
        }
    }
    out
}

async fn wait_durable(b: &Broker, topic: &str, p: u32, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, durable, _) = b.offsets(topic, p).await;
        if durable >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{p} durable {durable} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn given_7_durable_records_when_every_service_is_killed_should_read_them_all_back() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[]))
        .await
        .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("seed/events", 1).await;
    let records = values("seed", 7);
    let mut checker = Checker::default();
    // Publish one at a time, so the partition holds several segments, the first at offset 0.
    for r in &records {
        let offsets = b
            .publish("seed/events", std::slice::from_ref(r), "durable")
            .await
            .expect("durable publish");
        checker.ack("seed/events", std::slice::from_ref(r), &offsets);
    }
    assert_eq!(b.offsets("seed/events", 0).await, (0, 7, 7));

    kill_and_restart_all(&mut c).await;
    let b = broker_of(&mut c);
    assert_eq!(
        b.offsets("seed/events", 0).await,
        (0, 7, 7),
        "durable offset after restart"
    );
    let read = b.read_all("seed/events", 0, 0).await;
    let want: Vec<(u64, String)> = records
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i as u64, v.clone()))
        .collect();
    let got: Vec<(u64, String)> = read.into_iter().map(|r| (r.offset, r.value)).collect();
    assert_eq!(got, want);
    assert_eq!(checker.verify(&b).await, 7);
    let files = volume_files(&c);
    assert!(
        files.iter().any(|f| f.ends_with(".dat")) && files.iter().any(|f| f.ends_with(".idx")),
        "{files:?}"
    );

    // Offsets continue after the restart, with no gap.
    let more = values("after", 3);
    let offsets = b.publish("seed/events", &more, "durable").await.unwrap();
    assert_eq!(offsets, vec![7, 8, 9]);
}

#[tokio::test]
async fn given_5_topics_of_10_partitions_when_every_service_is_killed_should_read_them_all_back() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[]))
        .await
        .unwrap();
    let b = broker_of(&mut c);
    let mut checker = Checker::default();
    for t in 0..5 {
        let topic = format!("seed/t{t}");
        b.create_topic(&topic, 10).await;
        let records: Vec<(u32, String)> =
            (0..70).map(|i| (i % 10, format!("{topic}-{i}"))).collect();
        let offsets = b.publish(&topic, &records, "durable").await.unwrap();
        checker.ack(&topic, &records, &offsets);
    }
    kill_and_restart_all(&mut c).await;
    let b = broker_of(&mut c);
    for t in 0..5 {
        for p in 0..10 {
            assert_eq!(b.offsets(&format!("seed/t{t}"), p).await, (0, 7, 7));
        }
    }
    assert_eq!(checker.verify(&b).await, 350);
}

#[tokio::test]
async fn given_buffered_acks_when_broker_gets_sigterm_should_lose_nothing() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--flush-interval-ms",
        "600000",
    ]))
    .await
    .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("buf/term", 2).await;
    let mut checker = Checker::default();
    for i in 0..20 {
        let recs: Vec<(u32, String)> = (0..10).map(|j| (j % 2, format!("b{i}-{j}"))).collect();
        let offsets = b.publish("buf/term", &recs, "buffered").await.unwrap();
        checker.ack("buf/term", &recs, &offsets);
    }
    // Nothing has been flushed yet (the interval is 10 minutes)...
    assert_eq!(b.offsets("buf/term", 0).await.1, 0);
    // ...but a graceful stop flushes everything.
    assert!(
        c.broker().stop(Duration::from_secs(30)).await,
        "broker exits 0 on SIGTERM"
    );
    c.broker().start().await.unwrap();
    let b = broker_of(&mut c);
    assert_eq!(b.offsets("buf/term", 0).await, (0, 100, 100));
    assert_eq!(checker.verify(&b).await, 200);
}

#[tokio::test]
async fn given_buffered_acks_when_broker_is_killed_should_lose_at_most_the_unflushed_window() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&["--flush-interval-ms", "200"]))
        .await
        .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("buf/kill", 1).await;
    let mut acked = Vec::new();
    for i in 0..300 {
        let recs = vec![(0, format!("k{i}"))];
        let offsets = b.publish("buf/kill", &recs, "buffered").await.unwrap();
        acked.push((offsets[0], recs[0].1.clone()));
        if i == 150 {
            // Let some flushes happen mid-stream.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    c.broker().kill();
    c.broker().start().await.unwrap();
    let b = broker_of(&mut c);
    let (start, durable, end) = b.offsets("buf/kill", 0).await;
    assert_eq!(
        (start, end),
        (0, durable),
        "after a restart only durable records exist"
    );
    assert!(
        durable >= 151,
        "records flushed before the pause survive (durable {durable})"
    );
    let read = b.read_all("buf/kill", 0, 0).await;
    assert_eq!(read.len() as u64, durable);
    for (r, (o, v)) in read.iter().zip(&acked) {
        assert_eq!(
            (r.offset, &r.value),
            (*o, v),
            "no gap, no duplicate, same bytes"
        );
    }
    // New publishes continue at the durable offset: no gap and no duplicate offsets.
    let next = b
        .publish("buf/kill", &[(0, "after".into())], "durable")
        .await
        .unwrap();
    assert_eq!(next, vec![durable]);
}

#[tokio::test]
async fn given_one_segment_at_offset_0_when_broker_restarts_should_recover_it() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[]))
        .await
        .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("one/seg", 1).await;
    assert_eq!(
        b.publish("one/seg", &[(0, "only".into())], "durable")
            .await
            .unwrap(),
        vec![0]
    );
    c.broker().restart().await.unwrap();
    let b = broker_of(&mut c);
    assert_eq!(b.offsets("one/seg", 0).await, (0, 1, 1));
    assert_eq!(b.read_all("one/seg", 0, 0).await[0].value, "only");
}

#[tokio::test]
async fn given_volume_down_during_flush_should_delay_durability_and_lose_nothing() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--flush-interval-ms",
        "100",
        "--flush-retry-max-ms",
        "300",
    ]))
    .await
    .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("vol/down", 1).await;
    let first = values("before", 5);
    let mut checker = Checker::default();
    let o = b.publish("vol/down", &first, "durable").await.unwrap();
    checker.ack("vol/down", &first, &o);

    c.volumes[0].kill();
    let during = values("during", 5);
    let o = b.publish("vol/down", &during, "buffered").await.unwrap();
    checker.ack("vol/down", &during, &o);
    // The flush of the buffered records fails (readyz says so); they stay buffered, not durable.
    let readyz = format!("{}/readyz", c.broker().url());
    testkit::eventually_async(
        "readyz to show the failing flush",
        Duration::from_secs(20),
        || {
            let url = readyz.clone();
            async move {
                let r = e2e::get(url).await.ok()?;
                (r.status() == 503).then_some(())
            }
        },
    )
    .await;
    let (_, durable, end) = b.offsets("vol/down", 0).await;
    assert_eq!(
        (durable, end),
        (5, 10),
        "durability waits for the volume server"
    );

    c.volumes[0].start().await.unwrap();
    wait_durable(&b, "vol/down", 0, 10, Duration::from_secs(30)).await;
    assert_eq!(checker.verify(&b).await, 10);
    c.broker().restart().await.unwrap();
    let b = broker_of(&mut c);
    assert_eq!(checker.verify(&b).await, 10);
}

#[tokio::test]
async fn given_consumer_group_offsets_when_services_restart_should_keep_them() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[]))
        .await
        .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("grp/t", 2).await;
    let http = e2e::http_client();
    for (p, off) in [(0u32, 41u64), (1, 7)] {
        let r = http
            .put(format!("{}/groups/g1/offsets", c.broker().url()))
            .json(&serde_json::json!({ "topic": "grp/t", "partition": p, "offset": off }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    kill_and_restart_all(&mut c).await;
    let v: serde_json::Value = http
        .get(format!(
            "{}/groups/g1/offsets?topic=grp/t",
            c.broker().url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offsets: Vec<(u64, u64)> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"].as_u64().unwrap(),
                o["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, vec![(0, 41), (1, 7)], "{v}");
}

#[tokio::test]
async fn given_a_full_buffer_when_publishing_should_get_503_with_retry_after() {
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--max-buffer-mb",
        "1",
        "--flush-interval-ms",
        "600000",
    ]))
    .await
    .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("full/t", 1).await;
    // Nothing can flush while the volume server is down, so the buffer fills.
    c.volumes[0].kill();
    let big = "v".repeat(64 * 1024);
    let mut acked = 0;
    let rejection = loop {
        match b.publish("full/t", &[(0, big.clone())], "buffered").await {
            Ok(_) => acked += 1,
            Err(r) => break r,
        }
        assert!(
            acked < 64,
            "1 MiB buffer accepted {acked} records of 64 KiB"
        );
    };
    assert_eq!(rejection.status, 503, "{rejection:?}");
    assert!(rejection.retry_after.is_some(), "503 carries Retry-After");
    assert!(acked >= 8, "the buffer held only {acked} records of 64 KiB");
    // Once the volume is back, everything acknowledged becomes durable.
    c.volumes[0].start().await.unwrap();
    assert!(b.flush().await.is_success());
    let (_, durable, end) = b.offsets("full/t", 0).await;
    assert_eq!((durable, end), (acked, acked));
}

#[tokio::test]
async fn given_retention_bytes_when_segments_pile_up_should_delete_the_oldest_and_keep_reading_the_rest()
 {
    // Any partition over 1 byte keeps only its newest segment.
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--retention-bytes",
        "1",
        "--retention-check-ms",
        "100",
    ]))
    .await
    .unwrap();
    let b = broker_of(&mut c);
    b.create_topic("ret/size", 1).await;
    for i in 0..5 {
        let o = b
            .publish("ret/size", &[(0, format!("r{i}"))], "durable")
            .await
            .unwrap();
        assert_eq!(o, vec![i]);
    }
    testkit::eventually_async(
        "retention to delete all but the newest segment",
        Duration::from_secs(20),
        || {
            let b = &b;
            async move { (b.offsets("ret/size", 0).await.0 == 4).then_some(()) }
        },
    )
    .await;
    let filer = c.filer().url();
    let seg_entries = || async {
        let url = format!("{filer}/__meta/list?dir=/topics/ret/size/p0000");
        let v: serde_json::Value = e2e::get(url).await.unwrap().json().await.unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["full_path"].as_str().unwrap().ends_with(".seg"))
            .count()
    };
    // The log start moves before each entry is deleted, so the last deletion may still be on
    // its way when the offsets already show it.
    testkit::eventually_async(
        "the filer to keep the newest entry only",
        Duration::from_secs(20),
        || async { (seg_entries().await == 1).then_some(()) },
    )
    .await;
    // The filer's chunk collector deletes the four segments' needles from the volume.
    let volume = c.volumes[0].url();
    testkit::eventually_async(
        "the deleted segments' needles to be deleted",
        Duration::from_secs(30),
        || {
            let volume = volume.clone();
            async move {
                (e2e::volume::metric(&volume, "kelp_volume_deletes_total").await >= 4).then_some(())
            }
        },
    )
    .await;
    let below = e2e::get(format!(
        "{}/topics/ret/size/partitions/0/records?offset=0",
        c.broker().url()
    ))
    .await
    .unwrap();
    assert_eq!(
        below.status(),
        416,
        "offsets below the new log start are gone"
    );
    assert_eq!(b.read_all("ret/size", 0, 4).await[0].value, "r4");

    // A SIGKILLed broker recovers the same log start from the remaining entry.
    c.broker().kill();
    c.broker().start().await.unwrap();
    let b = broker_of(&mut c);
    assert_eq!(b.offsets("ret/size", 0).await, (4, 5, 5));
    assert_eq!(
        b.publish("ret/size", &[(0, "r5".into())], "durable")
            .await
            .unwrap(),
        vec![5]
    );
}
