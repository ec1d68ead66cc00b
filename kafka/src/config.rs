//! [`KafkaConfig`]: how the Kafka listener presents itself, its limits, and its security
//! (TLS, SASL/PLAIN).

use std::sync::Arc;

use crate::sasl::Authenticator;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Host clients are told to connect to (Metadata, FindCoordinator, DescribeCluster).
    /// An IPv4 address by default: some clients resolve `localhost` to `::1` first.
    pub advertised_host: String,
    /// Port clients are told to connect to; 0 means the listener's own port.
    pub advertised_port: u16,
    /// This node's broker id.
    pub node_id: i32,
    /// Cluster id reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// Create unknown topics on Metadata requests that allow it (and on Produce).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (and of CreateTopics with -1).
    pub auto_create_partitions: u32,
    /// Largest request frame accepted; a bigger one closes the connection.
    pub max_request_bytes: usize,
    /// Requests of one connection handled at once before reading stops.
    pub max_in_flight_per_connection: usize,
    /// Smallest consumer session timeout accepted (Kafka's `group.min.session.timeout.ms`).
    pub group_session_min_ms: i32,
    /// Largest consumer session timeout accepted (Kafka's `group.max.session.timeout.ms`).
    pub group_session_max_ms: i32,
    /// How long the first rebalance of an empty group waits for more members
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Serve only TLS with this configuration (`SSL`/`SASL_SSL` clients).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Demand SASL/PLAIN authentication before any request but ApiVersions (`SASL_*`
    /// clients), checked by this authenticator.
    pub sasl: Option<Authenticator>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            advertised_host: "127.0.0.1".to_owned(),
            advertised_port: 0,
            node_id: 1,
            cluster_id: "kelp".to_owned(),
            auto_create_topics: true,
            auto_create_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_per_connection: 64,
            group_session_min_ms: 1_000,
            group_session_max_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 0,
            tls: None,
            sasl: None,
        }
    }
}
