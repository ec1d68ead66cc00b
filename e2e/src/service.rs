//! [`ServiceHandle`]: one Kelp service process and its data dir, log file and address.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the service binaries are: `E2E_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else the
/// workspace's `target/debug`. Build them first with `cargo build --workspace --bins`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("E2E_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("debug");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

/// One service process.
pub struct ServiceHandle {
    name: String,
    binary: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    starts: u32,
    /// Substrings that make an ERROR log line expected (a test that injects a fault says which
    /// errors it causes); any other ERROR line fails the test when the handle is dropped.
    expected_errors: Vec<String>,
    /// The CA to trust when the service serves TLS.
    tls_ca: Option<PathBuf>,
}

impl ServiceHandle {
    /// A service `binary` (e.g. `kelp-master`) named `name`, with data in `root/name` and its
    /// log in `root/name.log`. `args` come after `--dir` and `--port`.
    pub fn new(root: &Path, name: &str, binary: &str, args: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            binary: binary.to_owned(),
            args,
            env: Vec::new(),
            dir: root.join(name),
            log: root.join(format!("{name}.log")),
            child: None,
            addr: None,
            starts: 0,
            expected_errors: Vec::new(),
            tls_ca: None,
        }
    }

    /// Declares that the service serves TLS with a certificate from the CA in `ca`: its
    /// [`ServiceHandle::url`] is `https://` and readiness is checked over TLS.
    pub fn tls(mut self, ca: &Path) -> Self {
        self.tls_ca = Some(ca.to_owned());
        self
    }

    /// Declares ERROR log lines containing `pattern` as caused by the test (a fault it injects);
    /// every other ERROR line fails the test when the handle is dropped.
    pub fn expect_errors(&mut self, pattern: &str) -> &mut Self {
        self.expected_errors.push(pattern.to_owned());
        self
    }

    /// Adds an environment variable for the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Its resident memory in bytes (`VmRSS`), 0 when it is not running.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// The most resident memory it has had, in bytes (`VmHWM`), since it started or since
    /// [`ServiceHandle::reset_peak_rss`]; 0 when it is not running.
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// Resets [`ServiceHandle::peak_rss`] to the current resident memory (writes 5 to
    /// `/proc/<pid>/clear_refs`, Linux 4.0+; needs the same user or root).
    pub fn reset_peak_rss(&self) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("not running"))?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
    }

    /// A `kB` field of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its address (known once started).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("service started")
    }

    /// `http://host:port`, or `https://` for a TLS service (see [`ServiceHandle::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the process (on the same port as before, if it ran before) and waits until
    /// `/readyz` answers 200.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} already running", self.name);
        std::fs::create_dir_all(&self.dir)?;
        let addrs = self.dir.join("addrs.json");
        let _ = std::fs::remove_file(&addrs);
        let port = self.addr.map(|a| a.port()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let bin = bin_dir().join(&self.binary);
        anyhow::ensure!(
            std::fs::metadata(&bin).is_ok(),
            "{} not found: run `cargo build --workspace --bins` first (or set E2E_BIN_DIR)",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawn {}", bin.display()))?,
        );
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Ok(b) = std::fs::read(&addrs)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(a) = v["http"].as_str().and_then(|s| s.parse().ok())
            {
                break a;
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not write {} within 60 s",
                    self.name,
                    addrs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.addr = Some(addr);
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut builder = crate::http_client_builder().timeout(Duration::from_secs(2));
        if let Some(ca) = &self.tls_ca {
            builder = builder.use_preconfigured_tls(common::tls::client_config(ca, None)?);
        }
        let client = builder.build()?;
        let url = format!("{}/readyz", self.url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {timeout:?}:\n{}",
                    self.name,
                    self.tail_log(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &mut self.child
            && let Some(status) = c.try_wait()?
        {
            self.child = None;
            bail!("{} exited with {status}:\n{}", self.name, self.tail_log(40));
        }
        Ok(())
    }

    fn signal(&mut self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`. Returns whether it exited
    /// on its own with status 0.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None => return true,
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return status.success();
                }
                Some(_) if Instant::now() > deadline => {
                    eprintln!("{} ignored SIGTERM for {grace:?}; killing", self.name);
                    self.kill();
                    return false;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// SIGKILL and start again with the same data and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().await
    }

    /// SIGKILL, wipe the data dir, start again.
    pub async fn restart_clean(&mut self) -> anyhow::Result<()> {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.start().await
    }

    /// The last `n` lines of the log.
    pub fn tail_log(&self, n: usize) -> String {
        let Ok(f) = File::open(&self.log) else {
            return String::new();
        };
        let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines that show a panic.
    pub fn panics(&self) -> Vec<String> {
        self.log_lines(|l| l.contains("panicked"))
    }

    /// ERROR log lines the test did not declare with [`ServiceHandle::expect_errors`].
    pub fn unexpected_errors(&self) -> Vec<String> {
        self.log_lines(|l| {
            is_error_line(l) && !self.expected_errors.iter().any(|p| l.contains(p.as_str()))
        })
    }

    fn log_lines(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let Ok(f) = File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| keep(l))
            .collect()
    }
}

/// Whether a log line (tracing's text format: `<time>  ERROR <target>: ...`) has level ERROR.
pub fn is_error_line(line: &str) -> bool {
    line.split_whitespace().nth(1) == Some("ERROR")
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.kill();
        let panics = self.panics();
        if std::thread::panicking() {
            eprintln!(
                "===== last log lines of {} =====\n{}",
                self.name,
                self.tail_log(60)
            );
        } else if !panics.is_empty() {
            panic!("{} panicked:\n{}", self.name, panics.join("\n"));
        } else {
            let errors = self.unexpected_errors();
            assert!(
                errors.is_empty(),
                "{} logged ERROR lines the test did not expect (declare a fault's errors with \
                 expect_errors):\n{}",
                self.name,
                errors.join("\n")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_error_line;

    #[test]
    fn test_is_error_line_reads_the_level_column() {
        assert!(is_error_line(
            "2026-12-01T03:50:00.123456Z ERROR kelp_volume::store: fsync failed"
        ));
        assert!(!is_error_line(
            "2026-12-01T03:50:00.123456Z  WARN kelp_broker: ERROR in the message text"
        ));
        assert!(!is_error_line("ERROR"));
    }
}
