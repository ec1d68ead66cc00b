//! Throughput and latency smoke benchmarks (ignored by default; run with
//! `cargo test -p kelp-broker --test it bench -- --ignored --nocapture`).
//! The store simulates 2 ms per volume write and per filer commit.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::api::broker::{Acks, BatchRecord, encode_batch};
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use kelp_broker::publish::InRecord;
use kelp_broker::store::mem::MemStore;
use tokio_util::sync::CancellationToken;

use crate::helpers::{broker, cfg, key};

const RECORD: usize = 128;
const PER_REQUEST: usize = 100;
fn concurrency() -> usize {
    std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}
const RUN: Duration = Duration::from_secs(3);

fn report(what: &str, records: u64, elapsed: Duration, mut lat: Vec<Duration>, commits: u64) {
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{what}: {:.0} records/s, {} requests, p50 {:?}, p99 {:?}, max {:?}, {commits} flushes",
        records as f64 / elapsed.as_secs_f64(),
        lat.len(),
        p(0.5),
        p(0.99),
        lat.last().copied().unwrap_or_default(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_service_publish() {
    for acks in [Acks::Durable, Acks::Buffered] {
        let (b, store) = broker(1, cfg()).await;
        store.faults.delay_us.store(2000, Ordering::SeqCst);
        let value = vec![b'x'; RECORD];
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency() {
            let b = b.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    let recs: Vec<InRecord<'_>> = (0..PER_REQUEST)
                        .map(|_| InRecord {
                            partition: None,
                            key: None,
                            value: Cow::Borrowed(&value),
                            headers: Vec::new(),
                        })
                        .collect();
                    let t = Instant::now();
                    match b.publish(&key(), recs, acks, None).await {
                        Ok(_) => n += PER_REQUEST as u64,
                        Err(e) if e.code() == "buffer_full" => {
                            tokio::time::sleep(Duration::from_millis(1)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                    lat.push(t.elapsed());
                }
                (n, lat)
            }));
        }
        let (mut total, mut lat) = (0, Vec::new());
        for t in tasks {
            let (n, l) = t.await.unwrap();
            total += n;
            lat.extend(l);
        }
        report(
            &format!("service {acks:?}"),
            total,
            start.elapsed(),
            lat,
            store.commits.load(Ordering::SeqCst),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_http_publish_binary() {
    for acks in [Acks::Durable, Acks::Buffered] {
        let store = Arc::new(MemStore::new());
        store.faults.delay_us.store(2000, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(kelp_broker::run_with_store(
            cfg(),
            store.clone(),
            listener,
            shutdown.clone(),
        ));
        let client = BrokerClient::new(HttpClient::new(Duration::from_secs(30)), &addr);
        while client.create_topic("ns", "t", 1).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let value = vec![b'x'; RECORD];
        let records: Vec<BatchRecord<'_>> = (0..PER_REQUEST)
            .map(|_| BatchRecord {
                partition: None,
                key: None,
                value: &value,
                headers: vec![],
            })
            .collect();
        let mut buf = Vec::new();
        encode_batch(&records, &mut buf);
        let body = Bytes::from(buf);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency() {
            let client = client.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    match client.publish_encoded("ns", "t", body.clone(), acks).await {
                        Ok(_) => n += PER_REQUEST as u64,
                        Err(e) if e.code() == Some("buffer_full") => {
                            tokio::time::sleep(Duration::from_millis(1)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                    lat.push(t.elapsed());
                }
                (n, lat)
            }));
        }
        let (mut total, mut lat) = (0, Vec::new());
        for t in tasks {
            let (n, l) = t.await.unwrap();
            total += n;
            lat.extend(l);
        }
        report(
            &format!("http {acks:?}"),
            total,
            start.elapsed(),
            lat,
            store.commits.load(Ordering::SeqCst),
        );
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}

/// Against a running broker (with real master, volume server and filer):
/// `BENCH_BROKER_ADDR=127.0.0.1:17777 cargo test -p kelp-broker --test it bench_external -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark against a running cluster"]
async fn bench_external_broker() {
    let Ok(addr) = std::env::var("BENCH_BROKER_ADDR") else {
        println!("BENCH_BROKER_ADDR not set, skipping");
        return;
    };
    let partitions: u32 = std::env::var("BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let client = BrokerClient::new(HttpClient::new(Duration::from_secs(60)), &addr);
    client.create_topic("bench", "t", partitions).await.unwrap();
    let value = vec![b'x'; RECORD];
    let records: Vec<BatchRecord<'_>> = (0..PER_REQUEST)
        .map(|_| BatchRecord {
            partition: None,
            key: None,
            value: &value,
            headers: vec![],
        })
        .collect();
    let mut buf = Vec::new();
    encode_batch(&records, &mut buf);
    let body = Bytes::from(buf);
    for acks in [Acks::Durable, Acks::Buffered] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency() {
            let client = client.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    match client
                        .publish_encoded("bench", "t", body.clone(), acks)
                        .await
                    {
                        Ok(_) => n += PER_REQUEST as u64,
                        Err(e) if e.code() == Some("buffer_full") => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                    lat.push(t.elapsed());
                }
                (n, lat)
            }));
        }
        let (mut total, mut lat) = (0, Vec::new());
        for t in tasks {
            let (n, l) = t.await.unwrap();
            total += n;
            lat.extend(l);
        }
        report(
            &format!("external {acks:?}"),
            total,
            start.elapsed(),
            lat,
            0,
        );
    }
    client.flush().await.unwrap();
}
