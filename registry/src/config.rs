//! The registry's flags (clap derive), each also read from `KELP_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Configuration of `kelp-registry`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-registry",
    version,
    about = "Kelp Schema Registry: Confluent's REST API, schemas stored durably on a Kelp topic"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KELP_IP", default_value = "127.0.0.1")]
    pub ip: String,
    /// Port to listen on (0 picks a free one; see `<dir>/addrs.json`).
    #[arg(long, env = "KELP_PORT", default_value_t = 8081)]
    pub port: u16,
    /// Data directory (only `addrs.json` and the lock live there: schemas are on the broker).
    #[arg(long, env = "KELP_DIR", default_value = "./data/registry")]
    pub dir: PathBuf,
    /// Broker address `host:port`, or the brokers sharing the partitions, comma-separated
    /// (the schemas topic's requests follow a `307` to its owner among them).
    #[arg(long, env = "KELP_BROKER", default_value = "127.0.0.1:17777")]
    pub broker: String,
    /// Namespace of the schemas topic.
    #[arg(long, env = "KELP_TOPIC_NAMESPACE", default_value = "registry")]
    pub topic_namespace: String,
    /// Name of the schemas topic (one partition).
    #[arg(long, env = "KELP_TOPIC", default_value = "_schemas")]
    pub topic: String,
    /// Filer `host:port` holding the writer lease, for several registries on one topic (one
    /// writes, the others forward writes to it); without it this registry is the only writer.
    #[arg(long, env = "KELP_FILER")]
    pub filer: Option<String>,
    /// The URL other registries forward writes to (default `http://<bound address>`; set it
    /// when listening on 0.0.0.0).
    #[arg(long, env = "KELP_ADVERTISED_URL")]
    pub advertised_url: Option<String>,
    /// How long the writer lease lasts without renewal (renewed every quarter of it).
    #[arg(long, env = "KELP_LEASE_TTL_MS", default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// Largest request body accepted (a schema with its JSON envelope).
    #[arg(long, env = "KELP_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Timeout of each call to the broker; a registration waits for its durable publish.
    #[arg(long, env = "KELP_BROKER_TIMEOUT_MS", default_value_t = 40_000)]
    pub broker_timeout_ms: u64,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: "127.0.0.1".to_owned(),
            port: 8081,
            dir: PathBuf::from("./data/registry"),
            broker: "127.0.0.1:17777".to_owned(),
            topic_namespace: "registry".to_owned(),
            topic: "_schemas".to_owned(),
            filer: None,
            advertised_url: None,
            lease_ttl_ms: 10_000,
            max_body_bytes: 1 << 20,
            broker_timeout_ms: 40_000,
            security: common::security::SecurityFlags::default(),
        }
    }
}

impl Config {
    /// Checks values clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_body_bytes >= 1024,
            "--max-body-bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.broker_timeout_ms >= 100,
            "--broker-timeout-ms must be at least 100"
        );
        anyhow::ensure!(
            self.lease_ttl_ms >= 500,
            "--lease-ttl-ms must be at least 500"
        );
        anyhow::ensure!(
            !self.topic.is_empty() && !self.topic_namespace.is_empty(),
            "--topic and --topic-namespace must not be empty"
        );
        Ok(())
    }

    /// `--lease-ttl-ms`.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// `--broker-timeout-ms`.
    pub fn broker_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_defaults_match_clap_defaults() {
        let parsed = Config::try_parse_from(["kelp-registry"]).unwrap();
        let d = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
        d.validate().unwrap();
    }

    #[test]
    fn test_config_validate_rejects_bad_values() {
        let c = Config {
            max_body_bytes: 1,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
