//! `kelp-registry`: parses flags and runs the schema registry until SIGTERM/SIGINT (see
//! `common::service::main`).

use clap::Parser;
use kelp_registry::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let (ip, port, dir) = (cfg.ip.clone(), cfg.port, cfg.dir.clone());
    let ca = cfg.security.tls_ca.clone();
    common::service::main(
        "registry",
        &ip,
        port,
        &dir,
        ca.as_deref(),
        |dir, listener, shutdown| kelp_registry::run(Config { dir, ..cfg }, listener, shutdown),
    )
}
