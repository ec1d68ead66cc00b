//! `kelp server`: master, volume server, filer, broker and schema registry in one process, each
//! on its own port and still talking HTTP, with data under `<dir>/<service>`.
//!
//! Shutdown is ordered: on SIGTERM the schema registry stops first (its writes are already
//! durable), then the broker stops and flushes everything buffered while the volume server,
//! filer and master are still serving; then the others stop.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args, Parser};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Arguments of `kelp server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Root data directory; each service uses `<dir>/<service>`.
    #[arg(long, env = "KELP_DIR", default_value = "data")]
    dir: PathBuf,
    /// Address every service listens on.
    #[arg(long, env = "KELP_IP", default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Master port.
    #[arg(long, default_value_t = 9333)]
    master_port: u16,
    /// Volume server port.
    #[arg(long, default_value_t = 8080)]
    volume_port: u16,
    /// Filer port.
    #[arg(long, default_value_t = 8888)]
    filer_port: u16,
    /// Broker port.
    #[arg(long, default_value_t = 17777)]
    broker_port: u16,
    /// Schema registry port (Confluent's default).
    #[arg(long, default_value_t = 8081)]
    registry_port: u16,
    /// The broker's Kafka listener port (0 = off).
    #[arg(long, env = "KELP_KAFKA_PORT", default_value_t = 9092)]
    kafka_port: u16,
    /// Fsync before acknowledging (false only for throwaway data).
    #[arg(long, env = "KELP_FSYNC", default_value_t = true, action = ArgAction::Set)]
    fsync: bool,
    /// The volume server's address for clients (the `publicUrl` of assigns and lookups,
    /// SeaweedFS's `-publicUrl`), when they reach it otherwise than at `--ip:--volume-port`
    /// (a published container port, a proxy). The services keep using the internal one.
    #[arg(long, env = "KELP_VOLUME_CLIENT_URL")]
    volume_client_url: Option<String>,
    /// Credentials and TLS, shared by every service of the process (`kelp cert` makes a
    /// development set).
    #[command(flatten)]
    security: common::security::SecurityFlags,
}

/// Runs the all-in-one server until SIGTERM/SIGINT.
pub fn main(args: ServerArgs) -> anyhow::Result<()> {
    let telemetry = common::telemetry::init("server", args.security.tls_ca.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("start the tokio runtime")?;
    let result = runtime.block_on(run(args));
    drop(runtime);
    if let Err(e) = &result {
        tracing::error!("failed to run the server: {e:#}");
    }
    telemetry.shutdown();
    result
}

async fn bind(ip: IpAddr, port: u16, service: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("bind the {service} to {ip}:{port}"))
}

fn spawn<F>(set: &mut JoinSet<(&'static str, anyhow::Result<()>)>, name: &'static str, fut: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    set.spawn(async move { (name, fut.await) });
}

async fn run(a: ServerArgs) -> anyhow::Result<()> {
    let mut locks = Vec::new();
    let mut dirs = Vec::new();
    for service in ["master", "volume", "filer", "broker", "registry"] {
        let (dir, lock) = common::config::open_data_dir(service, &a.dir.join(service))?;
        locks.push(lock);
        dirs.push(dir);
    }
    let master_l = bind(a.ip, a.master_port, "master").await?;
    let volume_l = bind(a.ip, a.volume_port, "volume server").await?;
    let filer_l = bind(a.ip, a.filer_port, "filer").await?;
    let broker_l = bind(a.ip, a.broker_port, "broker").await?;
    let registry_l = bind(a.ip, a.registry_port, "schema registry").await?;
    let master_addr = master_l.local_addr()?.to_string();
    let filer_addr = filer_l.local_addr()?.to_string();
    let broker_addr = broker_l.local_addr()?.to_string();
    for (dir, l) in dirs
        .iter()
        .zip([&master_l, &volume_l, &filer_l, &broker_l, &registry_l])
    {
        common::http::write_addrs_file(dir, l.local_addr()?).context("write addrs.json")?;
    }
    let fsync = a.fsync.to_string();
    let d = |i: usize| dirs[i].to_string_lossy().into_owned();
    let mut master_cfg = master::Config::try_parse_from(["kelp-master", "--dir", &d(0)])?;
    let mut volume_args = vec![
        "kelp-volume".to_owned(),
        "--dir".to_owned(),
        d(1),
        "--master".to_owned(),
        master_addr.clone(),
        "--fsync".to_owned(),
        fsync.clone(),
    ];
    if let Some(u) = &a.volume_client_url {
        volume_args.extend(["--client-url".to_owned(), u.clone()]);
    }
    let mut volume_cfg = volume::Config::try_parse_from(volume_args)?;
    let mut filer_cfg =
        filer::Config::try_parse_from(["kelp-filer", "--dir", &d(2), "--master", &master_addr])?;
    let kafka_port = a.kafka_port.to_string();
    let mut broker_cfg = broker::Config::try_parse_from([
        "kelp-broker",
        "--dir",
        &d(3),
        "--master",
        &master_addr,
        "--filer",
        &filer_addr,
        "--kafka-port",
        &kafka_port,
        // One process, one broker: no active/standby lease (a restart on other ephemeral
        // ports would otherwise stand by until the previous run's lease expired).
        "--lease-ttl-secs",
        "0",
    ])?;

    let mut registry_cfg = registry::Config::try_parse_from([
        "kelp-registry",
        "--dir",
        &d(4),
        "--broker",
        &broker_addr,
    ])?;
    // Every service runs with the same credentials and certificate.
    master_cfg.security = a.security.clone();
    volume_cfg.security = a.security.clone();
    filer_cfg.security = a.security.clone();
    broker_cfg.security = a.security.clone();
    registry_cfg.security = a.security.clone();

    let signal = common::shutdown::signal_token()?;
    let registry_stop = CancellationToken::new();
    let broker_stop = CancellationToken::new();
    let others_stop = CancellationToken::new();
    let mut set = JoinSet::new();
    spawn(
        &mut set,
        "master",
        master::run(master_cfg, master_l, others_stop.clone()),
    );
    spawn(
        &mut set,
        "volume",
        volume::run(volume_cfg, volume_l, others_stop.clone()),
    );
    spawn(
        &mut set,
        "filer",
        filer::run(filer_cfg, filer_l, others_stop.clone()),
    );
    spawn(
        &mut set,
        "broker",
        broker::run(broker_cfg, broker_l, broker_stop.clone()),
    );
    // After the broker: the registry rebuilds its index from the broker's topic (retrying
    // until the broker answers) and is ready once it has.
    spawn(
        &mut set,
        "registry",
        registry::run(registry_cfg, registry_l, registry_stop.clone()),
    );
    tracing::info!(
        master = %master_addr,
        volume = %a.volume_port,
        filer = %filer_addr,
        broker = %a.broker_port,
        registry = %a.registry_port,
        data = %a.dir.display(),
        "kelp server running; stop with Ctrl-C"
    );

    let mut first_error = None;
    let mut broker_done = false;
    loop {
        tokio::select! {
            () = signal.cancelled(), if !registry_stop.is_cancelled() => {
                registry_stop.cancel();
            }
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                let (name, result) = joined.context("join a service task")?;
                if let Err(e) = result {
                    tracing::error!(service = name, "service failed: {e:#}");
                    first_error.get_or_insert(e.context(format!("{name} failed")));
                    registry_stop.cancel();
                    broker_stop.cancel();
                    others_stop.cancel();
                }
                if name == "registry" {
                    // The registry has stopped: now the broker may stop and flush.
                    if !signal.is_cancelled() && first_error.is_none() {
                        first_error = Some(anyhow::anyhow!("registry stopped unexpectedly"));
                    }
                    broker_stop.cancel();
                } else if name == "broker" {
                    broker_done = true;
                    // The broker has flushed: now the services it flushed to may stop.
                    others_stop.cancel();
                } else if !broker_done && !signal.is_cancelled() && first_error.is_none() {
                    first_error = Some(anyhow::anyhow!("{name} stopped unexpectedly"));
                    registry_stop.cancel();
                    broker_stop.cancel();
                }
            }
        }
    }
    drop(locks);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
