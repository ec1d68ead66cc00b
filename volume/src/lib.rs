//! `kelp-volume`: the volume server. It stores blobs ("needles") in append-only volume files,
//! acknowledges a write only after it is fsynced (group commit), recovers torn tails at start,
//! verifies checksums on every read, forwards writes to replicas, and heartbeats the master.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`store`] — the on-disk format ([`store::needle`], [`store::idx`], [`store::superblock`]),
//!   one volume's writer ([`store::volume`]) and its recovery (`store::recover`: never cuts a
//!   byte followed by a valid needle), the fault-injection seam tests use
//!   ([`store::faults`]), and the set of volumes ([`store::Store`]).
//! - [`http`] — the router and handlers.
//! - [`heartbeat`] — the loop that reports volumes to the master.
//! - [`metrics`] — Prometheus metrics.

pub mod config;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::client::HttpClient;
use common::client::master::MasterClient;
use common::client::volume::VolumeClient;
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
    let url = cfg.public_url.clone().unwrap_or_else(|| addr.to_string());
    if !cfg.fsync {
        tracing::warn!(
            "fsync is disabled: acknowledged writes can be lost in a crash (throwaway data only)"
        );
    }
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let dir = cfg.dir.clone();
    let m = metrics.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::load(&dir, m))
        .await
        .context("join volume loading")?
        .context("load volumes")?;
    let http = HttpClient::new(Duration::from_secs(60));
    let state = http::AppState {
        store: Arc::new(store),
        master: Arc::new(MasterClient::new(http.clone(), &cfg.master)),
        volumes: VolumeClient::new(http.clone()),
        http,
        url: url.clone(),
        registry: Arc::new(registry),
        metrics,
        beat: Arc::new(tokio::sync::Notify::new()),
        cfg: Arc::new(cfg),
    };
    tracing::info!(%addr, %url, master = %state.cfg.master, volumes = state.store.len(), "volume server listening");
    let beats = tokio::spawn(heartbeat::run(state.clone(), shutdown.clone()));
    if state.cfg.scrub_on_start {
        // Verify every stored needle once, in the background, so corruption is reported at
        // start-up rather than at the first read (reads verify again regardless).
        let store = state.store.clone();
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
    common::http::serve(listener, router, shutdown.clone(), Duration::from_secs(10))
        .await
        .context("serve http")?;
    shutdown.cancel();
    beats.await.context("join heartbeat loop")?;
    tracing::info!("volume server stopped");
    Ok(())
}
