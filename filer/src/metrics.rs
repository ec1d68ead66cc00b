//! The filer's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Counters and histograms the filer updates.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Files created or replaced by uploads.
    pub files_created: Counter,
    /// Content bytes written to volumes.
    pub bytes_written: Counter,
    /// Chunks written to volumes.
    pub chunks_uploaded: Counter,
    /// Uploads that failed (a chunk write failed or the body broke).
    pub upload_errors: Counter,
    /// Chunk deletions queued and not yet done (as of the collector's last pass).
    pub chunk_deletions_pending: Gauge,
    /// Chunk deletion attempts that failed (they are retried).
    pub chunk_deletions_failed: Counter,
    /// Chunk deletions done.
    pub chunk_deletions_done: Counter,
    /// Queued chunk deletions refused because an entry references the chunk.
    pub chunk_deletions_refused: Counter,
    /// Chunks that could not be read while serving a file.
    pub chunk_read_errors: Counter,
    /// Chunks whose ETag from the volume server differed from the entry's recorded one.
    pub chunk_etag_mismatches: Counter,
    /// Latency of synced metadata writes, in seconds.
    pub rocksdb_write_seconds: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (prefix `filer_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            files_created: Counter::default(),
            bytes_written: Counter::default(),
            chunks_uploaded: Counter::default(),
            upload_errors: Counter::default(),
            chunk_deletions_pending: Gauge::default(),
            chunk_deletions_failed: Counter::default(),
            chunk_deletions_done: Counter::default(),
            chunk_deletions_refused: Counter::default(),
            chunk_read_errors: Counter::default(),
            chunk_etag_mismatches: Counter::default(),
            rocksdb_write_seconds: common::metrics::latency_histogram(),
        };
        let r = registry.sub_registry_with_prefix("filer");
        r.register(
            "files_created",
            "Files created or replaced by uploads",
            m.files_created.clone(),
        );
        r.register(
            "bytes_written",
            "Content bytes written to volumes",
            m.bytes_written.clone(),
        );
        r.register(
            "chunks_uploaded",
            "Chunks written to volumes",
            m.chunks_uploaded.clone(),
        );
        r.register(
            "upload_errors",
            "Uploads that failed",
            m.upload_errors.clone(),
        );
        r.register(
            "chunk_deletions_pending",
            "Chunk deletions queued and not yet done",
            m.chunk_deletions_pending.clone(),
        );
        r.register(
            "chunk_deletions_failed",
            "Chunk deletion attempts that failed and will be retried",
            m.chunk_deletions_failed.clone(),
        );
        r.register(
            "chunk_deletions_done",
            "Chunk deletions done",
            m.chunk_deletions_done.clone(),
        );
        r.register(
            "chunk_deletions_refused",
            "Queued chunk deletions refused because an entry references the chunk",
            m.chunk_deletions_refused.clone(),
        );
        r.register(
            "chunk_etag_mismatches",
            "Chunks whose ETag from the volume server differed from the entry's recorded one",
            m.chunk_etag_mismatches.clone(),
        );
        r.register(
            "chunk_read_errors",
            "Chunks that could not be read while serving a file",
            m.chunk_read_errors.clone(),
        );
        r.register(
            "rocksdb_write_seconds",
            "Latency of synced metadata writes",
            m.rocksdb_write_seconds.clone(),
        );
        m
    }
}
