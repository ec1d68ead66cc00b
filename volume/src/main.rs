//! `kelp-volume`: parses flags and runs the volume until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_volume::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let (ip, port, dir) = (cfg.ip.to_string(), cfg.port, cfg.dir.clone());
    common::service::main("volume", &ip, port, &dir, |dir, listener, shutdown| {
        kelp_volume::run(Config { dir, ..cfg }, listener, shutdown)
    })
}
