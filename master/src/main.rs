//! `kelp-master`: parses flags and runs the master until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_master::Config;

fn main() -> anyhow::Result<()> {
    common::service::main_with_config(
        "master",
        Config::parse(),
        |c| &mut c.listen,
        |c| &c.security,
        kelp_master::run,
    )
}
