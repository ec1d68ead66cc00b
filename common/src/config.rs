//! Conventions every service's configuration follows.
//!
//! Flags are clap-derived in each service's `config.rs`, each also read from `KELP_<FLAG>`
//! (`--ip` ↔ `KELP_IP`). Data lives under `--dir` (default `./data/<service>`, never a temp
//! dir); [`open_data_dir`] creates it durably, locks it and logs its absolute path.

use std::path::{Path, PathBuf};

use anyhow::Context;

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

/// Parses a size given in MiB into bytes, rejecting overflow.
pub fn mib(n: u64) -> u64 {
    n.saturating_mul(1 << 20)
}
