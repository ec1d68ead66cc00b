//! Flags of `kelp-master` (each also read from `KELP_<FLAG>`).

use std::path::PathBuf;

use clap::Parser;
use common::config::ListenFlags;

/// Configuration of the master.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-master",
    about = "Kelp master: topology, file id assignment and lookup",
    version,
    mut_arg("port", |a| a.default_value("9333")),
    mut_arg("dir", |a| a.default_value("data/master"))
)]
pub struct Config {
    /// `--ip`, `--port` (default 9333) and `--dir` (default `data/master`, holding the durable
    /// state file), shared by every service.
    #[command(flatten)]
    pub listen: ListenFlags,
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
    /// Most named collections the master lets assigns and grows create on demand; an assign
    /// naming a new one beyond it is refused (409 `too_many_collections`).
    #[arg(long, env = "KELP_MAX_COLLECTIONS", default_value_t = 1000)]
    pub max_collections: usize,
    /// etcd endpoints (`host:port`, `http://…` or `https://…` trusting `--tls-ca`),
    /// comma-separated: masters sharing them elect a leader, which alone hands out ids, and
    /// keep the id state in etcd (see `crate::leader`). Empty: this is the only master.
    #[arg(long, env = "KELP_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix of this cluster's masters in etcd.
    #[arg(long, env = "KELP_ETCD_PREFIX", default_value = "/kelp/master/")]
    pub etcd_prefix: String,
    /// Seconds the leader's lease lives without renewal: a dead leader is replaced within
    /// about this long (a stopped one at once).
    #[arg(long, env = "KELP_LEADER_TTL_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_ttl_secs: u64,
    /// Address other masters' followers redirect clients to (default: the bound `ip:port`;
    /// required with `--etcd-endpoints` when `--ip` is a wildcard such as `0.0.0.0`).
    #[arg(long, env = "KELP_ADVERTISE")]
    pub advertise: Option<String>,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

impl Config {
    /// A configuration for tests: port 0, state in `dir`, a 500 ms pulse.
    pub fn for_test(dir: PathBuf) -> Self {
        Self {
            listen: ListenFlags::for_test(dir),
            volume_size_limit_mb: 30000,
            pulse_ms: 500,
            default_replication: "000".into(),
            vacuum_interval_secs: 0,
            garbage_threshold: 0.3,
            max_collections: 1000,
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/kelp/master/".to_owned(),
            leader_ttl_secs: 5,
            advertise: None,
            security: common::security::SecurityFlags::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_defaults_match_the_contract() {
        let cfg = Config::try_parse_from(["kelp-master"]).unwrap();
        assert_eq!(cfg.listen.ip, "127.0.0.1");
        assert_eq!(cfg.listen.port, 9333);
        assert_eq!(cfg.listen.dir, PathBuf::from("data/master"));
        assert_eq!(cfg.vacuum_interval_secs, 900);
        assert_eq!(cfg.garbage_threshold, 0.3);
        assert_eq!(cfg.max_collections, 1000);
        let cfg = Config::try_parse_from([
            "kelp-master",
            "--vacuum-interval-secs",
            "0",
            "--garbage-threshold",
            "0.5",
        ])
        .unwrap();
        assert_eq!((cfg.vacuum_interval_secs, cfg.garbage_threshold), (0, 0.5));
    }
}
