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
        Self::start_with_args(dir, data, &[])
    }

    /// Starts `kelp server` under `dir` with every protection on, from the files `kelp cert`
    /// wrote to `certs`: TLS on every listener and hop, fid tokens, the cluster token and API
    /// keys.
    pub fn start_secure(dir: &Path, certs: &Path) -> Self {
        let f = |name: &str| certs.join(name).into_os_string();
        let args = [
            ("--tls-cert", f("cert.pem")),
            ("--tls-key", f("key.pem")),
            ("--tls-ca", f("ca.pem")),
            ("--jwt-signing-key-file", f("jwt-signing.key")),
            ("--cluster-token-file", f("cluster.token")),
            ("--api-keys-file", f("api-keys")),
        ]
        .map(|(flag, value)| [flag.into(), value]);
        Self::start_with_args(dir, &dir.join("data"), args.as_flattened())
    }

    /// Starts `kelp server` with its data in `data`, its log in `dir/server.log`, and `extra`
    /// flags.
    pub fn start_with_args(dir: &Path, data: &Path, extra: &[std::ffi::OsString]) -> Self {
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
        cmd.args(extra)
            .arg("--dir")
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

    /// The `https://` URL of `service` of a server started with [`KelpServer::start_secure`],
    /// once it answers `/readyz` over TLS verified with the CA in `certs`.
    pub async fn ready_url_secure(dir: &Path, certs: &Path, service: &str) -> String {
        let client = crate::secure::client_trusting(&certs.join("ca.pem")).expect("a TLS client");
        Self::ready_url_via(dir, &dir.join("data"), service, "https", &client).await
    }

    /// [`KelpServer::ready_url`] of a server started with [`KelpServer::start_with_data`].
    pub async fn ready_url_with_data(dir: &Path, data: &Path, service: &str) -> String {
        Self::ready_url_via(dir, data, service, "http", &crate::http_client()).await
    }

    async fn ready_url_via(
        dir: &Path,
        data: &Path,
        service: &str,
        scheme: &str,
        client: &reqwest::Client,
    ) -> String {
        let file = data.join(service).join("addrs.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = std::fs::read(&file)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(a) = v["http"].as_str()
            {
                let url = format!("{scheme}://{a}");
                if client
                    .get(format!("{url}/readyz"))
                    .send()
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
