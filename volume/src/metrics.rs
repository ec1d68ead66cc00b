//! Prometheus metrics of the volume server: they show the durability machinery at work
//! (writes per fdatasync under group commit, needles recovered or cut at start-up, CRC failures).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The volume server's metrics; cheap to clone (every field is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Needles written (acknowledged).
    pub writes: Counter,
    /// Bytes of needle records appended.
    pub write_bytes: Counter,
    /// fdatasync calls on `.dat` files.
    pub fdatasyncs: Counter,
    /// fdatasync latency.
    pub fdatasync_seconds: Histogram,
    /// Needles per group-commit batch.
    pub batch_needles: Histogram,
    /// Deletions written.
    pub deletes: Counter,
    /// Needles read.
    pub reads: Counter,
    /// Bytes of data served.
    pub read_bytes: Counter,
    /// Needles whose checksum failed on read or scan.
    pub crc_failures: Counter,
    /// Needles re-indexed from the `.dat` at start-up (past the last `.idx` row).
    pub needles_recovered: Counter,
    /// Bytes cut from torn `.dat` tails at start-up.
    pub bytes_cut: Counter,
    /// `.idx` rows dropped at start-up because they pointed past the `.dat` or were garbage.
    pub idx_rows_dropped: Counter,
    /// Corrupt `.dat` regions followed by valid needles, skipped (not cut) at start-up.
    pub corrupt_regions: Counter,
    /// Bytes in those regions.
    pub bytes_skipped: Counter,
    /// Volume recoveries stopped by an I/O error (the volume is read-only, nothing cut).
    pub recovery_io_errors: Counter,
    /// Volumes that failed to load (left in place, not quarantined) or refuse writes after a
    /// failure (recovery stopped by an I/O error, a failed fdatasync).
    pub volumes_failed: Gauge,
    /// Write errors (I/O, disk full).
    pub write_errors: Counter,
    /// Volumes loaded.
    pub volumes: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            writes: Counter::default(),
            write_bytes: Counter::default(),
            fdatasyncs: Counter::default(),
            fdatasync_seconds: common::metrics::latency_histogram(),
            batch_needles: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 12),
            ),
            deletes: Counter::default(),
            reads: Counter::default(),
            read_bytes: Counter::default(),
            crc_failures: Counter::default(),
            needles_recovered: Counter::default(),
            bytes_cut: Counter::default(),
            idx_rows_dropped: Counter::default(),
            corrupt_regions: Counter::default(),
            bytes_skipped: Counter::default(),
            recovery_io_errors: Counter::default(),
            volumes_failed: Gauge::default(),
            write_errors: Counter::default(),
            volumes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("kelp_volume");
        r.register(
            "writes",
            "Needles written and acknowledged",
            m.writes.clone(),
        );
        r.register(
            "write_bytes",
            "Bytes of needle records appended",
            m.write_bytes.clone(),
        );
        r.register(
            "fdatasyncs",
            "fdatasync calls on .dat files",
            m.fdatasyncs.clone(),
        );
        r.register(
            "fdatasync_seconds",
            "fdatasync latency",
            m.fdatasync_seconds.clone(),
        );
        r.register(
            "batch_needles",
            "Needles per group-commit batch",
            m.batch_needles.clone(),
        );
        r.register("deletes", "Deletions written", m.deletes.clone());
        r.register("reads", "Needles read", m.reads.clone());
        r.register("read_bytes", "Bytes of data served", m.read_bytes.clone());
        r.register(
            "crc_failures",
            "Needles whose checksum failed",
            m.crc_failures.clone(),
        );
        r.register(
            "needles_recovered",
            "Needles re-indexed from .dat at start-up",
            m.needles_recovered.clone(),
        );
        r.register(
            "bytes_cut",
            "Bytes cut from torn .dat tails at start-up",
            m.bytes_cut.clone(),
        );
        r.register(
            "idx_rows_dropped",
            "Bad .idx rows dropped at start-up",
            m.idx_rows_dropped.clone(),
        );
        r.register(
            "corrupt_regions",
            "Corrupt .dat regions followed by valid needles, skipped at start-up",
            m.corrupt_regions.clone(),
        );
        r.register(
            "bytes_skipped",
            "Bytes of corrupt .dat regions skipped at start-up",
            m.bytes_skipped.clone(),
        );
        r.register(
            "recovery_io_errors",
            "Volume recoveries stopped by an I/O error (volume read-only, nothing cut)",
            m.recovery_io_errors.clone(),
        );
        r.register(
            "volumes_failed",
            "Volumes that failed to load or refuse writes after a failure",
            m.volumes_failed.clone(),
        );
        r.register(
            "write_errors",
            "Write errors (I/O, disk full)",
            m.write_errors.clone(),
        );
        r.register("volumes", "Volumes loaded", m.volumes.clone());
        m
    }
}
