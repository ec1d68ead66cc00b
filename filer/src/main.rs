//! `kelp-filer`: parses flags and runs the filer until SIGTERM/SIGINT (see `common::service::main`).

use clap::Parser;
use kelp_filer::Config;

fn main() -> anyhow::Result<()> {
    common::service::main_with_config(
        "filer",
        Config::parse(),
        |c| &mut c.listen,
        |c| &c.security,
        kelp_filer::run,
    )
}
