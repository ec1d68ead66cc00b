//! Chaos: concurrent durable publishers while, one at a time, the broker, volume server, filer
//! and master are SIGKILLed at random moments and restarted; then every acknowledged record
//! must read back at its offset, with no gap and no duplicate. `E2E_SOAK_KILLS` raises the
//! number of kills (default 50) for a longer soak.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};
use rand::Rng;

#[tokio::test]
async fn given_durable_publishers_when_services_are_killed_in_a_loop_should_lose_nothing_acknowledged()
 {
    let kills: usize = std::env::var("E2E_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--flush-retry-max-ms",
        "200",
    ]))
    .await
    .unwrap();
    let broker = Broker::new(c.broker().url());
    let topics = ["chaos/a", "chaos/b", "chaos/c"];
    for t in topics {
        broker.create_topic(t, 3).await;
    }
    let checker = Arc::new(Mutex::new(Checker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for w in 0..4u32 {
        let (broker, checker, stop) = (broker.clone(), checker.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let topic = topics[(n as usize + w as usize) % topics.len()];
                let p = (n % 3) as u32;
                let recs: Vec<(u32, String)> =
                    (0..5).map(|i| (p, format!("w{w}-n{n}-i{i}"))).collect();
                match broker.publish(topic, &recs, "durable").await {
                    Ok(offsets) => checker.lock().unwrap().ack(topic, &recs, &offsets),
                    Err(_) => {
                        checker.lock().unwrap().rejected += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
        }));
    }

    let started = Instant::now();
    let mut rng = rand::rng();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        match k % 4 {
            0 => c.broker().restart().await.unwrap(),
            1 => {
                c.volumes[0].restart().await.unwrap();
                c.wait_volumes_registered(1).await.unwrap();
            }
            2 => c.filer().restart().await.unwrap(),
            _ => {
                c.master.restart().await.unwrap();
                c.wait_volumes_registered(1).await.unwrap();
            }
        }
    }
    // Let the publishers make progress on a healthy cluster, then stop them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    assert!(broker.flush().await.is_success());
    let verified = checker.verify(&broker).await;
    println!(
        "chaos: {kills} SIGKILLs in {:.1}s; {} records acknowledged, {} verified, {} publishes rejected",
        started.elapsed().as_secs_f64(),
        checker.acknowledged,
        verified,
        checker.rejected
    );
    assert_eq!(verified, checker.acknowledged);
    assert!(checker.acknowledged > 0);
}
