//! `kelp-master`: cluster topology from volume servers' heartbeats, file id assignment with
//! on-demand volume growth, volume lookup, and a durable state file so that no file id is ever
//! handed out twice.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`state`] — the durable id state (a file, or etcd in HA) and the id sequencer.
//! - [`leader`] — leader election among masters on etcd, and the role each master plays.
//! - [`topology`] — soft state from heartbeats; which volumes are writable.
//! - [`service`] — domain operations (assign, grow, lookup, heartbeat) and their errors.
//! - [`metrics`] — Prometheus metrics.
//! - [`vacuum`] — vacuum orchestration across the volume servers, on demand and scheduled.
//! - [`http`] — the router, its error mapping and the routes.

#![deny(missing_docs)]

pub mod config;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod service;
pub mod state;
pub mod topology;
pub mod vacuum;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::client::HttpClient;
use common::client::volume::VolumeClient;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// How long one volume server may take to answer a vacuum.
const VACUUM_TIMEOUT: Duration = Duration::from_secs(3600);

/// Size of a freshly allocated volume (its superblock).
pub const VOLUME_EMPTY_SIZE: u64 = 8;

/// Runs the master on `listener` until `shutdown` is cancelled. The data directory must exist.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("read the bound address")?;
    let sec = cfg.security.load_for("master")?;
    let serve_opts = sec.serve_options(Duration::from_secs(10))?;
    let sequencer = state::Sequencer::load(&cfg.listen.dir)?;
    let me = advertised(&cfg, addr)?;
    let election = if cfg.etcd_endpoints.is_empty() {
        None
    } else {
        let ttl = Duration::from_secs(cfg.leader_ttl_secs);
        // A call that takes longer than a third of the TTL is as good as failed.
        let client = common::etcd::EtcdClient::for_service(
            &cfg.etcd_endpoints,
            &sec,
            (ttl / 3).max(Duration::from_secs(1)),
        )?;
        Some(leader::ElectionConfig {
            client: Arc::new(client),
            prefix: cfg.etcd_prefix.clone(),
            ttl,
            local_floor: sequencer.persisted(),
        })
    };
    let leadership = Arc::new(match election {
        None => leader::Leadership::alone(me.clone()),
        Some(_) => leader::Leadership::electing(me.clone()),
    });
    let replication = cfg
        .default_replication
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))
        .context("parse --default-replication")?;
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let pulse = Duration::from_millis(cfg.pulse_ms.max(10));
    let master = service::Master::new(
        sequencer,
        pulse,
        common::config::mib(cfg.volume_size_limit_mb),
        replication,
        VolumeClient::new(sec.apply(HttpClient::new(Duration::from_secs(30)))?)
            .with_security(sec.clone()),
        // Compaction of a large volume takes long; one attempt (the next round retries).
        vacuum::VacuumClient::new(sec.apply(HttpClient::new(VACUUM_TIMEOUT).with_attempts(1))?),
        metrics,
    )
    .with_limits(service::Limits::for_pulse(pulse, cfg.max_collections))
    .with_security(sec)
    .with_leadership(leadership);
    let master = Arc::new(master);
    let election_stop = shutdown.child_token();
    let election = election.map(|e| {
        tracing::info!(endpoints = %cfg.etcd_endpoints.join(","), prefix = %e.prefix, ttl_secs = cfg.leader_ttl_secs, advertise = %me, "electing a leader on etcd");
        tokio::spawn(leader::run(master.clone(), e, election_stop.clone()))
    });
    let threshold = vacuum::check_threshold(cfg.garbage_threshold)
        .map_err(anyhow::Error::msg)
        .context("check --garbage-threshold")?;
    let schedule_stop = shutdown.child_token();
    let schedule = (cfg.vacuum_interval_secs > 0).then(|| {
        tokio::spawn(vacuum::schedule(
            master.clone(),
            Duration::from_secs(cfg.vacuum_interval_secs),
            threshold,
            schedule_stop.clone(),
        ))
    });
    let state = http::AppState {
        master: master.clone(),
        garbage_threshold: threshold,
        registry: Arc::new(registry),
    };
    tracing::info!(%addr, dir = %cfg.listen.dir.display(), "master listening");
    let mut election = election;
    // The election runs until shutdown; should it end before (a panic), this master could
    // never lead again: stop it, loudly, for its supervisor to restart.
    let served = {
        let election_ended = async {
            match election.as_mut() {
                Some(task) => {
                    let r = task.await;
                    if shutdown.is_cancelled() {
                        std::future::pending::<()>().await;
                    }
                    anyhow::anyhow!("the leader election stopped unexpectedly: {r:?}")
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = common::http::serve_with(listener, http::router(state), shutdown.clone(), serve_opts) => {
                r.context("serve http")
            }
            e = election_ended => Err(e),
        }
    };
    shutdown.cancel();
    schedule_stop.cancel();
    if let Some(s) = schedule {
        let _ = s.await;
    }
    // Hands the lease back, so a standby leads at once.
    election_stop.cancel();
    if let Some(e) = election.filter(|e| !e.is_finished()) {
        let _ = e.await;
    }
    served?;
    tracing::info!("master stopped");
    Ok(())
}

/// The address followers redirect to: `--advertise`, else the bound address (refused with an
/// election when that is a wildcard nobody can connect to).
fn advertised(cfg: &Config, bound: std::net::SocketAddr) -> anyhow::Result<String> {
    if let Some(a) = &cfg.advertise {
        return Ok(a.clone());
    }
    if bound.ip().is_unspecified() && !cfg.etcd_endpoints.is_empty() {
        anyhow::bail!(
            "--ip {} is a wildcard: give --advertise host:port, the address other masters' followers redirect clients to",
            bound.ip()
        );
    }
    Ok(bound.to_string())
}
