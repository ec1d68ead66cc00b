//! `kelp-master`: cluster topology from volume servers' heartbeats, file id assignment with
//! on-demand volume growth, volume lookup, and a durable state file so that no file id is ever
//! handed out twice.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`state`] — the durable state file and the id sequencer.
//! - [`topology`] — soft state from heartbeats; which volumes are writable.
//! - [`service`] — domain operations (assign, grow, lookup, heartbeat) and their errors.
//! - [`metrics`] — Prometheus metrics.
//! - [`http`] — the router, its error mapping and the routes.

pub mod config;
pub mod http;
pub mod metrics;
pub mod service;
pub mod state;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::client::HttpClient;
use common::client::volume::VolumeClient;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Size of a freshly allocated volume (its superblock).
pub const VOLUME_EMPTY_SIZE: u64 = 8;

/// Runs the master on `listener` until `shutdown` is cancelled. The data directory must exist.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("read the bound address")?;
    let sequencer = state::Sequencer::load(&cfg.dir)?;
    let replication = cfg
        .default_replication
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))
        .context("parse --default-replication")?;
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let master = service::Master::new(
        sequencer,
        Duration::from_millis(cfg.pulse_ms.max(10)),
        common::config::mib(cfg.volume_size_limit_mb),
        replication,
        VolumeClient::new(HttpClient::new(Duration::from_secs(30))),
        metrics,
    );
    let state = http::AppState {
        master: Arc::new(master),
        registry: Arc::new(registry),
        addr: addr.to_string(),
    };
    tracing::info!(%addr, dir = %cfg.dir.display(), "master listening");
    common::http::serve(
        listener,
        http::router(state),
        shutdown,
        Duration::from_secs(10),
    )
    .await
    .context("serve http")?;
    tracing::info!("master stopped");
    Ok(())
}
