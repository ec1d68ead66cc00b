//! `kelp-broker`: a durable message queue on top of Kelp's blob store.
//!
//! Topics `(namespace, name)` have N partitions, each an append-only log with exact `u64`
//! offsets starting at 0. Published records are encoded once into an in-memory batch; a
//! per-partition flusher writes them as a *segment* to a volume server (fsynced) and records
//! the segment in the filer (synced), and only then counts them durable. `acks=durable`
//! publishes are answered after that; `acks=buffered` ones as soon as the records are in
//! memory. Fetches read by offset from memory or from segments, and by default see only
//! durable records. Start-up recovers each partition's offsets from its first and last
//! segment entries.
//!
//! # Layout
//! - [`config`]: flags (`KELP_*` env vars).
//! - [`core`]: the state every part shares (store, budgets, metrics, lifecycle tokens).
//! - [`http`]: the router, one handler module per resource, and `http::error`, the only
//!   place that maps a [`service::Error`] to an HTTP status.
//! - [`service`]: topics, recovery, consumer groups, the admin flush, readiness, and the
//!   [`service::Error`] every domain operation returns.
//! - [`names`]: valid namespace, topic and group names.
//! - [`publish`] and [`fetch`]: the two hot paths.
//! - [`flusher`]: the per-partition flush loop (group commit, retries, tracing).
//! - [`partition`] and [`log`]: a partition's state and its in-memory log buffer.
//! - [`segment`]: the on-volume segment encoding (batches with crc32c).
//! - [`members`]: the live brokers and who should own each partition (`--ownership shared`).
//! - [`cache`]: the LRU of decoded segments.
//! - [`kafka_backend`]: the broker as the backend of its Kafka listener (`--kafka-port`):
//!   produce, fetch, offsets and idempotent producers, with broker errors mapped to Kafka's.
//! - [`store`]: the [`store::Store`] trait over master, volume servers and filer, with an
//!   in-memory implementation for tests.
//! - [`metrics`]: Prometheus metrics.

#![deny(missing_docs)]

pub mod cache;
pub mod config;
pub mod core;
pub mod fetch;
pub mod flusher;
pub mod http;
pub mod kafka_backend;
pub mod log;
pub mod members;
pub mod metrics;
pub mod names;
pub mod partition;
pub mod publish;
pub mod retention;
pub mod segment;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::client::HttpClient;
use common::security::Security;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use service::Broker;

/// Timeout of each call to the master, volume servers and filer.
const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the broker on `listener` until `shutdown` is cancelled, then stops accepting
/// publishes, flushes everything buffered (for at most `--shutdown-flush-timeout-ms`, logging
/// what could not be flushed) and returns.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let security = cfg.security.load_for("broker")?;
    let http = security
        .apply(HttpClient::new(STORE_CALL_TIMEOUT))
        .context("build the broker's http client")?;
    let lease = (cfg.lease_ttl_secs > 0)
        .then(|| common::client::filer::FilerClient::new(http.clone(), &cfg.filer));
    let store = store::http::HttpStore::new(
        http,
        security.clone(),
        &cfg.master,
        &cfg.filer,
        &cfg.collection,
        &cfg.replication,
    );
    serve(cfg, Arc::new(store), security, listener, shutdown, lease).await
}

/// The filer entry of the active broker's lease (`common::lease`).
pub const LEASE_PATH: &str = "/brokers/active.lease";

/// The Kafka listener, bound (on `--ip`, `--kafka-port`), with the host and port it
/// advertises.
struct KafkaListener {
    listener: TcpListener,
    host: String,
    port: u16,
}

/// Binds the Kafka listener and records its address in `<dir>/addrs.json`; `None` with the
/// port configured off (0).
async fn bind_kafka(cfg: &Config, http: &TcpListener) -> anyhow::Result<Option<KafkaListener>> {
    if cfg.kafka_port == 0 {
        return Ok(None);
    }
    let listener = TcpListener::bind((cfg.ip.as_str(), cfg.kafka_port))
        .await
        .with_context(|| format!("bind the Kafka listener to {}:{}", cfg.ip, cfg.kafka_port))?;
    let local = listener.local_addr()?;
    if cfg.dir.is_absolute() {
        common::http::write_addrs(&cfg.dir, http.local_addr()?, Some(local))
            .context("write addrs.json")?;
    }
    let host = cfg.kafka_advertised_host.clone().unwrap_or_else(|| {
        match cfg.ip.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            _ => cfg.ip.clone(),
        }
    });
    let port = cfg.kafka_advertised_port.unwrap_or(local.port());
    Ok(Some(KafkaListener {
        listener,
        host,
        port,
    }))
}

/// Serves the Kafka listener in a task; without one, the task never ends.
fn start_kafka(
    broker: &Arc<Broker>,
    kafka: Option<KafkaListener>,
    security: &Security,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let cfg = &broker.cfg;
    let Some(KafkaListener {
        listener,
        host,
        port,
    }) = kafka
    else {
        return Ok(tokio::spawn(std::future::pending()));
    };
    let local = listener.local_addr()?;
    let node_id = if broker.is_shared() {
        members::node_id(broker.leadership().me())
    } else {
        kafka::KafkaConfig::default().node_id
    };
    let kcfg = kafka::KafkaConfig {
        node_id,
        advertised_host: host,
        advertised_port: port,
        auto_create_topics: cfg.kafka_auto_create,
        auto_create_partitions: cfg.kafka_auto_create_partitions,
        max_request_bytes: common::config::mib(cfg.kafka_max_request_mb) as usize,
        // The broker's certificate, as on its HTTP listener.
        tls: security.serve_options(DRAIN)?.tls,
        sasl: kafka_sasl(security),
        ..kafka::KafkaConfig::default()
    };
    if kcfg.sasl.is_none() && security.cluster_token.is_some() {
        tracing::warn!(
            "the Kafka listener authenticates no one (no --api-keys-file): any client that reaches it may produce and consume"
        );
    }
    tracing::info!(addr = %local, advertised = %format!("{}:{}", kcfg.advertised_host, kcfg.advertised_port), namespace = %cfg.kafka_namespace, "kafka listener started");
    let backend = Arc::new(kafka_backend::KafkaBackend::new(
        broker.clone(),
        &cfg.kafka_namespace,
    ));
    Ok(tokio::spawn(kafka::serve(
        listener, backend, kcfg, shutdown,
    )))
}

/// The Kafka listener's SASL/PLAIN check when API keys are configured: the password is a Kelp
/// API key — a write key (or the cluster token) may do everything, a read key consumes (reads,
/// groups and offset commits; see `kafka::sasl`); the username is informational.
fn kafka_sasl(security: &Security) -> Option<kafka::sasl::Authenticator> {
    use common::security::Scope;
    use kafka::sasl::Access;
    let keys = security.api_keys.clone()?;
    let token = security.cluster_token.clone();
    Some(kafka::sasl::Authenticator::new(move |_user, password| {
        if token
            .as_ref()
            .is_some_and(|t| t.matches(password.as_bytes()))
        {
            return Some(Access::ReadWrite);
        }
        match keys.scope_of(password)? {
            Scope::Write => Some(Access::ReadWrite),
            Scope::Read => Some(Access::ReadOnly),
        }
    }))
}

/// [`run`] with a given store (tests use [`store::mem::MemStore`]); the routes check the
/// credentials of `cfg.security`.
pub async fn run_with_store(
    cfg: Config,
    store: Arc<dyn store::Store>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let security = cfg.security.load_for("broker")?;
    serve(cfg, store, security, listener, shutdown, None).await
}

/// Serves the broker over `store`, its routes checking `security`; with `lease` (the filer
/// holding [`LEASE_PATH`]), as the active broker only while it holds the lease, a standby
/// before.
async fn serve(
    cfg: Config,
    store: Arc<dyn store::Store>,
    security: Arc<Security>,
    listener: TcpListener,
    shutdown: CancellationToken,
    lease: Option<common::client::filer::FilerClient>,
) -> anyhow::Result<()> {
    tracing::info!(
        flush_interval_ms = cfg.flush_interval_ms,
        flush_bytes = cfg.flush_bytes,
        flush_linger_ms = cfg.flush_linger_ms,
        flush_pipeline = cfg.flush_pipeline,
        max_buffer_mb = cfg.max_buffer_mb,
        collection = %cfg.collection,
        replication = %cfg.replication,
        "starting broker"
    );
    let me = match &cfg.advertise {
        Some(a) => a.clone(),
        None => listener
            .local_addr()
            .context("read the bound address")?
            .to_string(),
    };
    let kafka = bind_kafka(&cfg, &listener).await?;
    let kafka_address = kafka.as_ref().map(|k| format!("{}:{}", k.host, k.port));
    let ttl = Duration::from_secs(cfg.lease_ttl_secs);
    let lease_stop = CancellationToken::new();
    let shared = cfg.ownership == config::Ownership::Shared && lease.is_some();
    if shared && cfg.advertise.is_none() && (me.starts_with("0.0.0.0") || me.starts_with("[::]")) {
        tracing::warn!(advertise = %me, "sharing partitions without --advertise on a wildcard address: other brokers cannot redirect clients here, and a second broker would take the same member name; set --advertise host:port");
    }
    let (leadership, lease_task, members) = match lease {
        None => (Arc::new(common::lease::Leadership::single(&me)), None, None),
        Some(filer) => {
            // Shared: each broker holds its own member lease, named by its URL (clients
            // are redirected there). Standby: all contend for the one broker lease.
            let (me, path) = if shared {
                let scheme = if security.serves_tls() {
                    "https"
                } else {
                    "http"
                };
                let url = format!("{scheme}://{me}");
                let path = members::member_path(&url);
                (url, path)
            } else {
                (me.clone(), LEASE_PATH.to_owned())
            };
            let mut l = common::lease::Leadership::contender(&me);
            if let Some(k) = &kafka_address {
                l = l.with_attr("kafka", k);
            }
            let l = Arc::new(l);
            tracing::info!(lease = %path, ttl_secs = cfg.lease_ttl_secs, advertise = %me, shared, "taking part in the broker lease");
            let members: Option<Arc<dyn members::Members>> =
                shared.then(|| Arc::new(members::FilerMembers::new(filer.clone())) as _);
            let task = tokio::spawn(common::lease::run_lease(
                l.clone(),
                filer,
                path,
                ttl,
                lease_stop.clone(),
            ));
            (l, Some(task), members)
        }
    };
    let broker = Broker::with_leadership(cfg, store, shutdown.clone(), leadership.clone());
    if let Some(k) = kafka_address {
        broker.set_kafka_address(k);
    }
    broker.spawn_loader(members.map(|m| (m, (ttl / 4).max(Duration::from_millis(100)))));
    // Deposed: once active, another broker took the lease (this one was paused or cut off
    // past its TTL, and its partitions are fenced). It stops, for its supervisor to start it
    // again as a standby.
    let deposed = {
        let (broker, me) = (broker.clone(), me.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if broker.is_loaded()
                    && !broker.is_shared()
                    && let common::lease::Role::Follower(Some(holder)) = broker.leadership().role()
                    && holder != me
                {
                    return holder;
                }
            }
        }
    };

    // Give up on flushing a bounded time after shutdown starts.
    let flush_timeout = broker.cfg.shutdown_flush_timeout();
    let abort = broker.abort.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        tokio::time::sleep(flush_timeout).await;
        abort.cancel();
    });

    let kafka = start_kafka(&broker, kafka, &security, shutdown.clone())?;
    // The Kafka listener ends only on shutdown; anything else is fatal.
    let stop = shutdown.clone();
    let kafka_failed = async move {
        let r = kafka.await;
        if stop.is_cancelled() {
            std::future::pending::<()>().await;
        }
        match r {
            Ok(Ok(())) => anyhow::anyhow!("the Kafka listener stopped"),
            Ok(Err(e)) => anyhow::Error::new(e).context("the Kafka listener failed"),
            Err(e) => anyhow::anyhow!("the Kafka listener task failed: {e}"),
        }
    };
    let serve_opts = security.serve_options(DRAIN)?;
    let router = http::router(broker.clone(), security);
    let served = tokio::select! {
        r = common::http::serve_with(listener, router, shutdown.clone(), serve_opts) => r.map_err(anyhow::Error::from),
        () = broker.fatal.cancelled() => Err(anyhow::anyhow!("a flusher died")),
        e = kafka_failed => Err(e),
        holder = deposed => {
            tracing::error!(active = %holder, "another broker took the broker lease over; stopping (this broker's partitions are fenced)");
            Err(anyhow::anyhow!("deposed: {holder} holds the broker lease"))
        }
    };
    // Whatever ended serving, stop: refuse publishes and flush what is buffered.
    shutdown.cancel();
    tracing::info!(
        buffered_bytes = broker.budget.used(),
        "flushing buffered records before exit"
    );
    broker.tasks.close();
    broker.tasks.wait().await;
    // Hands the lease over at once (a standby takes over without waiting for the TTL).
    lease_stop.cancel();
    if let Some(t) = lease_task {
        let _ = t.await;
    }
    let lost = broker.report_unflushed();
    if lost == 0 {
        tracing::info!("all buffered records are durable; broker stopped");
    }
    served?;
    if broker.fatal.is_cancelled() {
        anyhow::bail!("a flusher died");
    }
    if lost > 0 {
        anyhow::bail!("{lost} partitions could not be flushed before shutdown");
    }
    Ok(())
}
