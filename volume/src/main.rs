//! `kelp-volume`: parses flags and runs the volume until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_volume::Config;

fn main() -> anyhow::Result<()> {
    common::service::main_with_config(
        "volume",
        Config::parse(),
        |c| &mut c.listen,
        |c| &c.security,
        kelp_volume::run,
    )
}
