//! Infrastructure shared by every Kelp service, the CLI and the end-to-end suite.
//!
//! Nothing here knows about blobs, files or topics beyond their wire shapes: business logic
//! lives in the service crates, which never depend on each other.
//!
//! # Layout
//! - [`ids`] — file ids (`3,01637037d6`) and volume ids.
//! - [`config`] — the flags every service shares (clap, each also read from `KELP_*`).
//! - [`http`] — the JSON error type, extractors, the server layers and the serve loop.
//! - [`client`] — the one traced HTTP client and the typed clients of each service.
//! - [`api`] — wire types (serde only) of each service.
//! - [`etcd`] — a typed client of etcd's v3 JSON gateway (the filer's shared metadata store).
//! - [`fs`] — crash-safe file helpers and the data-directory lock.
//! - [`lease`] — a lease in the filer: which instance of a service is the active one.
//! - [`service`] — the shared `main` of every service binary.
//! - [`shutdown`] — SIGTERM/SIGINT handling.
//! - [`telemetry`] — tracing, OTLP export and W3C context propagation.
//! - [`metrics`] — the Prometheus registry helpers.
//! - [`security`] — fid tokens (JWT), the cluster token, client API keys and their checks.
//! - [`retry`] — the one jittered exponential backoff.
//! - [`sync`] — the one lock-poison and panic policy: fatal.
//! - [`time`] — wall-clock helpers.
//! - [`tls`] — rustls (ring) server and client configurations, development certificates.

#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod etcd;
pub mod fs;
pub mod http;
pub mod ids;
pub mod lease;
pub mod metrics;
pub mod retry;
pub mod security;
pub mod service;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod tls;
