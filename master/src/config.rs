//! Flags of `kelp-master` (each also read from `KELP_<FLAG>`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// Configuration of the master.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-master",
    about = "Kelp master: topology, file id assignment and lookup",
    version
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KELP_IP", default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port to listen on (0 picks a free one, written to `<dir>/addrs.json`).
    #[arg(long, env = "KELP_PORT", default_value_t = 9333)]
    pub port: u16,
    /// Data directory holding the durable state file.
    #[arg(long, env = "KELP_DIR", default_value = "data/master")]
    pub dir: PathBuf,
    /// Volumes reaching this size (MiB) are no longer assigned to.
    #[arg(long, env = "KELP_VOLUME_SIZE_LIMIT_MB", default_value_t = 30000)]
    pub volume_size_limit_mb: u64,
    /// Expected milliseconds between volume heartbeats; a server missing 3 is dead.
    #[arg(long, env = "KELP_PULSE_MS", default_value_t = 5000)]
    pub pulse_ms: u64,
    /// Replication used when an assign names none.
    #[arg(long, env = "KELP_DEFAULT_REPLICATION", default_value = "000")]
    pub default_replication: String,
    /// Seconds between automatic vacuums of every volume server (0 = off).
    #[arg(long, env = "KELP_VACUUM_INTERVAL_SECS", default_value_t = 900)]
    pub vacuum_interval_secs: u64,
    /// Volumes whose garbage ratio exceeds this are compacted by a vacuum (0..=1).
    #[arg(long, env = "KELP_GARBAGE_THRESHOLD", default_value_t = 0.3)]
    pub garbage_threshold: f64,
}

impl Config {
    /// A configuration for tests: port 0, state in `dir`, a 500 ms pulse.
    pub fn for_test(dir: PathBuf) -> Self {
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            dir,
            volume_size_limit_mb: 30000,
            pulse_ms: 500,
            default_replication: "000".into(),
            vacuum_interval_secs: 0,
            garbage_threshold: 0.3,
        }
    }
}
