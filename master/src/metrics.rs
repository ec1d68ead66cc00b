//! The master's Prometheus metrics (prefix `kelp_master_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The master's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Successful assigns.
    pub assigns: Counter,
    /// Assigns answered 503.
    pub assign_unavailable: Counter,
    /// Volumes grown.
    pub volumes_grown: Counter,
    /// Heartbeats received.
    pub heartbeats: Counter,
    /// Live volume servers.
    pub alive_nodes: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("kelp_master");
        r.register("assigns", "File ids assigned", m.assigns.clone());
        r.register(
            "assign_unavailable",
            "Assigns answered 503",
            m.assign_unavailable.clone(),
        );
        r.register(
            "volumes_grown",
            "Volumes grown on demand",
            m.volumes_grown.clone(),
        );
        r.register("heartbeats", "Heartbeats received", m.heartbeats.clone());
        r.register("alive_nodes", "Live volume servers", m.alive_nodes.clone());
        m
    }
}
