//! `kelp bench kafka`: produce N records of S bytes through any Kafka broker with librdkafka
//! (the `rdkafka` crate), `acks=all` or `acks=1`, keeping up to `--in-flight` records
//! outstanding, and report records/s with the ack latency of each record (enqueue to
//! delivery report); then consume them all back and report records/s. Point it at Kelp's
//! Kafka listener, at the HTTP path's peer (`kelp bench pub`), or at another Kafka-compatible
//! server (SeaweedFS's `weed mq.kafka.gateway`) in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Kafka ack mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaAcks {
    /// `acks=all`: Kelp answers once the batch is durable.
    All,
    /// `acks=1`: Kelp answers once the batch is buffered.
    One,
}

impl KafkaAcks {
    fn as_config(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::One => "1",
        }
    }
}

/// Arguments of `kelp bench kafka`.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Bootstrap server.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (default: one per run and shape); created with `--partitions` if missing.
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the topic.
    #[arg(short, long, default_value_t = 1)]
    partitions: i32,
    /// Records to produce.
    #[arg(short = 'n', long, default_value_t = 200_000)]
    records: usize,
    /// Record value size in bytes.
    #[arg(short, long, default_value_t = 128)]
    size: usize,
    /// Ack mode.
    #[arg(long, value_enum, default_value = "all")]
    acks: KafkaAcks,
    /// Records outstanding (sent, not yet acknowledged) at most.
    #[arg(long, default_value_t = 10_000)]
    in_flight: usize,
    /// librdkafka's `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Idempotent producer (`enable.idempotence`; librdkafka allows it with `acks=all` only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// Skip reading the records back.
    #[arg(long)]
    no_consume: bool,
}

/// Runs the benchmark.
pub async fn run(a: KafkaArgs) -> anyhow::Result<()> {
    let topic = a.topic.clone().unwrap_or_else(|| {
        format!(
            "bench-kafka-{}-{}b-{}p-{}",
            a.acks.as_config(),
            a.size,
            a.partitions,
            std::process::id()
        )
    });
    if let Err(e) = create_topic(&a.bootstrap, &topic, a.partitions).await {
        // Some Kafka-compatible servers do not implement CreateTopics: rely on auto-create.
        eprintln!("could not create {topic} ({e:#}); relying on the server's auto-create");
    }
    let idempotence = a.idempotence && a.acks == KafkaAcks::All;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("acks", a.acks.as_config())
        .set("enable.idempotence", idempotence.to_string())
        .set("linger.ms", a.linger_ms.to_string())
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("create the producer")?;
    println!(
        "kelp bench kafka: {} records of {} B to {topic} ({} partitions) at {}, acks={}, idempotence {}, up to {} in flight",
        a.records,
        a.size,
        a.partitions,
        a.bootstrap,
        a.acks.as_config(),
        idempotence,
        a.in_flight
    );
    let value = vec![b'v'; a.size];
    // Warm up: the first record waits for metadata, the topic's leader and a producer id;
    // that start-up is not what the figures are about.
    let warm = FutureRecord::to(&topic)
        .key(&b"warm-up"[..])
        .payload(&value[..]);
    producer
        .send(warm, Duration::from_secs(60))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("warm-up record: {e}"))?;
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let mut pending = FuturesUnordered::new();
    let (mut acked, mut failed) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..a.records {
        while pending.len() >= a.in_flight.max(1) {
            if let Some((t, r)) = pending.next().await {
                account(&mut hist, &mut acked, &mut failed, t, r);
            }
        }
        let key = (i as u64).to_be_bytes();
        let t = Instant::now();
        // Enqueue now (the delivery future owns nothing borrowed); a full local queue waits
        // for deliveries.
        let fut = loop {
            let record = FutureRecord::to(&topic).key(&key[..]).payload(&value[..]);
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    match pending.next().await {
                        Some((t, r)) => account(&mut hist, &mut acked, &mut failed, t, r),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => anyhow::bail!("enqueue record {i}: {e}"),
            }
        };
        pending.push(async move {
            let r = match fut.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("the producer dropped the delivery".to_owned()),
            };
            (t, r)
        });
    }
    while let Some((t, r)) = pending.next().await {
        account(&mut hist, &mut acked, &mut failed, t, r);
    }
    print_acks(
        "produce",
        "records",
        (acked, failed),
        start.elapsed(),
        a.size,
        &hist,
    );
    anyhow::ensure!(failed == 0, "{failed} records were not acknowledged");
    if !a.no_consume {
        // The warm-up record comes back too.
        consume(&a, &topic, acked + 1).await?;
    }
    Ok(())
}

/// Prints one line of acknowledged sends: counts, rate, MB/s and the ack latency percentiles
/// (also `kelp bench nats`'s, so the peers' lines read alike).
pub(crate) fn print_acks(
    label: &str,
    unit: &str,
    (acked, failed): (usize, usize),
    elapsed: Duration,
    size: usize,
    hist: &Histogram<u64>,
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{label:<7} {acked:>8} ok {failed:>5} err in {secs:>7.2}s: {:>10.0} {unit}/s {:>8.2} MB/s  ack latency p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        acked as f64 / secs,
        (acked * size) as f64 / secs / 1e6,
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
}

fn account(
    hist: &mut Histogram<u64>,
    acked: &mut usize,
    failed: &mut usize,
    sent: Instant,
    r: Result<(), String>,
) {
    match r {
        Ok(()) => {
            *acked += 1;
            let _ = hist.record(sent.elapsed().as_micros() as u64);
        }
        Err(e) => {
            if *failed < 3 {
                eprintln!("produce failed: {e}");
            }
            *failed += 1;
        }
    }
}

/// Creates the topic, leaving an existing one as it is.
async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("create the admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .context("create the topic")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Reads every partition from the beginning until `expected` records came back.
async fn consume(a: &KafkaArgs, topic: &str, expected: usize) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", format!("bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .context("create the consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .context("assign a partition")?;
    }
    consumer.assign(&tpl).context("assign partitions")?;
    // librdkafka's poll blocks: the whole loop runs on a blocking thread.
    let (got, bytes, secs) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let start = Instant::now();
        let (mut got, mut bytes) = (0usize, 0usize);
        let mut idle_since = Instant::now();
        while got < expected {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    got += 1;
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    idle_since = Instant::now();
                }
                Some(Err(e)) => anyhow::bail!("consume failed: {e}"),
                None if idle_since.elapsed() > Duration::from_secs(10) => {
                    anyhow::bail!("consumed {got} of {expected} records, then nothing for 10 s")
                }
                None => {}
            }
        }
        Ok((got, bytes, start.elapsed().as_secs_f64().max(1e-9)))
    })
    .await
    .context("consumer task")??;
    println!(
        "consume {got:>8} records in {secs:>7.2}s: {:>10.0} records/s {:>8.2} MB/s",
        got as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
