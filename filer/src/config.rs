//! The filer's flags (clap derive, each also read from `KELP_<FLAG>`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
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
    /// The master, `host:port`, or several masters comma-separated (the client follows their
    /// elected leader).
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
    /// Where the metadata lives: `rocksdb` (embedded, under `<dir>/meta`) or `etcd` (shared
    /// by every filer pointed at the same endpoints and prefix).
    #[arg(long, env = "KELP_STORE", value_enum, default_value_t = StoreKind::Rocksdb)]
    pub store: StoreKind,
    /// etcd endpoints for `--store etcd`: `host:port`, `http://host:port` or
    /// `https://host:port` (trusting `--tls-ca`), comma-separated.
    #[arg(long, env = "KELP_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix of this namespace in etcd (one per Kelp cluster sharing an etcd).
    #[arg(long, env = "KELP_ETCD_PREFIX", default_value = "/kelp/filer/")]
    pub etcd_prefix: String,
    /// etcd's `--max-txn-ops` (set both together): bounds the chunks of one file and the
    /// entries of one rename (see `store::EtcdStore`).
    #[arg(long, env = "KELP_ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub etcd_max_txn_ops: usize,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

/// The metadata backend (`--store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// RocksDB under `<dir>/meta`: one filer per namespace.
    Rocksdb,
    /// etcd: several filers share the namespace.
    Etcd,
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
            store: StoreKind::Rocksdb,
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/kelp/filer/".to_owned(),
            etcd_max_txn_ops: 128,
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
        if self.store == StoreKind::Etcd {
            let endpoints: Vec<&String> = self
                .etcd_endpoints
                .iter()
                .filter(|e| !e.trim().is_empty())
                .collect();
            if endpoints.is_empty() {
                bail!("--store etcd needs --etcd-endpoints (KELP_ETCD_ENDPOINTS)");
            }
            let https = endpoints
                .iter()
                .filter(|e| e.starts_with("https://"))
                .count();
            if https != 0 && https != endpoints.len() {
                bail!("--etcd-endpoints mixes https:// and plain endpoints");
            }
            if https != 0 && self.security.tls_ca.is_none() {
                bail!("https:// etcd endpoints need --tls-ca (the CA their certificates chain to)");
            }
            if self.etcd_prefix.is_empty() {
                bail!("--etcd-prefix must not be empty");
            }
            if self.etcd_max_txn_ops < 16 {
                bail!(
                    "--etcd-max-txn-ops must be at least 16, got {}",
                    self.etcd_max_txn_ops
                );
            }
        }
        Ok(())
    }

    /// Chunks one file may have on the etcd store: its worst write (replacing a file of as
    /// many chunks: the entry, an owner row per new chunk, and per old chunk the removal of
    /// its row and its queued deletion, plus up to 8 new parents) must fit one transaction.
    pub fn etcd_max_chunks(&self) -> u64 {
        crate::store::EtcdLimits {
            max_txn_ops: self.etcd_max_txn_ops,
            ..Default::default()
        }
        .max_chunks() as u64
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        common::config::mib(self.chunk_size_mb)
    }

    /// Upload limit in bytes: `--max-upload-mb`, and on the etcd store at most
    /// [`Config::etcd_max_chunks`] chunks.
    pub fn max_upload(&self) -> u64 {
        let limit = common::config::mib(self.max_upload_mb);
        match self.store {
            StoreKind::Rocksdb => limit,
            StoreKind::Etcd => limit.min(self.chunk_size().saturating_mul(self.etcd_max_chunks())),
        }
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
    fn test_config_etcd_needs_endpoints_and_bounds_uploads() {
        let cfg = Config::try_parse_from(["kelp-filer"]).unwrap();
        assert_eq!(cfg.store, StoreKind::Rocksdb);
        assert_eq!(cfg.etcd_prefix, "/kelp/filer/");
        let bad = Config::try_parse_from(["kelp-filer", "--store", "etcd"]).unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("--etcd-endpoints"), "{err}");
        let cfg = Config::try_parse_from([
            "kelp-filer",
            "--store",
            "etcd",
            "--etcd-endpoints",
            "127.0.0.1:2379,10.0.0.2:2379",
        ])
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.etcd_endpoints.len(), 2);
        // 128 ops: 39 chunks of 4 MiB per file.
        assert_eq!(cfg.etcd_max_chunks(), 39);
        assert_eq!(cfg.max_upload(), (39 * 4) << 20);
        let mut https = cfg.clone();
        https.etcd_endpoints = vec!["https://e:2379".to_owned()];
        assert!(https.validate().is_err(), "https without --tls-ca");
        https.etcd_endpoints.push("e2:2379".to_owned());
        assert!(https.validate().is_err(), "mixed schemes");
    }

    #[test]
    fn test_config_for_test_is_valid() {
        Config::for_test("data/x", "127.0.0.1:1")
            .validate()
            .unwrap();
    }
}
