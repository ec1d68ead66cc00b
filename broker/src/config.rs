//! The broker's flags (clap derive), each also read from `KELP_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Configuration of `kelp-broker`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kelp-broker",
    version,
    about = "Kelp message broker: topics, durable publish, fetch by offset"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KELP_IP", default_value = "127.0.0.1")]
    pub ip: String,
    /// Port to listen on (0 picks a free one; see `<dir>/addrs.json`).
    #[arg(long, env = "KELP_PORT", default_value_t = 17777)]
    pub port: u16,
    /// Data directory (locked while the broker runs).
    #[arg(long, env = "KELP_DIR", default_value = "./data/broker")]
    pub dir: PathBuf,
    /// The master, `host:port`, or several masters comma-separated (the client follows their
    /// elected leader).
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    pub master: String,
    /// Filer address `host:port`.
    #[arg(long, env = "KELP_FILER", default_value = "127.0.0.1:8888")]
    pub filer: String,
    /// Buffered records are flushed at most this long after they arrive.
    #[arg(long, env = "KELP_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// A partition is flushed once this many bytes wait (also the batch roll size).
    #[arg(long, env = "KELP_FLUSH_BYTES", default_value_t = 4 << 20)]
    pub flush_bytes: u64,
    /// How long a flush for a durable publish waits to gather concurrent publishers while
    /// another flush of the partition is in flight (an idle partition flushes at once).
    #[arg(long, env = "KELP_FLUSH_LINGER_MS", default_value_t = 2)]
    pub flush_linger_ms: u64,
    /// Flushes in flight per partition: segments written to volume servers concurrently
    /// while earlier ones commit (commits, and the durable offset, stay in offset order).
    #[arg(long, env = "KELP_FLUSH_PIPELINE", default_value_t = 4)]
    pub flush_pipeline: usize,
    /// Bound on the bytes buffered (not yet durable) across all partitions.
    #[arg(long, env = "KELP_MAX_BUFFER_MB", default_value_t = 256)]
    pub max_buffer_mb: u64,
    /// Collection segments are written to.
    #[arg(long, env = "KELP_COLLECTION", default_value = "topics")]
    pub collection: String,
    /// Replication of segments (`000`, `001`, …).
    #[arg(long, env = "KELP_REPLICATION", default_value = "000")]
    pub replication: String,
    /// Cap of the exponential backoff between flush retries.
    #[arg(long, env = "KELP_FLUSH_RETRY_MAX_MS", default_value_t = 5000)]
    pub flush_retry_max_ms: u64,
    /// Largest record (key + value + headers) accepted.
    #[arg(long, env = "KELP_MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: u64,
    /// Largest publish request (sum of its records) accepted.
    #[arg(long, env = "KELP_MAX_BATCH_BYTES", default_value_t = 16 << 20)]
    pub max_batch_bytes: u64,
    /// Largest segment one flush writes (at least one batch is always written).
    #[arg(long, env = "KELP_MAX_SEGMENT_BYTES", default_value_t = 8 << 20)]
    pub max_segment_bytes: u64,
    /// How long a durable publish (and `/admin/flush`) waits for its flush before a 503.
    #[arg(long, env = "KELP_DURABLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub durable_timeout_ms: u64,
    /// On graceful shutdown, how long to keep trying to flush what is buffered.
    #[arg(long, env = "KELP_SHUTDOWN_FLUSH_TIMEOUT_MS", default_value_t = 30_000)]
    pub shutdown_flush_timeout_ms: u64,
    /// Memory for recently flushed records kept to serve reads without the volume servers.
    #[arg(long, env = "KELP_TAIL_CACHE_MB", default_value_t = 64)]
    pub tail_cache_mb: u64,
    /// Memory for decoded segments read back from volume servers.
    #[arg(long, env = "KELP_SEGMENT_CACHE_MB", default_value_t = 64)]
    pub segment_cache_mb: u64,
    /// Most partitions, over all topics, this broker holds (each costs memory); creating a
    /// topic past it is refused with 409 `partition_limit`.
    #[arg(long, env = "KELP_MAX_PARTITIONS", default_value_t = 10_000)]
    pub max_partitions: u64,
    /// Retention by age: a partition's segments whose newest record is older than this many
    /// hours are deleted, whole, oldest first (0 keeps them forever). The newest segment of a
    /// partition is always kept.
    #[arg(long, env = "KELP_RETENTION_HOURS", default_value_t = 0.0)]
    pub retention_hours: f64,
    /// Retention by size: a partition's oldest segments are deleted, whole, while its
    /// segments hold more than this many bytes (0: no limit). The newest is always kept.
    #[arg(long, env = "KELP_RETENTION_BYTES", default_value_t = 0)]
    pub retention_bytes: u64,
    /// How often retention is enforced.
    #[arg(long, env = "KELP_RETENTION_CHECK_MS", default_value_t = 60_000)]
    pub retention_check_ms: u64,
    /// Port of the Kafka listener (0 = off); it listens on `--ip`.
    #[arg(long, env = "KELP_KAFKA_PORT", default_value_t = 9092)]
    pub kafka_port: u16,
    /// Host the Kafka listener advertises to clients (default: `--ip`, or 127.0.0.1 when
    /// that is a wildcard address).
    #[arg(long, env = "KELP_KAFKA_ADVERTISED_HOST")]
    pub kafka_advertised_host: Option<String>,
    /// Port the Kafka listener advertises (default: the port it listens on).
    #[arg(long, env = "KELP_KAFKA_ADVERTISED_PORT")]
    pub kafka_advertised_port: Option<u16>,
    /// Kelp namespace whose topics Kafka clients see (Kafka topic `t` is `<namespace>/t`).
    #[arg(long, env = "KELP_KAFKA_NAMESPACE", default_value = "kafka")]
    pub kafka_namespace: String,
    /// Create unknown topics a Kafka client asks for (Metadata, Produce).
    #[arg(long, env = "KELP_KAFKA_AUTO_CREATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub kafka_auto_create: bool,
    /// Partitions of a topic created on demand by a Kafka client.
    #[arg(long, env = "KELP_KAFKA_AUTO_CREATE_PARTITIONS", default_value_t = 1)]
    pub kafka_auto_create_partitions: u32,
    /// Largest Kafka request accepted (larger ones close the connection).
    #[arg(long, env = "KELP_KAFKA_MAX_REQUEST_MB", default_value_t = 100)]
    pub kafka_max_request_mb: u64,
    /// Seconds the active broker's lease in the filer lives without renewal (0: no lease, and
    /// a broker that starts takes every partition over at once, fencing any other). With a
    /// lease, a second broker on the same filer is a standby: it redirects clients to the
    /// active one and takes over, recovering every partition, when that one's lease expires
    /// (at once when it stops cleanly).
    #[arg(long, env = "KELP_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// How several brokers on one filer divide the partitions (with `--lease-ttl-secs` > 0):
    /// `shared` (the default) — every live broker serves its share (rendezvous hashing over
    /// the member leases), partitions move when brokers join or leave, and clients are
    /// redirected to a partition's owner; `standby` — one active broker serves them all, the
    /// others wait for its lease.
    #[arg(long, env = "KELP_OWNERSHIP", value_enum, default_value_t = Ownership::Shared)]
    pub ownership: Ownership,
    /// Address a standby redirects HTTP clients to while this broker is active (default: the
    /// bound `ip:port`; with a wildcard `--ip`, standbys cannot redirect and answer 503).
    #[arg(long, env = "KELP_ADVERTISE")]
    pub advertise: Option<String>,
    /// Fid tokens, cluster token, API keys and TLS (see `common::security`).
    #[command(flatten)]
    pub security: common::security::SecurityFlags,
}

/// How several brokers divide the partitions (`--ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ownership {
    /// One active broker serves every partition; the others are standbys.
    Standby,
    /// Every live broker serves its share of the partitions.
    Shared,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: "127.0.0.1".to_owned(),
            port: 17777,
            dir: PathBuf::from("./data/broker"),
            master: "127.0.0.1:9333".to_owned(),
            filer: "127.0.0.1:8888".to_owned(),
            flush_interval_ms: 1000,
            flush_bytes: 4 << 20,
            flush_linger_ms: 2,
            flush_pipeline: 4,
            max_buffer_mb: 256,
            collection: "topics".to_owned(),
            replication: "000".to_owned(),
            flush_retry_max_ms: 5000,
            max_record_bytes: 1 << 20,
            max_batch_bytes: 16 << 20,
            max_segment_bytes: 8 << 20,
            durable_timeout_ms: 30_000,
            shutdown_flush_timeout_ms: 30_000,
            tail_cache_mb: 64,
            segment_cache_mb: 64,
            max_partitions: 10_000,
            retention_hours: 0.0,
            retention_bytes: 0,
            retention_check_ms: 60_000,
            kafka_port: 9092,
            kafka_advertised_host: None,
            kafka_advertised_port: None,
            kafka_namespace: "kafka".to_owned(),
            kafka_auto_create: true,
            kafka_auto_create_partitions: 1,
            kafka_max_request_mb: 100,
            lease_ttl_secs: 10,
            ownership: Ownership::Shared,
            advertise: None,
            security: common::security::SecurityFlags::default(),
        }
    }
}

impl Config {
    /// Checks values clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.flush_bytes >= 1, "--flush-bytes must be at least 1");
        anyhow::ensure!(
            (1..=64).contains(&self.flush_pipeline),
            "--flush-pipeline must be between 1 and 64"
        );
        anyhow::ensure!(
            self.retention_hours.is_finite() && self.retention_hours >= 0.0,
            "--retention-hours must be a number of hours, 0 or more"
        );
        anyhow::ensure!(
            self.retention_check_ms >= 1,
            "--retention-check-ms must be at least 1"
        );
        anyhow::ensure!(
            self.max_buffer_mb >= 1,
            "--max-buffer-mb must be at least 1"
        );
        anyhow::ensure!(
            self.max_record_bytes >= 1 && self.max_record_bytes <= 1 << 30,
            "--max-record-bytes must be between 1 and 1 GiB"
        );
        anyhow::ensure!(
            self.max_batch_bytes >= self.max_record_bytes,
            "--max-batch-bytes must be at least --max-record-bytes"
        );
        anyhow::ensure!(
            crate::names::valid_name(&self.kafka_namespace),
            "--kafka-namespace must be a valid namespace name"
        );
        anyhow::ensure!(
            (1..=crate::service::MAX_PARTITIONS).contains(&self.kafka_auto_create_partitions),
            "--kafka-auto-create-partitions must be between 1 and {}",
            crate::service::MAX_PARTITIONS
        );
        anyhow::ensure!(
            (1..=2048).contains(&self.kafka_max_request_mb),
            "--kafka-max-request-mb must be between 1 and 2048"
        );
        self.replication
            .parse::<common::api::master::Replication>()
            .map_err(|e| anyhow::anyhow!("--replication: {e}"))?;
        Ok(())
    }

    /// The largest publish accepted: `--max-batch-bytes`, but never more than the buffer.
    pub fn batch_limit(&self) -> u64 {
        self.max_batch_bytes.min(self.max_buffer())
    }

    /// `--max-buffer-mb` in bytes.
    pub fn max_buffer(&self) -> u64 {
        common::config::mib(self.max_buffer_mb)
    }

    /// `--flush-interval-ms`.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// `--flush-linger-ms`.
    pub fn flush_linger(&self) -> Duration {
        Duration::from_millis(self.flush_linger_ms)
    }

    /// `--retention-hours` as a duration (`None`: keep forever).
    pub fn retention_age(&self) -> Option<Duration> {
        if self.retention_hours > 0.0 {
            // An age too large to represent keeps everything, as 0 does.
            Duration::try_from_secs_f64(self.retention_hours * 3600.0).ok()
        } else {
            None
        }
    }

    /// `--flush-retry-max-ms`.
    pub fn flush_retry_max(&self) -> Duration {
        Duration::from_millis(self.flush_retry_max_ms.max(1))
    }

    /// `--durable-timeout-ms`.
    pub fn durable_timeout(&self) -> Duration {
        Duration::from_millis(self.durable_timeout_ms)
    }

    /// `--shutdown-flush-timeout-ms`.
    pub fn shutdown_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_flush_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_defaults_match_clap_defaults() {
        let parsed = Config::try_parse_from(["kelp-broker"]).unwrap();
        let d = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
        d.validate().unwrap();
    }

    #[test]
    fn test_config_validate_rejects_bad_values() {
        let c = Config {
            replication: "9".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_batch_bytes: 1,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        // A buffer smaller than a batch is fine: publishes are bounded by the buffer then.
        let c = Config {
            max_buffer_mb: 1,
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.batch_limit(), 1 << 20);
    }
}
