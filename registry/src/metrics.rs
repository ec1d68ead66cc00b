//! The registry's Prometheus metrics (prefix `registry_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Counters and histograms the registry updates.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Schemas registered (new versions written).
    pub registered: Counter,
    /// Registrations refused as incompatible.
    pub incompatible: Counter,
    /// Records applied from the log (at start-up and after writes).
    pub records_replayed: Counter,
    /// Durable appends to the log that failed.
    pub write_errors: Counter,
    /// Latency of durable appends, in seconds.
    pub write_seconds: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            registered: Counter::default(),
            incompatible: Counter::default(),
            records_replayed: Counter::default(),
            write_errors: Counter::default(),
            write_seconds: common::metrics::latency_histogram(),
        };
        let r = registry.sub_registry_with_prefix("registry");
        r.register(
            "schemas_registered",
            "Schema versions written",
            m.registered.clone(),
        );
        r.register(
            "incompatible",
            "Registrations refused as incompatible",
            m.incompatible.clone(),
        );
        r.register(
            "records_replayed",
            "Records applied from the schemas log",
            m.records_replayed.clone(),
        );
        r.register(
            "write_errors",
            "Durable appends to the schemas log that failed",
            m.write_errors.clone(),
        );
        r.register(
            "write_seconds",
            "Latency of durable appends to the schemas log",
            m.write_seconds.clone(),
        );
        m
    }
}
