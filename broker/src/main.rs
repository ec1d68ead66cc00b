//! `kelp-broker`: parses flags and runs the broker until SIGTERM/SIGINT (see
//! `common::service::main`); on SIGTERM it flushes everything buffered before exiting.

use clap::Parser;
use kelp_broker::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let (ip, port, dir) = (cfg.ip.clone(), cfg.port, cfg.dir.clone());
    let ca = cfg.security.tls_ca.clone();
    common::service::main(
        "broker",
        &ip,
        port,
        &dir,
        ca.as_deref(),
        |dir, listener, shutdown| kelp_broker::run(Config { dir, ..cfg }, listener, shutdown),
    )
}
