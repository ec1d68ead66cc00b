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
//! - [`server`] — the all-in-one `kelp server` as a process.
//! - [`volume`] — random blobs and metrics for volume server tests.
//! - [`otlp`] — an OTLP/HTTP receiver that decodes the spans the services export.
//! - [`seaweed`] — the real SeaweedFS as processes, for the side-by-side tests.
//! - [`bin_dir`] — where the binaries are (`E2E_BIN_DIR`, else the workspace's `target/debug`).

#![deny(missing_docs)]
// The suite is an outside client of Kelp (raw reqwest, as users call it), not a service.
#![allow(clippy::disallowed_methods)]

pub mod broker;
mod cluster;
pub mod kafka;
pub mod otlp;
pub mod seaweed;
pub mod server;
mod service;
pub mod volume;

pub use cluster::{Cluster, ClusterOptions};
pub use service::{ServiceHandle, bin_dir};
