//! Flags of `kelp-volume` (each also read from `KELP_<FLAG>`).

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use common::config::ListenFlags;

use crate::store::needle::MAX_DATA_LEN;

/// Largest `--max-blob-mb` the needle format holds (see [`crate::store::needle::MAX_BODY_SIZE`]).
pub const MAX_BLOB_MB: u64 = MAX_DATA_LEN >> 20;
const _: () = assert!(MAX_BLOB_MB << 20 <= MAX_DATA_LEN);

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--max-blob-mb` is over what the format holds.
    #[error(
        "--max-blob-mb {0} is too large: a needle's size is stored as an i32, so blobs are at most {MAX_BLOB_MB} MiB"
    )]
    MaxBlobTooLarge(u64),
}

/// Configuration of a volume server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-volume",
    about = "Kelp volume server: append-only needle volumes",
    version,
    mut_arg("port", |a| a.default_value("8080")),
    mut_arg("dir", |a| a.default_value("data/volume"))
)]
pub struct Config {
    /// `--ip`, `--port`, `--dir` (the data directory holding the `.dat` and `.idx` files).
    #[command(flatten)]
    pub listen: ListenFlags,
    /// The master, `host:port`, or several masters comma-separated (heartbeats go to each;
    /// other calls follow their elected leader).
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    pub master: String,
    /// Address other services use to reach this server (default: the bound `ip:port`): the
    /// `url` the master answers in assigns and lookups.
    #[arg(long, env = "KELP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Address clients outside the cluster use to reach this server: the `publicUrl` the
    /// master answers (SeaweedFS's `-publicUrl`), e.g. `localhost:8080` when the server is a
    /// container whose internal name the host cannot resolve (default: `--public-url`).
    #[arg(long, env = "KELP_CLIENT_URL")]
    pub client_url: Option<String>,
    /// Most volumes this server holds.
    #[arg(long, env = "KELP_MAX_VOLUMES", default_value_t = 8)]
    pub max_volumes: u32,
    /// Fsync writes before acknowledging them. `false` is for throwaway data only.
    #[arg(long, env = "KELP_FSYNC", default_value_t = true, action = ArgAction::Set)]
    pub fsync: bool,
    /// Largest blob accepted, in MiB (at most 2047: a needle's size is an `i32` in the `.idx`).
    #[arg(long, env = "KELP_MAX_BLOB_MB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BLOB_MB))]
    pub max_blob_mb: u64,
    /// Verify every needle's checksum once after start-up, in the background.
    #[arg(long, env = "KELP_SCRUB_ON_START", default_value_t = true, action = ArgAction::Set)]
    pub scrub_on_start: bool,
    /// Milliseconds between heartbeats to the master.
    #[arg(long, env = "KELP_HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    pub heartbeat_interval_ms: u64,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

impl Config {
    /// Checks what the flags' parsers cannot (for configurations built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_blob_mb > MAX_BLOB_MB {
            return Err(ConfigError::MaxBlobTooLarge(self.max_blob_mb));
        }
        Ok(())
    }

    /// A configuration for tests: port 0, data in `dir`, the given master.
    pub fn for_test(dir: PathBuf, master: String) -> Self {
        Self {
            listen: ListenFlags::for_test(dir),
            master,
            public_url: None,
            client_url: None,
            max_volumes: 8,
            fsync: true,
            max_blob_mb: 16,
            heartbeat_interval_ms: 500,
            scrub_on_start: true,
            security: common::security::SecurityFlags::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_listen_defaults_are_the_volume_servers() {
        let cfg = Config::try_parse_from(["kelp-volume"]).unwrap();
        assert_eq!(cfg.listen.port, 8080);
        assert_eq!(cfg.listen.dir, PathBuf::from("data/volume"));
        assert_eq!(cfg.listen.ip, "127.0.0.1");
        let cfg =
            Config::try_parse_from(["kelp-volume", "--ip", "volume-1", "--port", "0"]).unwrap();
        assert_eq!(cfg.listen.bind_addr(), "volume-1:0");
    }

    #[test]
    fn test_config_client_url_is_separate_from_the_internal_url() {
        let cfg = Config::try_parse_from([
            "kelp-volume",
            "--public-url",
            "volume1:8080",
            "--client-url",
            "localhost:8080",
        ])
        .unwrap();
        assert_eq!(cfg.public_url.as_deref(), Some("volume1:8080"));
        assert_eq!(cfg.client_url.as_deref(), Some("localhost:8080"));
        assert_eq!(
            Config::try_parse_from(["kelp-volume"]).unwrap().client_url,
            None
        );
    }

    #[test]
    fn test_config_max_blob_mb_bound() {
        // Regression for issue 11, finding 2: 2 GiB blobs vanished after a restart.
        assert_eq!(MAX_BLOB_MB, 2047);
        let mut cfg = Config::for_test("d".into(), "m:1".into());
        cfg.max_blob_mb = MAX_BLOB_MB;
        assert!(cfg.validate().is_ok());
        cfg.max_blob_mb = MAX_BLOB_MB + 1;
        assert!(cfg.validate().is_err());
        let ok = Config::try_parse_from(["kelp-volume", "--max-blob-mb", "2047"]).unwrap();
        assert_eq!(ok.max_blob_mb, 2047);
        let err = Config::try_parse_from(["kelp-volume", "--max-blob-mb", "2048"]).unwrap_err();
        assert!(err.to_string().contains("2048"), "{err}");
    }
}
