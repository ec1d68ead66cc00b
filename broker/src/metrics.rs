//! The broker's Prometheus metrics (prefix `kelp_broker_`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A flush hop (or the whole flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    /// `POST /dir/assign` on the master.
    Assign,
    /// The segment write (with fsync) on the volume server.
    VolumeWrite,
    /// The segment entry commit in the filer.
    FilerCommit,
    /// The whole flush, retries included.
    Total,
}

impl Hop {
    fn as_str(self) -> &'static str {
        match self {
            Self::Assign => "assign",
            Self::VolumeWrite => "volume_write",
            Self::FilerCommit => "filer_commit",
            Self::Total => "total",
        }
    }
}

/// Label of per-hop metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HopLabel {
    /// The hop.
    pub hop: String,
}

/// Label of per-ack-mode metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AcksLabel {
    /// `durable` or `buffered`.
    pub acks: String,
}

/// Label of per-partition metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabel {
    /// `namespace/topic`.
    pub topic: String,
    /// Partition number.
    pub partition: String,
}

/// Label of read metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabel {
    /// `memory`, `cache` or `volume`.
    pub source: String,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Flushes completed.
    pub flushes: Counter,
    /// Segments deleted by retention.
    pub segments_expired: Counter,
    /// Failed flush attempts by hop.
    pub flush_errors: Family<HopLabel, Counter>,
    /// Flush latency by hop.
    pub flush_latency: Family<HopLabel, Histogram>,
    /// Segment bytes made durable.
    pub bytes_flushed: Counter,
    /// Records made durable.
    pub records_flushed: Counter,
    /// Records accepted, by ack mode.
    pub records_published: Family<AcksLabel, Counter>,
    /// Bytes buffered and not yet durable.
    pub buffered_bytes: Gauge,
    /// Records accepted but not yet durable, by partition.
    pub durable_lag: Family<PartitionLabel, Gauge>,
    /// Publishes refused because the buffer was full.
    pub buffer_full: Counter,
    /// Fetch reads by source.
    pub reads: Family<SourceLabel, Counter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kelp_broker");
        let flushes = Counter::default();
        registry.register("flushes", "Flushes completed", flushes.clone());
        let segments_expired = Counter::default();
        registry.register(
            "retention_deleted_segments",
            "Segments deleted by retention",
            segments_expired.clone(),
        );
        let flush_errors = Family::<HopLabel, Counter>::default();
        registry.register(
            "flush_errors",
            "Failed flush attempts by hop",
            flush_errors.clone(),
        );
        let flush_latency = Family::<HopLabel, Histogram>::new_with_constructor(
            common::metrics::latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "flush_duration_seconds",
            "Flush latency by hop (assign, volume_write, filer_commit, total)",
            flush_latency.clone(),
        );
        let bytes_flushed = Counter::default();
        registry.register(
            "flushed_bytes",
            "Segment bytes made durable",
            bytes_flushed.clone(),
        );
        let records_flushed = Counter::default();
        registry.register(
            "flushed_records",
            "Records made durable",
            records_flushed.clone(),
        );
        let records_published = Family::<AcksLabel, Counter>::default();
        registry.register(
            "published_records",
            "Records accepted, by ack mode",
            records_published.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Bytes buffered in memory and not yet durable",
            buffered_bytes.clone(),
        );
        let durable_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "durable_lag_records",
            "Records accepted but not yet durable (log_end_offset - durable_offset)",
            durable_lag.clone(),
        );
        let buffer_full = Counter::default();
        registry.register(
            "buffer_full_rejections",
            "Publishes refused with 503 because the buffer was full",
            buffer_full.clone(),
        );
        let reads = Family::<SourceLabel, Counter>::default();
        registry.register("fetch_reads", "Fetch reads by source", reads.clone());
        Self {
            registry,
            flushes,
            segments_expired,
            flush_errors,
            flush_latency,
            bytes_flushed,
            records_flushed,
            records_published,
            buffered_bytes,
            durable_lag,
            buffer_full,
            reads,
        }
    }

    /// The registry to render.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Observes one hop's latency.
    pub fn observe(&self, hop: Hop, seconds: f64) {
        self.flush_latency
            .get_or_create(&HopLabel {
                hop: hop.as_str().to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a failed hop.
    pub fn error(&self, hop: Hop) {
        self.flush_errors
            .get_or_create(&HopLabel {
                hop: hop.as_str().to_owned(),
            })
            .inc();
    }

    /// The lag gauge of one partition.
    pub fn lag_gauge(&self, topic: &str, partition: u32) -> Gauge {
        self.durable_lag
            .get_or_create(&PartitionLabel {
                topic: topic.to_owned(),
                partition: partition.to_string(),
            })
            .clone()
    }

    /// The published-records counter of an ack mode.
    pub fn published(&self, acks: &str) -> Counter {
        self.records_published
            .get_or_create(&AcksLabel {
                acks: acks.to_owned(),
            })
            .clone()
    }

    /// Counts a fetch read from `source`.
    pub fn read(&self, source: &'static str) {
        self.reads
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared metrics.
pub type SharedMetrics = Arc<Metrics>;
