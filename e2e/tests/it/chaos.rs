//! Chaos: concurrent durable publishers while, one at a time, the broker, volume server, filer
//! and master are SIGKILLed at random moments and restarted; then every acknowledged record
//! must read back at its offset, with no gap and no duplicate. `E2E_SOAK_KILLS` sets the
//! number of kills (default 200, which takes about a minute on two cores) for a longer soak.
//!
//! The pauses between kills are short (10-120 ms) so that 200 kills fit in CI time; a kill
//! often lands while the previous victim's peers are still reconnecting, which is the point.
//! What keeps the test honest: every kill is counted and reported, the publishers must get
//! acknowledgements while services are dying and again once the cluster is left alone, and
//! every acknowledged record is read back by offset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions, ServiceHandle};
use rand::Rng;

/// SIGKILLs `h` and starts it again (waiting for `/readyz`). Returns whether the kill hit a
/// running process and left it dead, so the reported count is of real kills.
async fn kill_and_restart(h: &mut ServiceHandle) -> bool {
    let was_running = h.is_running();
    h.kill();
    let dead = !h.is_running();
    h.start().await.unwrap();
    was_running && dead
}

#[tokio::test]
async fn given_durable_publishers_when_services_are_killed_in_a_loop_should_lose_nothing_acknowledged()
 {
    let kills: usize = std::env::var("E2E_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // The Kafka listener is off: its default port is fixed, and 50 broker restarts must not
    // race another test's broker for it.
    let mut c = Cluster::start(ClusterOptions::with_broker(&[
        "--flush-retry-max-ms",
        "200",
        "--kafka-port",
        "0",
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
    let mut killed = [0usize; 4];
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..120))).await;
        let hit = match k % 4 {
            0 => kill_and_restart(c.broker()).await,
            1 => {
                let hit = kill_and_restart(&mut c.volumes[0]).await;
                c.wait_volumes_registered(1).await.unwrap();
                hit
            }
            2 => kill_and_restart(c.filer()).await,
            _ => {
                let hit = kill_and_restart(&mut c.master).await;
                c.wait_volumes_registered(1).await.unwrap();
                hit
            }
        };
        if hit {
            killed[k % 4] += 1;
        }
    }
    let chaos = started.elapsed();
    let during = checker.lock().unwrap().acknowledged;
    // Leave the cluster alone until the publishers have made clear progress again (they
    // retry with backoff after rejections), bounded by a deadline.
    let recovered = tokio::time::timeout(Duration::from_secs(30), async {
        while checker.lock().unwrap().acknowledged < during + 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    assert!(broker.flush().await.is_success());
    let verified = checker.verify(&broker).await;
    let total_kills: usize = killed.iter().sum();
    println!(
        "chaos: {total_kills} SIGKILLs (broker {}, volume {}, filer {}, master {}) in {:.1}s; \
         {} records acknowledged ({during} while killing), {} verified, {} publishes rejected; \
         {:.1}s in all",
        killed[0],
        killed[1],
        killed[2],
        killed[3],
        chaos.as_secs_f64(),
        checker.acknowledged,
        verified,
        checker.rejected,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        total_kills, kills,
        "not every kill hit a running process (one died on its own?)"
    );
    assert!(
        during > 0,
        "nothing was acknowledged while services were being killed"
    );
    assert!(
        recovered,
        "publishers made no progress within 30 s after the last kill"
    );
    assert_eq!(
        verified, checker.acknowledged,
        "acknowledged records missing"
    );
}
