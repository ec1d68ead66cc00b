//! Kafka clients for the e2e suite: the broker's Kafka listener address, and the real
//! clients (kcat, confluent-kafka, kafka-python) run as processes.
//!
//! Every client runs without `LD_LIBRARY_PATH`: cargo puts the native libraries its build
//! scripts produced on it for tests, including the librdkafka that the `rdkafka` crate
//! (`kelp bench kafka`) builds without zlib, which kcat would otherwise load instead of the
//! system's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::ServiceHandle;

/// A port that was free a moment ago (the broker's `--kafka-port 0` means "off", so tests
/// pick one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The broker's Kafka listener address, from its `addrs.json`.
pub fn kafka_addr(broker: &ServiceHandle) -> String {
    let file = broker.dir().join("addrs.json");
    let body = std::fs::read(&file).expect("read the broker's addrs.json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("addrs.json is JSON");
    v["kafka"]
        .as_str()
        .expect("the broker runs a Kafka listener (addrs.json has no \"kafka\")")
        .to_owned()
}

/// The Python client driver, `e2e/py/kafka_clients.py`.
pub fn clients_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/kafka_clients.py")
}

/// Makes sure the Python clients are importable, installing them from PyPI when missing.
pub fn ensure_python_clients() {
    let ok = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-c", "import confluent_kafka, kafka, aiokafka"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return;
    }
    let status = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "confluent-kafka",
            "kafka-python",
            "aiokafka",
        ])
        .status()
        .expect("run pip");
    assert!(
        status.success(),
        "pip install confluent-kafka kafka-python aiokafka failed"
    );
}

/// Runs the client driver with `args`, asserting success; returns its JSON result.
pub fn run_clients(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .arg(clients_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    parse_result(&out, args)
}

/// Parses the driver's last stdout line, failing with its stderr when it failed.
pub fn parse_result(out: &Output, args: &[&str]) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kafka_clients.py {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("kafka_clients.py {args:?} printed no JSON ({e}): {stdout}\n{stderr}")
    })
}

/// Reads a JSON-lines file written by the driver.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Runs kcat with `args`, feeding `stdin`; returns stdout, asserting success.
pub fn kcat(args: &[&str], stdin: &[u8]) -> String {
    let out = kcat_output(args, stdin);
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kcat with `args`, feeding `stdin`; returns its output, whatever its exit status.
pub fn kcat_output(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat (Debian package kcat; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("kcat stdin")
        .write_all(stdin)
        .expect("write kcat stdin");
    child.wait_with_output().expect("wait for kcat")
}
