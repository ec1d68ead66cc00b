//! `kelp server`, the all-in-one quick start: every service in one process, data under one
//! dir; SIGTERM stops the broker first, so records acknowledged from memory are flushed while
//! the volume server and filer still serve; after a restart everything reads back.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};

/// The `kelp server` process, killed and reaped when dropped (also when a test panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    Command::new(e2e::bin_dir().join("kelp"))
        .args([
            "server",
            "--master-port",
            "0",
            "--volume-port",
            "0",
            "--filer-port",
            "0",
            "--broker-port",
            "0",
            "--kafka-port",
            "0",
            "--registry-port",
            "0",
        ])
        .arg("--dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map(Server)
        .unwrap()
}

async fn broker_addr(dir: &Path) -> String {
    let file = dir.join("data/broker/addrs.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read(&file)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
            && let Some(a) = v["http"].as_str()
        {
            let url = format!("http://{a}");
            if reqwest::get(format!("{url}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return url;
            }
        }
        assert!(Instant::now() < deadline, "kelp server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm_and_wait(Server(child): &mut Server) -> bool {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn given_kelp_server_when_sigterm_should_flush_buffered_records_before_stopping() {
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-server-")
        .tempdir()
        .unwrap();
    let mut child = start(tmp.path());
    let b = Broker::new(broker_addr(tmp.path()).await);
    b.create_topic("aio/t", 2).await;
    let mut checker = Checker::default();
    for i in 0..10 {
        let recs: Vec<(u32, String)> = (0..10).map(|j| (j % 2, format!("r{i}-{j}"))).collect();
        let o = b.publish("aio/t", &recs, "buffered").await.unwrap();
        checker.ack("aio/t", &recs, &o);
    }
    let clean = sigterm_and_wait(&mut child);
    let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default();
    assert!(clean, "kelp server exits 0 on SIGTERM:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    let _server = start(tmp.path());
    let b = Broker::new(broker_addr(tmp.path()).await);
    assert_eq!(b.offsets("aio/t", 0).await, (0, 50, 50));
    assert_eq!(checker.verify(&b).await, 100);
}
