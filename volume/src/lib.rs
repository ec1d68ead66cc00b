//! `kelp-volume`: the volume server. It stores blobs ("needles") in append-only volume files,
//! acknowledges a write only after it is fsynced (group commit), recovers torn tails at start,
//! verifies checksums on every read, forwards writes to replicas, and heartbeats the master.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`service`] — domain operations: writes with their replication fan-out, reads, deletes,
//!   allocation, status; a `thiserror` enum, no HTTP.
//! - [`http`] — the router ([`http::router`]), `http::error` (the only place that knows status
//!   codes) and the handlers in [`http::routes`].
//! - [`store`] — the on-disk formats ([`store::needle`], [`store::idx`], [`store::superblock`]),
//!   one volume's handle ([`store::volume`]: open, writes, deletes), its read path
//!   (`store::read`: nothing is served unless its checksum holds), the two threads of its
//!   group commit (`store::writer` appends, `store::syncer` fsyncs then publishes), its
//!   recovery (`store::recover`: never cuts a byte followed by a valid needle), its online
//!   compaction ([`store::vacuum`]), the fault-injection seam tests use ([`store::faults`]), and
//!   the set of volumes ([`store::Store`]).
//! - [`heartbeat`] — the loop that reports volumes to the master, one span per beat.
//! - [`metrics`] — Prometheus metrics.

#![deny(missing_docs)]

pub mod config;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Runs a volume server on `listener` until `shutdown` is cancelled. The data directory must
/// exist (and be locked by the caller).
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate().context("check the configuration")?;
    let addr = listener.local_addr().context("read the bound address")?;
    let sec = cfg.security.load_for("volume")?;
    let serve_opts = sec.serve_options(Duration::from_secs(10))?;
    // One client for the heartbeats, replica forwards and master lookups: it sends the
    // cluster token with every call.
    let http = sec.apply(common::client::HttpClient::new(Duration::from_secs(60)))?;
    let url = cfg.public_url.clone().unwrap_or_else(|| addr.to_string());
    if !cfg.fsync {
        tracing::warn!(
            "fsync is disabled: acknowledged writes can be lost in a crash (throwaway data only)"
        );
    }
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let dir = cfg.listen.dir.clone();
    let m = metrics.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::load(&dir, m))
        .await
        .context("join volume loading")?
        .context("load volumes")?;
    let store = Arc::new(store);
    let volume = Arc::new(
        service::VolumeServer::with_client(
            store.clone(),
            Arc::new(cfg),
            url.clone(),
            metrics,
            http,
        )
        .with_security(sec),
    );
    let state = http::AppState {
        volume: volume.clone(),
        registry: Arc::new(registry),
    };
    tracing::info!(%addr, %url, master = %volume.config().master, volumes = store.len(), "volume server listening");
    let beats = tokio::spawn(heartbeat::run(volume.clone(), shutdown.clone()));
    if volume.config().scrub_on_start {
        // Verify every stored needle once, in the background, so corruption is reported at
        // start-up rather than at the first read (reads verify again regardless).
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let (checked, bad) = store.scrub();
            if bad.is_empty() {
                tracing::info!(
                    needles = checked,
                    "start-up scrub found every needle intact"
                );
            } else {
                tracing::error!(
                    needles = checked,
                    corrupt = bad.len(),
                    "start-up scrub found corrupt needles"
                );
            }
        });
    }
    let router = http::router(state);
    common::http::serve_with(listener, router, shutdown.clone(), serve_opts)
        .await
        .context("serve http")?;
    shutdown.cancel();
    beats.await.context("join heartbeat loop")?;
    tracing::info!("volume server stopped");
    Ok(())
}
