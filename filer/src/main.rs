//! `kelp-filer`: parses flags and runs the filer until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_filer::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let listen = cfg.listen.clone();
    common::service::main(
        "filer",
        &listen.ip,
        listen.port,
        &listen.dir,
        |dir, listener, shutdown| {
            let mut cfg = cfg;
            cfg.listen.dir = dir;
            kelp_filer::run(cfg, listener, shutdown)
        },
    )
}
