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
    /// 1 while this master hands out ids (the elected leader, or the only master), else 0.
    pub is_leader: Gauge,
    /// Terms this master was elected for (masters in HA).
    pub terms_won: Counter,
    /// Times this master stopped leading: its lease lost, not renewed in time, or handed back
    /// at shutdown.
    pub step_downs: Counter,
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
        r.register(
            "is_leader",
            "1 while this master hands out ids (the elected leader, or the only master)",
            m.is_leader.clone(),
        );
        r.register(
            "terms_won",
            "Terms this master was elected leader for (masters in HA on etcd)",
            m.terms_won.clone(),
        );
        r.register(
            "step_downs",
            "Times this master stopped leading (lease lost, not renewed in time, or handed back at shutdown)",
            m.step_downs.clone(),
        );
        m
    }
}
