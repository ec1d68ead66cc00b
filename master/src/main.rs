//! `kelp-master`: parses flags and runs the master until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_master::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let (ip, port, dir) = (cfg.ip.to_string(), cfg.port, cfg.dir.clone());
    common::service::main("master", &ip, port, &dir, |dir, listener, shutdown| {
        kelp_master::run(Config { dir, ..cfg }, listener, shutdown)
    })
}
