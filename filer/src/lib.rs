//! `kelp-filer`: a path namespace whose metadata lives in RocksDB under `--dir` (or, with
//! `--store etcd`, in etcd, shared by several filers) and whose content is chunks on volume
//! servers.
//!
//! An upload is cut into `--chunk-size-mb` chunks, each assigned by the master and written
//! (fsynced) to a volume in parallel; only when every chunk is durable is the entry committed
//! in one synced RocksDB write. Deletes and overwrites queue the orphaned chunks in that same
//! write; a background collector deletes them from the volumes, retrying with backoff.
//!
//! # Layout
//! - [`config`]: flags (`--dir`, `--master`, `--chunk-size-mb`, …), each also from `KELP_*`.
//! - [`http`]: the router ([`http::router`]) and handlers: file API, `/__meta/` API, health.
//! - [`service`]: domain operations and their [`service::Error`]; one file per pipeline, each
//!   stating its invariant: `service::namespace` (read-check-write of entries, delete, rename),
//!   `service::upload` (chunks, then one commit; the orphan guard), `service::read` (verified
//!   streaming reads). A panic is fatal (see [`service`]).
//! - [`store`]: the [`store::MetaStore`] trait, its RocksDB, etcd and in-memory
//!   implementations, the guards that make a write conditional, and the key layout
//!   ([`store::codec`]).
//! - [`chunks`]: chunk splitting, range resolution, `Range` parsing, ETags (pure functions).
//! - [`path`]: path validation and manipulation.
//! - [`locks`]: hierarchical striped path locks making read-check-write atomic.
//! - `gc`: the background chunk collector.
//! - [`metrics`]: Prometheus metrics.

#![deny(missing_docs)]

pub mod chunks;
pub mod config;
mod gc;
pub mod http;
pub mod locks;
pub mod metrics;
pub mod path;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use http::{AppState, router};

/// How long in-flight requests and mutations may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// How long start-up waits for etcd to answer (it may be starting beside the filer).
const ETCD_START_WAIT: Duration = Duration::from_secs(30);

/// Opens the etcd store, retrying while etcd cannot be reached for up to
/// [`ETCD_START_WAIT`]; any other failure (a foreign format marker) is fatal at once.
fn open_etcd(
    client: &Arc<common::etcd::EtcdClient>,
    prefix: &str,
    limits: store::EtcdLimits,
) -> anyhow::Result<store::EtcdStore> {
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store::EtcdStore::open(client.clone(), prefix, limits) {
            Ok(store) => return Ok(store),
            Err(store::StoreError::Etcd(e))
                if e.is_transient() && started.elapsed() < ETCD_START_WAIT =>
            {
                tracing::warn!(attempt, error = %e, "etcd not reachable yet, retrying");
                let wait = common::retry::backoff(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                );
                // On the blocking pool (see the caller), never on a runtime worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e).context("open the etcd metadata store"),
        }
    }
}

/// Opens the store `--store` names: RocksDB under `<dir>/meta`, or etcd (with an HTTPS
/// endpoint trusting `--tls-ca`). Either open blocks, so it runs on the blocking pool.
async fn open_store(
    cfg: &Config,
    security: &common::security::Security,
) -> anyhow::Result<Arc<dyn store::MetaStore>> {
    let dir = cfg.listen.dir.clone();
    match cfg.store {
        config::StoreKind::Rocksdb => {
            let meta = dir.join("meta");
            let store =
                tokio::task::spawn_blocking(move || -> anyhow::Result<store::RocksStore> {
                    common::fs::create_dir_all(&dir)
                        .with_context(|| format!("create data dir {}", dir.display()))?;
                    store::RocksStore::open(&meta)
                        .with_context(|| format!("open metadata store {}", meta.display()))
                })
                .await
                .context("join the store opener")??;
            tracing::info!(store = "rocksdb", path = %store.path().display(), "metadata store open");
            Ok(Arc::new(store))
        }
        config::StoreKind::Etcd => {
            let client = common::etcd::EtcdClient::for_service(
                &cfg.etcd_endpoints,
                security,
                Duration::from_secs(10),
            )?;
            let prefix = cfg.etcd_prefix.clone();
            let limits = store::EtcdLimits {
                max_txn_ops: cfg.etcd_max_txn_ops,
                ..store::EtcdLimits::default()
            };
            let endpoints = cfg.etcd_endpoints.join(",");
            let client = Arc::new(client);
            let store = tokio::task::spawn_blocking(move || {
                common::fs::create_dir_all(&dir)
                    .with_context(|| format!("create data dir {}", dir.display()))?;
                open_etcd(&client, &prefix, limits)
            })
            .await
            .context("join the store opener")??;
            tracing::info!(store = "etcd", endpoints = %endpoints, prefix = %cfg.etcd_prefix, max_upload = cfg.max_upload(), "metadata store open");
            if cfg.max_upload() < common::config::mib(cfg.max_upload_mb) {
                tracing::warn!(
                    max_upload_mb = cfg.max_upload_mb,
                    effective_bytes = cfg.max_upload(),
                    max_chunks = cfg.etcd_max_chunks(),
                    "uploads limited below --max-upload-mb: a file on the etcd store has at most max_chunks chunks of --chunk-size-mb"
                );
            }
            Ok(Arc::new(store))
        }
    }
}

/// Opens the metadata store `--store` names (RocksDB under `<cfg.listen.dir>/meta` by default), serves the filer on `listener` until
/// `shutdown` is cancelled, then drains. The caller owns the data-directory lock.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let security = cfg.security.load_for("filer")?;
    let serve_opts = security.serve_options(DRAIN)?;
    if !cfg.fsync {
        tracing::warn!(
            "--fsync=false: volume servers will not fsync chunks; use for throwaway data only"
        );
    }
    let store = open_store(&cfg, &security).await?;
    let state = AppState::new(&cfg, store, security)?;
    let filer = state.filer.clone();

    let collector_stop = CancellationToken::new();
    let mut collector = tokio::spawn(filer.clone().collect_chunks(collector_stop.clone()));

    let addr = listener.local_addr().context("read the bound address")?;
    tracing::info!(%addr, master = %cfg.master, chunk_size_mb = cfg.chunk_size_mb, "filer listening");
    let serve = common::http::serve_with(listener, router(state), shutdown.clone(), serve_opts);
    tokio::pin!(serve);
    let served = tokio::select! {
        res = &mut serve => res.context("serve http"),
        res = &mut collector => {
            // The collector only returns when told to stop: anything else is fatal.
            shutdown.cancel();
            match res {
                Ok(()) => Err(anyhow::anyhow!("chunk collector stopped unexpectedly")),
                Err(e) => Err(anyhow::anyhow!("chunk collector failed: {e}")),
            }
        }
    };

    // Mutations run in tracked tasks so they finish even when their request was dropped.
    filer.tasks().close();
    if tokio::time::timeout(DRAIN, filer.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?DRAIN,
            "metadata mutations did not finish within the drain period"
        );
    }
    collector_stop.cancel();
    if !collector.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut collector).await;
    }
    tracing::info!("filer stopped");
    served
}
