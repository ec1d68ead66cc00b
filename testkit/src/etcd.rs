//! A real etcd for tests: [`Etcd::start`] runs the `etcd` binary as a single-member cluster on
//! ephemeral ports with its data in a temp dir, waits until it answers `/health`, and kills it
//! and removes the dir when dropped. [`EtcdCluster::start`] runs several members, one of which
//! a test can kill and restart.
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
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = spawn_member(
            bin,
            dir.path(),
            "default",
            client,
            peer,
            &format!("default={peer_url}"),
        )?;
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
        healthy(&self.addr)
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
        log_tail(self.dir.path())
    }
}

/// Whether the member at `addr` answers `GET /health` with `"health":"true"` (it is part of a
/// quorum).
fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// The last lines the member whose files are in `dir` logged.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts one member named `name` with its data and log in `dir`, serving clients on
/// `client` and peers on `peer`, in the cluster `initial_cluster` (`name=peer_url,...`; used
/// only when its data dir is new).
fn spawn_member(
    bin: &Path,
    dir: &Path,
    name: &str,
    client: u16,
    peer: u16,
    initial_cluster: &str,
) -> Result<Child, String> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .map_err(|e| format!("create the log file: {e}"))?;
    Command::new(bin)
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen-client-urls")
        .arg(&client_url)
        .arg("--advertise-client-urls")
        .arg(&client_url)
        .arg("--listen-peer-urls")
        .arg(&peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))
}

/// One member of an [`EtcdCluster`].
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A real etcd cluster of several members on ephemeral ports, for tests that kill a member:
/// [`EtcdCluster::kill`] SIGKILLs one, [`EtcdCluster::restart`] starts it again on its data and
/// ports. Every member is killed, and the data removed, on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each is healthy; panics (failing the test) if the
    /// binary is missing or the cluster does not come up.
    pub fn start(n: usize) -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("create a temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let m = Member {
                    name: format!("m{i}"),
                    client: free_port(),
                    peer: free_port(),
                    dir: dir.path().join(format!("m{i}")),
                    child: None,
                };
                std::fs::create_dir_all(&m.dir).expect("create a member dir");
                m
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(&bin, i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, bin: &Path, i: usize) {
        let m = &mut self.members[i];
        let child = spawn_member(
            bin,
            &m.dir,
            &m.name,
            m.client,
            m.peer,
            &self.initial_cluster,
        )
        .unwrap_or_else(|e| panic!("etcd member {}: {e}", m.name));
        m.child = Some(child);
    }

    fn wait_healthy(&mut self, i: usize) {
        let started = Instant::now();
        let m = &mut self.members[i];
        let addr = format!("127.0.0.1:{}", m.client);
        while !healthy(&addr) {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "etcd member {} exited with {status}: {}",
                    m.name,
                    log_tail(&m.dir)
                );
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "etcd member {} not healthy after {START_DEADLINE:?}: {}",
                m.name,
                log_tail(&m.dir)
            );
            pause(Duration::from_millis(50));
        }
    }

    /// Every member's client address, `127.0.0.1:<port>`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SIGKILLs member `i` (a no-op when it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir and ports, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(&binary(), i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
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
