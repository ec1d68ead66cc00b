//! The end-to-end harness: starts Kelp's real binaries as processes on ephemeral 127.0.0.1
//! ports, each with its own data dir and log file; stops (SIGTERM), kills (SIGKILL) and
//! restarts them; dumps their logs when a test fails; fails a test whose service panicked;
//! and reaps every process and temp dir, even when a test panics.
//!
//! # Layout
//! - [`ServiceHandle`] — one service process.
//! - [`Cluster`] — a master, volume servers, a filer and a broker wired together.
//! - [`broker`] — a raw-HTTP broker client and the checker of acknowledged publishes.
//! - [`kafka`] — the broker's Kafka listener address and real Kafka clients as processes.
//! - [`proxy`] — a TCP proxy a test cuts to partition one process from another.
//! - [`server`] — the all-in-one `kelp server` as a process.
//! - [`volume`] — random blobs and metrics for volume server tests.
//! - [`otlp`] — an OTLP/HTTP receiver that decodes the spans the services export.
//! - [`secure`] — generated credentials and TLS files, and clients that present them.
//! - [`seaweed`] — the real SeaweedFS as processes, for the side-by-side tests.
//! - [`bin_dir`] — where the binaries are (`E2E_BIN_DIR`, else the workspace's `target/debug`).

#![deny(missing_docs)]
// The suite is an outside client of Kelp (raw reqwest, as users call it), not a service.
#![allow(clippy::disallowed_methods)]

pub mod broker;
mod cluster;
pub mod kafka;
pub mod otlp;
pub mod proxy;
pub mod seaweed;
pub mod secure;
pub mod server;
mod service;
pub mod volume;

pub use cluster::{Cluster, ClusterOptions};
pub use service::{ServiceHandle, bin_dir};

/// A raw reqwest client, as a user's program builds one. Kelp builds reqwest without a default
/// TLS provider (ring, not aws-lc), so this installs ring as the process default first.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("a reqwest client with the ring provider builds")
}

/// A raw reqwest client builder, with ring installed as the process-wide TLS provider.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    common::tls::install_default_provider();
    reqwest::Client::builder()
}

/// `reqwest::get` through [`http_client`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}
