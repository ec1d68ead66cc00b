//! The filer's flags (clap derive, each also read from `KELP_<FLAG>`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use common::api::master::Replication;
use common::config::ListenFlags;

/// Configuration of `kelp-filer`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-filer",
    version,
    about = "Kelp filer: a path namespace over volume chunks",
    mut_arg("port", |a| a.default_value("8888")),
    mut_arg("dir", |a| a.default_value("./data/filer"))
)]
pub struct Config {
    /// `--ip`, `--port` (default 8888) and `--dir` (default `./data/filer`; the metadata lives
    /// in RocksDB under `<dir>/meta`), shared by every service.
    #[command(flatten)]
    pub listen: ListenFlags,
    /// The master, `host:port`.
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    pub master: String,
    /// File content is split into chunks of this many MiB.
    #[arg(long, env = "KELP_CHUNK_SIZE_MB", default_value_t = 4)]
    pub chunk_size_mb: u64,
    /// Largest file accepted by an upload, in MiB (413 beyond).
    #[arg(long, env = "KELP_MAX_UPLOAD_MB", default_value_t = 1024)]
    pub max_upload_mb: u64,
    /// Chunks of one upload written in parallel.
    #[arg(long, env = "KELP_UPLOAD_CONCURRENCY", default_value_t = 4)]
    pub upload_concurrency: usize,
    /// Collection chunks are assigned in ("" for none).
    #[arg(long, env = "KELP_COLLECTION", default_value = "")]
    pub collection: String,
    /// Replica placement of chunks, e.g. `000` or `001`.
    #[arg(long, env = "KELP_REPLICATION", default_value = "000")]
    pub replication: String,
    /// Ask volume servers to fsync chunks before acknowledging. `false` is for throwaway data
    /// only; metadata is always synced.
    #[arg(long, env = "KELP_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

impl Config {
    /// A configuration with the defaults, data under `dir`, talking to `master`.
    pub fn for_test(dir: impl Into<PathBuf>, master: &str) -> Self {
        Self {
            listen: ListenFlags::for_test(dir.into()),
            master: master.to_owned(),
            chunk_size_mb: 4,
            max_upload_mb: 1024,
            upload_concurrency: 4,
            collection: String::new(),
            replication: "000".to_owned(),
            fsync: true,
            security: common::security::SecurityFlags::default(),
        }
    }

    /// Checks values clap cannot check on its own.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.chunk_size_mb == 0 || self.chunk_size_mb > 1024 {
            bail!(
                "--chunk-size-mb must be between 1 and 1024, got {}",
                self.chunk_size_mb
            );
        }
        if self.max_upload_mb == 0 {
            bail!("--max-upload-mb must be at least 1");
        }
        if self.upload_concurrency == 0 || self.upload_concurrency > 256 {
            bail!(
                "--upload-concurrency must be between 1 and 256, got {}",
                self.upload_concurrency
            );
        }
        self.replication
            .parse::<Replication>()
            .map_err(anyhow::Error::msg)
            .context("parse --replication")?;
        Ok(())
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        common::config::mib(self.chunk_size_mb)
    }

    /// Upload limit in bytes.
    pub fn max_upload(&self) -> u64 {
        common::config::mib(self.max_upload_mb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_defaults_match_the_contract() {
        let cfg = Config::try_parse_from(["kelp-filer"]).unwrap();
        assert_eq!(cfg.listen.ip, "127.0.0.1");
        assert_eq!(cfg.listen.port, 8888);
        assert_eq!(cfg.listen.dir, PathBuf::from("./data/filer"));
        assert_eq!(cfg.master, "127.0.0.1:9333");
        assert_eq!(cfg.chunk_size_mb, 4);
        assert_eq!(cfg.max_upload_mb, 1024);
        assert_eq!(cfg.upload_concurrency, 4);
        assert_eq!(cfg.collection, "");
        assert_eq!(cfg.replication, "000");
        assert!(cfg.fsync);
        cfg.validate().unwrap();
    }

    #[test]
    fn test_config_parses_flags_and_rejects_bad_values() {
        let cfg = Config::try_parse_from([
            "kelp-filer",
            "--port",
            "0",
            "--fsync",
            "false",
            "--replication",
            "001",
            "--chunk-size-mb",
            "1",
        ])
        .unwrap();
        assert!(!cfg.fsync);
        assert_eq!(cfg.chunk_size(), 1 << 20);
        cfg.validate().unwrap();
        let mut bad = cfg.clone();
        bad.replication = "9".to_owned();
        assert!(bad.validate().is_err());
        let mut bad = cfg;
        bad.chunk_size_mb = 0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn test_config_for_test_is_valid() {
        Config::for_test("data/x", "127.0.0.1:1")
            .validate()
            .unwrap();
    }
}
