//! `kelp-registry`: a Schema Registry speaking Confluent's REST API, whose schemas are stored
//! durably on a Kelp broker topic.
//!
//! Every change (a schema version, a compatibility level, a mode, a deletion) is one record of
//! the topic `registry/_schemas` (one partition), in the key/value layout Confluent's registry
//! writes to its `_schemas` topic, published with `acks=durable`: a registration is answered
//! only once its record is fsynced on a volume server and committed in the filer. The registry
//! keeps an in-memory index of the topic, rebuilt at start-up by reading it from offset 0 to
//! its durable end; `/readyz` answers 200 only after that. Ids come from the log: the next id
//! is the largest id in it plus one, so no id is reused, even when a write's answer was lost.
//!
//! # Layout
//! - [`config`]: flags (`--broker`, `--port`, …), each also from `KELP_*`.
//! - [`http`]: the router, the Confluent error body, extractors and one module per resource.
//! - [`service`]: the operations (register, lookup, delete, compatibility, config, mode).
//! - [`index`]: the in-memory index, changed only by applying log records.
//! - [`leader`]: the writer lease in the filer (several instances: one writes, the others
//!   forward writes to it and follow the topic).
//! - [`record`]: the topic's key/value layout (Confluent's).
//! - [`schema`]: parsing, identity and compatibility of Avro, JSON Schema and Protobuf.
//! - [`store`]: the [`store::SchemaLog`] trait, on a broker topic or in memory (tests).
//! - [`metrics`]: Prometheus metrics.

#![deny(missing_docs)]

pub mod config;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod record;
pub mod schema;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use common::client::filer::FilerClient;
use common::security::Security;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use http::{AppState, router};

/// How long in-flight requests may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the registry on `listener` until `shutdown` is cancelled, with its schemas on the
/// broker `cfg.broker`. The index is rebuilt in the background; `/readyz` tells when it is.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let security = cfg.security.load_for("registry")?;
    // Fetches long-poll for at most a second; publishes wait for their durable flush.
    let http = security
        .apply(HttpClient::new(cfg.broker_timeout()))
        .context("build the broker client")?;
    let client = BrokerClient::new(http, &cfg.broker);
    let log = store::broker::BrokerLog::new(client, &cfg.topic_namespace, &cfg.topic);
    serve(cfg, Arc::new(log), security, listener, shutdown).await
}

/// How long a stopping registry waits to hand its writer lease over.
const LEASE_RELEASE: Duration = Duration::from_secs(5);

/// [`run`] over a given log (tests use [`store::mem::MemLog`]); the routes check, and the
/// filer and forwarding clients carry, the credentials of `cfg.security`.
pub async fn run_with_log(
    cfg: Config,
    log: Arc<dyn store::SchemaLog>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let security = cfg.security.load_for("registry")?;
    serve(cfg, log, security, listener, shutdown).await
}

/// Serves the registry over `log` with `security`.
async fn serve(
    cfg: Config,
    log: Arc<dyn store::SchemaLog>,
    security: Arc<Security>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("read the bound address")?;
    tracing::info!(
        %addr,
        broker = %cfg.broker,
        topic = %format!("{}/{}", cfg.topic_namespace, cfg.topic),
        "starting schema registry"
    );
    let me = cfg
        .advertised_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let lease_stop = CancellationToken::new();
    let (leadership, lease) = match &cfg.filer {
        None => (Arc::new(leader::Leadership::single(&me)), None),
        Some(filer) => {
            let l = Arc::new(leader::Leadership::contender(&me));
            let http = security
                .apply(HttpClient::new(cfg.lease_ttl() / 2))
                .context("build the filer client")?;
            let client = FilerClient::new(http, filer);
            let path = leader::lease_path(&cfg.topic_namespace, &cfg.topic);
            tracing::info!(%path, %me, "contending for the writer lease");
            let task = tokio::spawn(leader::run_lease(
                l.clone(),
                client,
                path,
                cfg.lease_ttl(),
                lease_stop.clone(),
            ));
            (l, Some(task))
        }
    };
    let serve_opts = security.serve_options(DRAIN)?;
    let state = AppState::with_leadership(cfg, log, leadership, security)?;
    let registry = state.registry.clone();
    let stop = shutdown.clone();
    let loader = tokio::spawn(async move {
        registry.load(stop.clone()).await;
        registry.follow(stop).await;
    });
    let served =
        common::http::serve_with(listener, router(state), shutdown.clone(), serve_opts).await;
    shutdown.cancel();
    loader.abort();
    lease_stop.cancel();
    if let Some(task) = lease {
        let _ = tokio::time::timeout(LEASE_RELEASE, task).await;
    }
    tracing::info!("schema registry stopped");
    served.context("serve http")
}
