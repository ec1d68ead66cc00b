//! A real etcd for tests: [`Etcd::start`] runs the `etcd` binary as a single-member cluster on
//! ephemeral ports with its data in a temp dir, waits until it answers `/health`, and kills it
//! and removes the dir when dropped.
//!
//! A missing `etcd` binary fails the test with a message saying how to install it
//! (`scripts/deps.sh --test`): tests of the etcd store never skip silently. `KELP_ETCD_BIN`
//! names another binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it was started.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running single-member etcd, killed (and its data dir removed) on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

/// The etcd binary to run: `KELP_ETCD_BIN`, else `etcd` on the `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("KELP_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// A port nobody listens on right now (etcd binds it a moment later; a lost race shows as a
/// failed start, which is retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it is healthy; panics (failing the test) if the binary is
    /// missing or it does not come up.
    pub fn start() -> Self {
        let bin = binary();
        match Command::new(&bin).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "{} --version failed ({}): {}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "cannot run the etcd binary {:?} ({e}): the etcd store's tests need a real etcd; \
                 install it with `scripts/deps.sh --test` (Debian package etcd-server) or set \
                 KELP_ETCD_BIN",
                bin.display()
            ),
        }
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(etcd) => return etcd,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("create a temp dir: {e}"))?;
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("create the log file: {e}"))?;
        let child = Command::new(bin)
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut etcd = Self {
            child,
            dir,
            addr: format!("127.0.0.1:{client}"),
        };
        let started = Instant::now();
        loop {
            if etcd.healthy() {
                return Ok(etcd);
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("etcd exited with {status}: {}", etcd.log_tail()));
            }
            if started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "etcd not healthy after {START_DEADLINE:?}: {}",
                    etcd.log_tail()
                ));
            }
            pause(Duration::from_millis(50));
        }
    }

    /// Whether `GET /health` answers `"health":"true"`.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// The client address, `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.addr
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sleeps the calling thread: the helper is synchronous and runs on a test's own thread (or a
/// blocking one), never on a runtime worker.
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}
