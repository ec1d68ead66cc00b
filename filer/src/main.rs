//! `kelp-filer`: parses flags and runs the filer until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_filer::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let (ip, port, dir) = (cfg.ip.clone(), cfg.port, cfg.dir.clone());
    common::service::main("filer", &ip, port, &dir, |dir, listener, shutdown| {
        kelp_filer::run(Config { dir, ..cfg }, listener, shutdown)
    })
}
