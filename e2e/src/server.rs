//! [`KelpServer`]: the all-in-one `kelp server` as a process, every port 0 and the Kafka
//! listener off, data under `<dir>/data` (or any data dir: [`KelpServer::start_with_data`]),
//! log in `<dir>/server.log`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `kelp server` process, killed and reaped when dropped (also when a test panics).
pub struct KelpServer(pub Child);

impl Drop for KelpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KelpServer {
    /// Starts `kelp server` under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with_data(dir, &dir.join("data"))
    }

    /// Starts `kelp server` with its data in `data` (a mount, say) and its log in
    /// `dir/server.log`.
    pub fn start_with_data(dir: &Path, data: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("open server.log");
        let mut cmd = Command::new(crate::bin_dir().join("kelp"));
        cmd.arg("server");
        for flag in [
            "--master-port",
            "--volume-port",
            "--filer-port",
            "--broker-port",
            "--kafka-port",
            "--registry-port",
        ] {
            cmd.args([flag, "0"]);
        }
        cmd.arg("--dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        Self(cmd.spawn().expect("start kelp server"))
    }

    /// The URL of `service` (`broker`, `registry`, …) of the server started under `dir`, once
    /// it wrote its address and answers `/readyz` (60 s at most; the log is shown if not).
    pub async fn ready_url(dir: &Path, service: &str) -> String {
        Self::ready_url_with_data(dir, &dir.join("data"), service).await
    }

    /// [`KelpServer::ready_url`] of a server started with [`KelpServer::start_with_data`].
    pub async fn ready_url_with_data(dir: &Path, data: &Path, service: &str) -> String {
        let file = data.join(service).join("addrs.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = std::fs::read(&file)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(a) = v["http"].as_str()
            {
                let url = format!("http://{a}");
                if crate::get(format!("{url}/readyz"))
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return url;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the {service} of kelp server never became ready:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
