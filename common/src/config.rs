//! Conventions every service's configuration follows.
//!
//! Flags are clap-derived in each service's `config.rs`, each also read from `KELP_<FLAG>`
//! (`--ip` ↔ `KELP_IP`). Data lives under `--dir` (default `./data/<service>`, never a temp
//! dir); [`open_data_dir`] creates it durably, locks it and logs its absolute path.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::fs::DirLock;

/// Creates and locks a service's data directory, returning its absolute path and the lock.
/// Refuses (errors) when the directory cannot be created or another process holds it.
pub fn open_data_dir(service: &str, dir: &Path) -> anyhow::Result<(PathBuf, DirLock)> {
    let abs =
        std::path::absolute(dir).with_context(|| format!("resolve data dir {}", dir.display()))?;
    let lock =
        DirLock::acquire(&abs).with_context(|| format!("lock data dir {}", abs.display()))?;
    tracing::info!(service, dir = %abs.display(), "data directory ready");
    Ok((abs, lock))
}

/// The flags every service has, flattened into its clap `Config` with `#[command(flatten)]`.
/// The defaults here (port 0, `data`) are placeholders: each service sets its own with
/// `#[command(mut_arg("port", |a| a.default_value("9333")), mut_arg("dir", |a| a.default_value("data/master")))]`.
#[derive(Debug, Clone, Args)]
pub struct ListenFlags {
    /// Address (IP or host name) to listen on.
    #[arg(long, env = "KELP_IP", default_value = "127.0.0.1")]
    pub ip: String,
    /// Port to listen on (0 picks a free one, written to `<dir>/addrs.json`).
    #[arg(long, env = "KELP_PORT", default_value_t = 0)]
    pub port: u16,
    /// Data directory (created if missing, locked while the service runs).
    #[arg(long, env = "KELP_DIR", default_value = "data")]
    pub dir: PathBuf,
}

impl ListenFlags {
    /// Loopback, port 0 (a free port), data in `dir`: what tests use.
    pub fn for_test(dir: PathBuf) -> Self {
        Self {
            ip: "127.0.0.1".to_owned(),
            port: 0,
            dir,
        }
    }

    /// The `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        if self.ip.contains(':') && !self.ip.starts_with('[') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// Parses a size given in MiB into bytes, rejecting overflow.
pub fn mib(n: u64) -> u64 {
    n.saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(
        mut_arg("port", |a| a.default_value("9333")),
        mut_arg("dir", |a| a.default_value("data/master"))
    )]
    struct Demo {
        #[command(flatten)]
        listen: ListenFlags,
    }

    #[test]
    fn test_listen_flags_take_per_service_defaults_and_overrides() {
        let d = Demo::try_parse_from(["demo"]).unwrap();
        assert_eq!(d.listen.ip, "127.0.0.1");
        assert_eq!(d.listen.port, 9333);
        assert_eq!(d.listen.dir, PathBuf::from("data/master"));
        assert_eq!(d.listen.bind_addr(), "127.0.0.1:9333");
        let d = Demo::try_parse_from(["demo", "--ip", "::1", "--port", "0", "--dir", "x"]).unwrap();
        assert_eq!(d.listen.bind_addr(), "[::1]:0");
        assert_eq!(d.listen.dir, PathBuf::from("x"));
        assert!(Demo::try_parse_from(["demo", "--port", "70000"]).is_err());
    }
}
