//! The `main` every service binary shares: telemetry before the runtime, data-dir lock, bind,
//! `addrs.json`, signal handling, run, telemetry flush after the runtime.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs one service process: `run(absolute data dir, listener, shutdown token)`. `tls_ca` is
/// the service's `--tls-ca`, which the OTLP exporter trusts too (see [`crate::telemetry`]).
pub fn main<F, Fut>(
    service: &'static str,
    ip: &str,
    port: u16,
    dir: &Path,
    tls_ca: Option<&Path>,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(PathBuf, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = crate::telemetry::init(service, tls_ca)?;
    let runtime = tokio::runtime::Runtime::new().context("start the tokio runtime")?;
    let result = runtime.block_on(async move {
        let (dir, _lock) = crate::config::open_data_dir(service, dir)?;
        let listener = TcpListener::bind((ip, port))
            .await
            .with_context(|| format!("bind {ip}:{port}"))?;
        crate::http::write_addrs_file(&dir, listener.local_addr()?).context("write addrs.json")?;
        let shutdown = crate::shutdown::signal_token()?;
        run(dir, listener, shutdown).await
    });
    drop(runtime);
    if let Err(e) = &result {
        tracing::error!(service, "failed to run: {e:#}");
    }
    telemetry.shutdown();
    result
}

/// [`main`] for a service whose `Config` carries the shared [`crate::config::ListenFlags`]
/// (reached through `listen`) and [`crate::security::SecurityFlags`] (through `security`):
/// binds `--ip:--port`, locks `--dir`, and runs `run` with the configuration whose `--dir` is
/// made absolute.
pub fn main_with_config<C, F, Fut>(
    service: &'static str,
    mut cfg: C,
    listen: fn(&mut C) -> &mut crate::config::ListenFlags,
    security: fn(&C) -> &crate::security::SecurityFlags,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let flags = listen(&mut cfg).clone();
    let tls_ca = security(&cfg).tls_ca.clone();
    main(
        service,
        &flags.ip,
        flags.port,
        &flags.dir,
        tls_ca.as_deref(),
        move |dir, listener, shutdown| {
            listen(&mut cfg).dir = dir;
            run(cfg, listener, shutdown)
        },
    )
}
