//! `kelp-volume`: parses flags and runs the volume until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_volume::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let listen = cfg.listen.clone();
    common::service::main(
        "volume",
        &listen.ip,
        listen.port,
        &listen.dir,
        |dir, listener, shutdown| {
            let mut cfg = cfg;
            cfg.listen.dir = dir;
            kelp_volume::run(cfg, listener, shutdown)
        },
    )
}
