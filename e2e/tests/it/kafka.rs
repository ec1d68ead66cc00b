//! Real Kafka clients (kcat, confluent-kafka, kafka-python, aiokafka) against the broker's Kafka
//! listener, with real processes: every record acknowledged with `acks=all` survives SIGKILL
//! of every service, byte-identical; committed group offsets survive too; a group member's
//! partitions move to the others when it is killed; an idempotent producer whose acks were
//! lost to a broker SIGKILL does not store a record twice; topics are shared with the HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::kafka::{ensure_python_clients, free_port, kafka_addr, kcat, read_jsonl, run_clients};
use e2e::{Cluster, ClusterOptions};
use serde_json::Value;

async fn cluster(extra: &[&str]) -> Cluster {
    let port = free_port().to_string();
    let mut args = vec!["--kafka-port", &port, "--flush-interval-ms", "200"];
    args.extend_from_slice(extra);
    Cluster::start(ClusterOptions::with_broker(&args))
        .await
        .expect("start the cluster")
}

/// Every service SIGKILLed, then restarted with its data.
async fn kill_and_restart_all(c: &mut Cluster) {
    c.broker().kill();
    c.filer().kill();
    for v in &mut c.volumes {
        v.kill();
    }
    c.master.kill();
    c.master.restart().await.expect("restart master");
    for v in &mut c.volumes {
        v.restart().await.expect("restart volume");
    }
    c.wait_volumes_registered(1)
        .await
        .expect("volume registered");
    c.filer().restart().await.expect("restart filer");
    c.broker().restart().await.expect("restart broker");
}

/// `(partition, offset)` → the record as the driver wrote it.
fn by_position(records: &[Value]) -> BTreeMap<(u64, u64), Value> {
    records
        .iter()
        .map(|r| {
            let pos = (
                r["partition"].as_u64().expect("partition"),
                r["offset"].as_u64().expect("offset"),
            );
            (pos, r.clone())
        })
        .collect()
}

fn assert_same_record(acked: &Value, got: &Value) {
    for field in ["key", "value", "headers", "timestamp"] {
        assert_eq!(
            acked[field], got[field],
            "{field} differs: acked {acked} consumed {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_acks_all_producers_when_every_service_is_sigkilled_should_consume_each_record_once()
{
    ensure_python_clients();
    let mut c = cluster(&[]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.jsonl");
    let acks_s = acks.to_str().unwrap();
    e2e::broker::Broker::new(c.broker().url())
        .create_topic("kafka/events", 3)
        .await;

    // Two clients, idempotence and acks=all; gzip and uncompressed (kcat covers the other
    // codecs: kafka-python needs extra packages to read lz4, snappy and zstd).
    let r = run_clients(&[
        "produce",
        "--client",
        "confluent",
        "--bootstrap",
        &b,
        "--topic",
        "events",
        "--count",
        "300",
        "--prefix",
        "cf",
        "--compression",
        "gzip",
        "--out",
        acks_s,
    ]);
    assert_eq!(r["acked"], 300, "confluent-kafka: {r}");
    let r = run_clients(&[
        "produce",
        "--client",
        "kafka-python",
        "--bootstrap",
        &b,
        "--topic",
        "events",
        "--count",
        "200",
        "--prefix",
        "kp",
        "--compression",
        "none",
        "--out",
        acks_s,
    ]);
    assert_eq!(r["acked"], 200, "kafka-python: {r}");
    let acked = by_position(&read_jsonl(&acks));
    assert_eq!(
        acked.len(),
        500,
        "500 distinct (partition, offset) acknowledged"
    );

    // Half consumed in group g (committing each), then everything SIGKILLed.
    let first = dir.path().join("first.jsonl");
    let r = run_clients(&[
        "consume",
        "--client",
        "confluent",
        "--bootstrap",
        &b,
        "--topic",
        "events",
        "--group",
        "g",
        "--count",
        "250",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert_eq!(r["consumed"], 250, "{r}");
    kill_and_restart_all(&mut c).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));

    // The group resumes at its committed offsets: the other 250, none twice.
    let second = dir.path().join("second.jsonl");
    let r = run_clients(&[
        "consume",
        "--client",
        "confluent",
        "--bootstrap",
        &b,
        "--topic",
        "events",
        "--group",
        "g",
        "--count",
        "250",
        "--idle-ms",
        "8000",
        "--out",
        second.to_str().unwrap(),
    ]);
    assert_eq!(r["consumed"], 250, "{r}");
    let mut seen = BTreeSet::new();
    for rec in read_jsonl(&first).iter().chain(read_jsonl(&second).iter()) {
        let pos = (
            rec["partition"].as_u64().unwrap(),
            rec["offset"].as_u64().unwrap(),
        );
        assert!(seen.insert(pos), "{pos:?} consumed twice by group g");
        assert_same_record(&acked[&pos], rec);
    }
    assert_eq!(
        seen.len(),
        500,
        "group g consumed every acknowledged record once"
    );

    // A fresh kafka-python group reads all 500 back byte-identical after the restart.
    let all = dir.path().join("all.jsonl");
    let r = run_clients(&[
        "consume",
        "--client",
        "kafka-python",
        "--bootstrap",
        &b,
        "--topic",
        "events",
        "--group",
        "kp",
        "--count",
        "500",
        "--idle-ms",
        "8000",
        "--out",
        all.to_str().unwrap(),
    ]);
    assert_eq!(r["consumed"], 500, "{r}");
    let got = by_position(&read_jsonl(&all));
    assert_eq!(got.len(), 500);
    for (pos, rec) in &got {
        assert_same_record(&acked[pos], rec);
    }
}

/// `client` produces 600 records (acks=all, idempotence) and three of its consumers share
/// them in one group; one member is SIGKILLed once all three hold partitions, and the two
/// others must take over its partitions and consume every record.
async fn group_of_three(client: &str) {
    ensure_python_clients();
    let mut c = cluster(&[]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.jsonl");
    e2e::broker::Broker::new(c.broker().url())
        .create_topic("kafka/shared", 3)
        .await;
    let r = run_clients(&[
        "produce",
        "--client",
        client,
        "--bootstrap",
        &b,
        "--topic",
        "shared",
        "--count",
        "600",
        "--out",
        acks.to_str().unwrap(),
    ]);
    assert_eq!(r["acked"], 600, "{r}");
    let r = run_clients(&[
        "group",
        "--client",
        client,
        "--bootstrap",
        &b,
        "--topic",
        "shared",
        "--group",
        "trio",
        "--expect",
        acks.to_str().unwrap(),
        "--workdir",
        dir.path().to_str().unwrap(),
    ]);
    let victim: Vec<u64> = serde_json::from_value(r["victim_held"].clone()).unwrap();
    let survivors: Vec<u64> = serde_json::from_value(r["survivors_hold"].clone()).unwrap();
    assert!(!victim.is_empty(), "{r}");
    assert_eq!(
        survivors,
        vec![0, 1, 2],
        "the survivors hold every partition: {r}"
    );
    assert_eq!(r["missing"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_group_of_three_when_one_member_is_sigkilled_should_move_its_partitions() {
    group_of_three("confluent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_kafka_python_group_of_three_when_one_member_is_sigkilled_should_move_its_partitions()
 {
    group_of_three("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_idempotent_producer_when_the_broker_is_sigkilled_should_store_no_record_twice() {
    ensure_python_clients();
    let mut c = cluster(&[]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.jsonl");
    let http = e2e::broker::Broker::new(c.broker().url());
    http.create_topic("kafka/retry", 1).await;
    let script = e2e::kafka::clients_script();
    let producer = std::process::Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .arg(&script)
        .args([
            "produce",
            "--bootstrap",
            &b,
            "--topic",
            "retry",
            "--count",
            "4000",
            "--prefix",
            "id",
            "--timeout-ms",
            "120000",
            "--out",
        ])
        .arg(&acks)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the producer");
    // Kill the broker while batches are in flight, twice.
    for _ in 0..2 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, durable, _) = http.offsets("kafka/retry", 0).await;
            if durable > 0 || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.broker().kill();
        c.broker().restart().await.expect("restart broker");
    }
    let out = tokio::task::spawn_blocking(move || producer.wait_with_output())
        .await
        .unwrap()
        .expect("producer output");
    let r = e2e::kafka::parse_result(&out, &["produce"]);
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["acked"], 4000, "{r}");

    // Every record is stored exactly once, at the offset its ack named.
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let all = dir.path().join("all.jsonl");
    let r = run_clients(&[
        "consume",
        "--bootstrap",
        &b,
        "--topic",
        "retry",
        "--group",
        "check",
        "--count",
        "5000",
        "--idle-ms",
        "6000",
        "--out",
        all.to_str().unwrap(),
    ]);
    let consumed = read_jsonl(&all);
    assert_eq!(r["consumed"], 4000, "4000 records stored, none twice: {r}");
    let mut keys = BTreeSet::new();
    for rec in &consumed {
        assert!(keys.insert(rec["key"].to_string()), "stored twice: {rec}");
    }
    let acked = by_position(&read_jsonl(&acks));
    let got = by_position(&consumed);
    for (pos, rec) in &acked {
        assert_same_record(rec, &got[pos]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_kcat_when_producing_with_each_codec_should_read_back_over_kafka_and_http() {
    let mut c = cluster(&["--kafka-auto-create-partitions", "1"]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let http = e2e::broker::Broker::new(c.broker().url());
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        let input: String = (0..50)
            .map(|i| format!("k{i}:{codec}-value-{i}\n"))
            .collect();
        kcat(
            &[
                "-P",
                "-b",
                &b,
                "-t",
                &topic,
                "-z",
                codec,
                "-K:",
                "-X",
                "enable.idempotence=true",
                "-X",
                "acks=all",
            ],
            input.as_bytes(),
        );
        let out = kcat(
            &[
                "-C",
                "-b",
                &b,
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
            b"",
        );
        assert_eq!(out, input, "{codec}: kcat reads back what it produced");
        let over_http = http.read_all(&format!("kafka/{topic}"), 0, 0).await;
        let values: Vec<String> = over_http.into_iter().map(|r| r.value).collect();
        let want: Vec<String> = (0..50).map(|i| format!("{codec}-value-{i}")).collect();
        assert_eq!(
            values, want,
            "{codec}: the HTTP API reads the Kafka records"
        );
    }

    // The other way round: published over HTTP, consumed over Kafka.
    http.create_topic("kafka/from-http", 1).await;
    let acked = http
        .publish(
            "kafka/from-http",
            &[(0, "one".to_owned()), (0, "two".to_owned())],
            "durable",
        )
        .await;
    assert!(acked.is_ok(), "{acked:?}");
    let out = kcat(
        &[
            "-C",
            "-b",
            &b,
            "-t",
            "from-http",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o:%s\n",
        ],
        b"",
    );
    assert_eq!(out, "0:one\n1:two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_deleted_topic_when_recreated_should_hold_only_new_records() {
    ensure_python_clients();
    let mut c = cluster(&[]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let http = e2e::broker::Broker::new(c.broker().url());
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.jsonl");
    let r = run_clients(&[
        "produce",
        "--bootstrap",
        &b,
        "--topic",
        "doomed",
        "--count",
        "20",
        "--out",
        before.to_str().unwrap(),
    ]);
    assert_eq!(r["acked"], 20, "{r}");
    let r = run_clients(&["delete", "--bootstrap", &b, "--topic", "doomed"]);
    assert_eq!(r["deleted"], "doomed");
    let gone = e2e::get(format!("{}/topics/kafka/doomed", c.broker().url()))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "deleted over Kafka, gone over HTTP too");
    // Produced again (auto-created), it holds only the new records, also after a restart.
    let after = dir.path().join("after.jsonl");
    let r = run_clients(&[
        "produce",
        "--bootstrap",
        &b,
        "--topic",
        "doomed",
        "--count",
        "5",
        "--prefix",
        "new",
        "--out",
        after.to_str().unwrap(),
    ]);
    assert_eq!(r["acked"], 5, "{r}");
    c.broker().kill();
    c.broker().restart().await.unwrap();
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let got = dir.path().join("got.jsonl");
    let r = run_clients(&[
        "consume",
        "--bootstrap",
        &b,
        "--topic",
        "doomed",
        "--group",
        "fresh",
        "--count",
        "100",
        "--idle-ms",
        "4000",
        "--out",
        got.to_str().unwrap(),
    ]);
    assert_eq!(
        r["consumed"], 5,
        "only the records produced after the delete: {r}"
    );
    let offsets: Vec<u64> = read_jsonl(&got)
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    assert_eq!(http.offsets("kafka/doomed", 0).await, (0, 5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_aiokafka_when_producing_and_consuming_in_a_group_should_read_each_record_once_and_find_offsets_by_time()
 {
    ensure_python_clients();
    let mut c = cluster(&[]).await;
    let b = kafka_addr(c.broker.as_ref().expect("broker"));
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.jsonl");
    let acks_s = acks.to_str().unwrap();
    e2e::broker::Broker::new(c.broker().url())
        .create_topic("kafka/aio", 2)
        .await;

    let r = run_clients(&[
        "produce",
        "--client",
        "aiokafka",
        "--bootstrap",
        &b,
        "--topic",
        "aio",
        "--count",
        "150",
        "--prefix",
        "aio",
        "--compression",
        "gzip",
        "--out",
        acks_s,
    ]);
    assert_eq!(r["acked"], 150, "aiokafka: {r}");
    let acked = by_position(&read_jsonl(&acks));
    assert_eq!(
        acked.len(),
        150,
        "150 distinct (partition, offset) acknowledged"
    );

    let got = dir.path().join("got.jsonl");
    let r = run_clients(&[
        "consume",
        "--client",
        "aiokafka",
        "--bootstrap",
        &b,
        "--topic",
        "aio",
        "--group",
        "ga",
        "--count",
        "150",
        "--idle-ms",
        "10000",
        "--out",
        got.to_str().unwrap(),
    ]);
    assert_eq!(r["consumed"], 150, "aiokafka consumer: {r}");
    let consumed = read_jsonl(&got);
    let positions: BTreeSet<(u64, u64)> = by_position(&consumed).into_keys().collect();
    assert_eq!(positions.len(), consumed.len(), "no record consumed twice");
    for rec in &consumed {
        let pos = (
            rec["partition"].as_u64().unwrap(),
            rec["offset"].as_u64().unwrap(),
        );
        assert_same_record(&acked[&pos], rec);
    }

    // ListOffsets by timestamp (the broker scans its segments): the middle record of each
    // partition is found by its own timestamp; a timestamp past the last record finds nothing.
    let r = run_clients(&[
        "times",
        "--bootstrap",
        &b,
        "--topic",
        "aio",
        "--expect",
        acks_s,
    ]);
    let lookups = r["lookups"].as_array().expect("lookups");
    assert_eq!(lookups.len(), 4, "{r}");
    for l in lookups {
        let p = l["partition"].as_u64().unwrap();
        let ts = l["timestamp"].as_i64().unwrap();
        let expected = acked
            .iter()
            .filter(|((part, _), rec)| *part == p && rec["timestamp"].as_i64().unwrap() >= ts)
            .map(|((_, offset), _)| *offset)
            .min();
        assert_eq!(l["offset"].as_u64(), expected, "lookup {l} (all: {r})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_rust_rdkafka_crate_when_kelp_bench_kafka_produces_with_acks_all_should_ack_and_read_back_every_record()
 {
    // `kelp bench kafka` is the Rust `rdkafka` crate (librdkafka built from source): an
    // idempotent acks=all producer, then a consumer reading every partition back.
    let mut c = cluster(&[]).await;
    let out = std::process::Command::new(e2e::bin_dir().join("kelp"))
        .env_remove("LD_LIBRARY_PATH")
        .args([
            "bench",
            "kafka",
            "--bootstrap",
            &kafka_addr(c.broker()),
            "--topic",
            "rdkafka",
            "--partitions",
            "2",
            "--records",
            "3000",
            "--size",
            "256",
            "--acks",
            "all",
        ])
        .output()
        .expect("run kelp bench kafka");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kelp bench kafka failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 3000 ok     0 err"), "{stdout}");
    // The warm-up record comes back too.
    assert!(stdout.contains("consume     3001 records"), "{stdout}");
    // acks=all means durable: over HTTP the durable offsets hold every record.
    let http = e2e::broker::Broker::new(c.broker().url());
    let mut durable = 0;
    for p in 0..2 {
        durable += http.offsets("kafka/rdkafka", p).await.1;
    }
    assert!(
        durable >= 3001,
        "durable offsets sum to {durable}: {stdout}"
    );
}
