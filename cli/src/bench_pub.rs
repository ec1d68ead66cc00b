//! `kelp bench pub`: publish throughput and ack latency through the broker's HTTP API, then
//! consumption of everything back from the flushed segments.
//!
//! The shapes the issues measure: batched (`--batch 100 --concurrency 16`, the default),
//! single records (`--batch 1 --concurrency 256`, whose peer is `kelp bench nats`), the
//! latency floor (`--batch 1 --concurrency 1`: one publisher, one record at a time) and,
//! with `--e2e`, the end-to-end latency: a consumer long-polls each partition while the
//! records are published, and each record's time from its ack reaching the publisher to the
//! consumer holding it is measured (0 when the consumer had it first: a durable record is
//! visible to fetches as soon as the flush advances the durable offset, which is also when
//! its publisher is answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use common::api::broker::{Acks, BatchRecord, FetchQuery, encode_batch};
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use hdrhistogram::Histogram;

use crate::bench::drive;

/// Arguments of `kelp bench pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// The broker, or several sharing the topic's partitions (comma-separated: each
    /// partition's requests go to its owner).
    #[arg(long, env = "KELP_BROKER", default_value = "127.0.0.1:17777")]
    broker: String,
    /// Topic namespace (the topic is created if missing).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Topic name (default: one per run and shape).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the topic.
    #[arg(short, long, default_value_t = 1)]
    partitions: u32,
    /// Records to publish.
    #[arg(short = 'n', long, default_value_t = 200_000)]
    records: usize,
    /// Record value size in bytes.
    #[arg(short, long, default_value_t = 128)]
    size: usize,
    /// Records per publish request.
    #[arg(short, long, default_value_t = 100)]
    batch: usize,
    /// Concurrent publish requests.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Ack mode.
    #[arg(long, value_enum, default_value = "durable")]
    acks: crate::topic::AckMode,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also measure end to end: consumers long-poll every partition during the run and
    /// report each record's delay from its ack to its consumption.
    #[arg(long)]
    e2e: bool,
    /// Skip the final flush and reading everything back (against `kelp bench bare-server`,
    /// which only answers publishes).
    #[arg(long)]
    no_fetch: bool,
    /// Speak HTTP/2 (one connection per broker carries every concurrent request) instead of
    /// HTTP/1.1 (one connection per request in flight).
    #[arg(long)]
    http2: bool,
}

/// The brokers' flushes so far, summed over every broker given.
async fn flush_count(http: &HttpClient, brokers: &str) -> Option<f64> {
    let mut sum = 0.0;
    for broker in brokers.split(',').filter(|b| !b.trim().is_empty()) {
        sum += flush_count_of(http, broker.trim()).await?;
    }
    Some(sum)
}

/// A client per partition, sending to the partition's owner (the first broker given when
/// there is only one).
async fn locate_owners(
    b: &BrokerClient,
    ns: &str,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<Vec<Arc<BrokerClient>>> {
    if b.brokers().len() < 2 {
        return Ok(vec![Arc::new(b.clone())]);
    }
    let mut owners = Vec::new();
    for p in 0..partitions {
        // A topic just created is taken over by its owners within a rebalance round.
        let started = Instant::now();
        let base = loop {
            match b.locate(ns, topic, p).await {
                Ok(base) => break base,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    tracing::debug!("partition {p} has no owner yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context(format!("find the owner of partition {p}")),
            }
        };
        owners.push(Arc::new(b.at(&base)));
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for o in &owners {
        *counts.entry(o.base()).or_default() += 1;
    }
    println!("partitions per broker: {counts:?}");
    Ok(owners)
}

async fn flush_count_of(http: &HttpClient, broker: &str) -> Option<f64> {
    let call = common::client::Call::new(
        axum::http::Method::GET,
        format!("{}/metrics", common::client::base_url(broker)),
        "GET /metrics",
    );
    let text = http.bytes(call).await.ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| l.starts_with("kelp_broker_flushes_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// Runs the benchmark.
pub async fn run(http: HttpClient, a: PubArgs) -> anyhow::Result<()> {
    let http = if a.http2 { http.with_http2() } else { http };
    let b = Arc::new(BrokerClient::new(http.clone(), &a.broker));
    let acks: Acks = a.acks.into();
    let topic = a.topic.clone().unwrap_or_else(|| {
        format!(
            "pub-{}-{}b-{}p-{}",
            acks.as_str(),
            a.size,
            a.partitions,
            std::process::id()
        )
    });
    b.create_topic(&a.namespace, &topic, a.partitions)
        .await
        .context("create the topic")?;
    // With several brokers (`--broker a,b`), each partition's requests go to its owner.
    let owners = Arc::new(locate_owners(&b, &a.namespace, &topic, a.partitions).await?);
    let batch = a.batch.max(1);
    let requests = a.records.div_ceil(batch);
    let value = vec![b'v'; a.size];
    let per_partition: Vec<Bytes> = (0..a.partitions)
        .map(|p| {
            let recs: Vec<BatchRecord<'_>> = (0..batch)
                .map(|_| BatchRecord {
                    partition: Some(p),
                    value: &value,
                    ..Default::default()
                })
                .collect();
            let mut buf = Vec::new();
            encode_batch(&recs, &mut buf);
            Bytes::from(buf)
        })
        .collect();
    let per_partition = Arc::new(per_partition);
    println!(
        "kelp bench pub: {} records of {} B, {} per request, {} partitions, concurrency {}, acks {}, {}",
        requests * batch,
        a.size,
        batch,
        a.partitions,
        a.concurrency,
        acks.as_str(),
        if a.http2 { "HTTP/2" } else { "HTTP/1.1" }
    );
    let flushes_before = flush_count(&http, &a.broker).await;
    let (ns, t) = (Arc::new(a.namespace.clone()), Arc::new(topic.clone()));
    let acked: Acked = Arc::new(Mutex::new(HashMap::new()));
    let consumers = a.e2e.then(|| {
        (0..a.partitions)
            .map(|p| {
                // Request i goes to partition i % partitions, with `batch` records.
                let requests_here =
                    (requests + (a.partitions - 1 - p) as usize) / a.partitions as usize;
                let (b, ns, t) = (b.clone(), ns.clone(), t.clone());
                tokio::spawn(async move {
                    consume(&b, &ns, &t, p, (requests_here * batch) as u64).await
                })
            })
            .collect::<Vec<_>>()
    });
    let phase = {
        let (owners, ns, t, bodies) =
            (owners.clone(), ns.clone(), t.clone(), per_partition.clone());
        let acked = a.e2e.then(|| acked.clone());
        drive("pub", requests, a.concurrency, a.quiet, move |i| {
            let b = owners[i % owners.len()].clone();
            let (ns, t, acked) = (ns.clone(), t.clone(), acked.clone());
            let body = bodies[i % bodies.len()].clone();
            async move {
                let len = body.len() as u64;
                let resp = b.publish_encoded(&ns, &t, body, acks).await?;
                if let Some(acked) = acked {
                    let now = Instant::now();
                    let mut acked = acked.lock().expect("ack map lock");
                    acked.extend(resp.offsets.iter().map(|o| ((o.partition, o.offset), now)));
                }
                anyhow::ensure!(
                    resp.offsets.len() == batch,
                    "{} offsets for {batch} records",
                    resp.offsets.len()
                );
                Ok(len)
            }
        })
        .await
    };
    let secs = phase.elapsed.as_secs_f64().max(1e-9);
    let flushes = match (flushes_before, flush_count(&http, &a.broker).await) {
        (Some(x), Some(y)) => format!("{:.0} flushes/s", (y - x) / secs),
        _ => "flushes/s unknown".to_owned(),
    };
    phase.print();
    println!(
        "       {:>10.0} records/s {:>8.2} MB/s of values; ack latency per request above; {flushes}",
        (phase.ok * batch) as f64 / secs,
        (phase.ok * batch * a.size) as f64 / secs / 1e6
    );
    if let Some(consumers) = consumers {
        end_to_end(consumers, &acked).await?;
    }
    if a.no_fetch {
        anyhow::ensure!(phase.errors == 0, "{} publishes failed", phase.errors);
        return Ok(());
    }
    for base in b.brokers() {
        b.at(base).flush().await.context("flush before reading")?;
    }
    // Consume everything back from the flushed segments, partitions in parallel.
    let read = drive(
        "fetch",
        a.partitions as usize,
        a.partitions as usize,
        true,
        move |p| {
            let (b, ns, t) = (b.clone(), ns.clone(), t.clone());
            async move {
                let mut offset = 0;
                let mut bytes = 0u64;
                loop {
                    let q = FetchQuery {
                        offset,
                        limit: Some(10_000),
                        max_bytes: None,
                        wait_ms: None,
                        isolation: None,
                        redirected: false,
                    };
                    let r = b.fetch(&ns, &t, p as u32, &q).await?;
                    bytes += r
                        .records
                        .iter()
                        .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                        .sum::<u64>();
                    if r.records.is_empty() || r.next_offset >= r.durable_offset {
                        break;
                    }
                    offset = r.next_offset;
                }
                Ok(bytes)
            }
        },
    )
    .await;
    let rsecs = read.elapsed.as_secs_f64().max(1e-9);
    println!(
        "fetch  {:>10.0} records/s {:>8.2} MB/s reading {} records back from flushed segments in {:.2}s",
        read.bytes as f64 / a.size.max(1) as f64 / rsecs,
        read.bytes as f64 / rsecs / 1e6,
        read.bytes / a.size.max(1) as u64,
        rsecs
    );
    anyhow::ensure!(
        phase.errors == 0 && read.errors == 0,
        "{} publishes and {} fetches failed",
        phase.errors,
        read.errors
    );
    Ok(())
}

/// Publish acks by (partition, offset): when the publisher had its answer.
type Acked = Arc<Mutex<HashMap<(u32, u64), Instant>>>;

/// When a consumer first held each record, by (partition, offset).
type Seen = Vec<((u32, u64), Instant)>;

/// When each record of one partition was first held by a long-polling consumer, by
/// (partition, offset); stops after `expected` records, or after 30 s without one.
async fn consume(
    b: &BrokerClient,
    ns: &str,
    t: &str,
    partition: u32,
    expected: u64,
) -> anyhow::Result<Seen> {
    let mut seen = Vec::with_capacity(expected as usize);
    let mut offset = 0;
    let mut idle_since = Instant::now();
    while offset < expected {
        let q = FetchQuery {
            offset,
            limit: Some(10_000),
            max_bytes: None,
            wait_ms: Some(1_000),
            isolation: None,
            redirected: false,
        };
        let r = match b.fetch(ns, t, partition, &q).await {
            Ok(r) => r,
            // The topic may not be visible to fetches for a moment after its creation.
            Err(e) if idle_since.elapsed() < Duration::from_secs(5) => {
                tracing::debug!("fetch failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(e).context("long-poll fetch"),
        };
        let now = Instant::now();
        if r.records.is_empty() {
            anyhow::ensure!(
                idle_since.elapsed() < Duration::from_secs(30),
                "partition {partition}: {offset} of {expected} records consumed, then nothing for 30 s"
            );
            continue;
        }
        idle_since = now;
        seen.extend(r.records.iter().map(|rec| ((partition, rec.offset), now)));
        offset = r.next_offset;
    }
    Ok(seen)
}

/// Waits for the consumers and prints the ack-to-consumed delays.
async fn end_to_end(
    consumers: Vec<tokio::task::JoinHandle<anyhow::Result<Seen>>>,
    acked: &Acked,
) -> anyhow::Result<()> {
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let mut first = 0usize;
    for c in consumers {
        let seen = c.await.context("consumer task")??;
        let acked = acked.lock().expect("ack map lock");
        for (key, at) in seen {
            let ack = acked
                .get(&key)
                .with_context(|| format!("record {key:?} consumed but never acknowledged"))?;
            if at <= *ack {
                first += 1;
            }
            let _ = hist.record(at.saturating_duration_since(*ack).as_micros() as u64);
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "e2e    {:>8} records consumed by long-polling consumers: ack to consumed p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms ({first} held by the consumer before their ack arrived)",
        hist.len(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
