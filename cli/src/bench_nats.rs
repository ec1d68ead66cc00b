//! `kelp bench nats`: the peer of `kelp bench pub --batch 1`. Publishes N single messages of S
//! bytes to a NATS JetStream stream (file storage) with the official Rust client
//! (`async-nats`), keeping up to `--window` publishes waiting for their ack (JetStream's
//! async publish), and reports messages/s with the ack latency of each message (publish to
//! ack). `--window 1` is the one-publisher latency floor.
//!
//! What a JetStream ack means is the server's to say: nats-server stores the message in its
//! file store and, unless `sync_interval: always` is configured (nats-server 2.10 and later),
//! fsyncs it only every two minutes. `scripts/bench.sh` prints which it measured beside the
//! figures, next to Kelp's durable (fdatasynced) acks measured in the same run.

use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;

/// Arguments of `kelp bench nats`.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// The NATS server.
    #[arg(long, default_value = "127.0.0.1:4222")]
    url: String,
    /// Stream (default: one per run and shape), created with file storage if missing; its
    /// subject is the stream's name.
    #[arg(long)]
    stream: Option<String>,
    /// Messages to publish.
    #[arg(short = 'n', long, default_value_t = 200_000)]
    records: usize,
    /// Message size in bytes.
    #[arg(short, long, default_value_t = 128)]
    size: usize,
    /// Publishes waiting for their ack at most (1: one at a time).
    #[arg(short, long, default_value_t = 256)]
    window: usize,
}

/// Runs the benchmark.
pub async fn run(a: NatsArgs) -> anyhow::Result<()> {
    let name = a
        .stream
        .clone()
        .unwrap_or_else(|| format!("bench-{}b-w{}-{}", a.size, a.window, std::process::id()));
    let client = async_nats::connect(&a.url)
        .await
        .with_context(|| format!("connect to nats at {}", a.url))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![name.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("create stream {name}: {e}"))?;
    println!(
        "kelp bench nats: {} messages of {} B to JetStream stream {name} (file storage) at {}, window {}",
        a.records, a.size, a.url, a.window
    );
    let payload = Bytes::from(vec![b'v'; a.size]);
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let mut pending = FuturesUnordered::new();
    let (mut acked, mut failed) = (0usize, 0usize);
    let mut account = |hist: &mut Histogram<u64>, (t, r): (Instant, Result<(), String>)| match r {
        Ok(()) => {
            acked += 1;
            let _ = hist.record(t.elapsed().as_micros() as u64);
        }
        Err(e) => {
            if failed < 3 {
                eprintln!("publish failed: {e}");
            }
            failed += 1;
        }
    };
    let start = Instant::now();
    for _ in 0..a.records {
        while pending.len() >= a.window.max(1) {
            if let Some(done) = pending.next().await {
                account(&mut hist, done);
            }
        }
        let t = Instant::now();
        let ack = js.publish(name.clone(), payload.clone()).await;
        pending.push(async move {
            let r = match ack {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (t, r)
        });
    }
    while let Some(done) = pending.next().await {
        account(&mut hist, done);
    }
    crate::bench_kafka::print_acks(
        "nats",
        "msg",
        (acked, failed),
        start.elapsed(),
        a.size,
        &hist,
    );
    anyhow::ensure!(failed == 0, "{failed} messages were not acknowledged");
    Ok(())
}
