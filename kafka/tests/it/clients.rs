//! Real clients: kcat (librdkafka, Debian's package) with every compression codec and
//! idempotence, kafka-python and confluent-kafka with acks=all, idempotence and a group of
//! three consumers. A missing client is installed (pip) or the test fails saying so.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kafka::batch::BatchInfo;
use kafka::{Backend, KafkaConfig};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::harness::Server;

fn client_cfg() -> KafkaConfig {
    KafkaConfig {
        auto_create_partitions: 6,
        // Let the three consumers of a group land in the first generation.
        group_initial_rebalance_delay_ms: 1_500,
        ..KafkaConfig::default()
    }
}

/// Where kcat is. Clients run without `LD_LIBRARY_PATH`: cargo puts the workspace's own
/// librdkafka build (the `rdkafka` crate's, without zlib) on it for tests.
fn kcat() -> PathBuf {
    for p in ["/usr/bin/kcat", "/usr/local/bin/kcat"] {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "kcat is not installed: `apt-get install -y kcat` (Debian package) is required by this test"
    );
}

async fn run(cmd: &mut Command, stdin: Option<&[u8]>, what: &str) -> String {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 180 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kcat_produces_and_consumes_with_every_codec_and_idempotence() {
    let kcat = kcat();
    let s = Server::start(client_cfg()).await;
    for (codec, id) in [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("kcat-{codec}");
        let lines: String = (0..50)
            .map(|i| format!("key{i}:value-{i}-{}\n", "x".repeat(i * 3)))
            .collect();
        run(
            Command::new(&kcat).env_remove("LD_LIBRARY_PATH").args([
                "-P",
                "-b",
                &s.bootstrap(),
                "-t",
                &topic,
                "-z",
                codec,
                "-K:",
                "-X",
                "enable.idempotence=true",
                "-X",
                "acks=all",
                "-X",
                "linger.ms=50",
            ]),
            Some(lines.as_bytes()),
            "kcat -P",
        )
        .await;
        let out = run(
            Command::new(&kcat).env_remove("LD_LIBRARY_PATH").args([
                "-C",
                "-b",
                &s.bootstrap(),
                "-t",
                &topic,
                "-e",
                "-o",
                "beginning",
                "-f",
                "%k:%s\\n",
                "-q",
            ]),
            None,
            "kcat -C",
        )
        .await;
        let mut got: Vec<&str> = out.lines().collect();
        let mut want: Vec<&str> = lines.lines().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{codec}: consumed records differ");
        // The producer really compressed, and as an idempotent producer.
        let meta = s.backend.topic(&topic).await.unwrap().unwrap();
        let mut batches = 0;
        for p in 0..meta.partitions {
            let f = s.backend.fetch(&topic, p, 0, usize::MAX).await.unwrap();
            for (_, info) in kafka::batch::split_batches(&f.batches).unwrap() {
                let info: BatchInfo = info;
                assert_eq!(info.compression(), id, "{codec}: stored batch codec");
                assert!(info.is_idempotent(), "{codec}: batch without producer id");
                batches += 1;
            }
        }
        assert!(batches > 0);
    }
}

/// Makes sure `module` imports, installing `package` with pip if needed.
async fn python_with(module: &str, package: &str) {
    let ok = |m: &str| {
        let m = m.to_owned();
        async move {
            Command::new("python3")
                .env_remove("LD_LIBRARY_PATH")
                .args(["-c", &format!("import {m}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false)
        }
    };
    if ok(module).await {
        return;
    }
    let status = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-m", "pip", "install", "--quiet", package])
        .status()
        .await
        .unwrap_or_else(|e| panic!("python3 is required by this test: {e}"));
    assert!(status.success(), "pip install {package} failed");
    assert!(
        ok(module).await,
        "{package} installed but `import {module}` fails"
    );
}

async fn python_clients(client: &str, module: &str, package: &str) {
    python_with(module, package).await;
    let s = Server::start(client_cfg()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/clients.py");
    let topic = format!("py-{client}");
    let out = run(
        Command::new("python3")
            .env_remove("LD_LIBRARY_PATH")
            .arg(&script)
            .args([&s.bootstrap(), client, &topic, &format!("group-{client}")]),
        None,
        client,
    )
    .await;
    assert!(out.contains(&format!("OK {client}")), "{client}: {out}");
    let meta = s.backend.topic(&topic).await.unwrap().unwrap();
    let mut total = 0;
    for p in 0..meta.partitions {
        let f = s.backend.fetch(&topic, p, 0, usize::MAX).await.unwrap();
        for (_, info) in kafka::batch::split_batches(&f.batches).unwrap() {
            assert!(info.is_idempotent(), "{client}: batch without producer id");
            total += info.record_count;
        }
    }
    assert_eq!(total, 60, "{client}: every record stored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kafka_python_produces_idempotently_and_consumes_in_a_group_of_three() {
    python_clients("kafka-python", "kafka", "kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_confluent_kafka_produces_idempotently_and_consumes_in_a_group_of_three() {
    python_clients("confluent-kafka", "confluent_kafka", "confluent-kafka").await;
}
