//! `kelp-master`: parses flags and runs the master until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_master::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let listen = cfg.listen.clone();
    common::service::main(
        "master",
        &listen.ip,
        listen.port,
        &listen.dir,
        |dir, listener, shutdown| {
            let mut cfg = cfg;
            cfg.listen.dir = dir;
            kelp_master::run(cfg, listener, shutdown)
        },
    )
}
