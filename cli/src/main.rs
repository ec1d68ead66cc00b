//! `kelp`: the Kelp command line — the all-in-one server, client commands and benchmarks.
//!
//! # Layout
//! - `server`: `kelp server`, every service in one process.
//! - `cert`: `kelp cert`, development TLS files and credentials; the client commands' auth flags.
//! - `blob`: `kelp upload` and `kelp download`.
//! - `fs`: `kelp fs ls|put|get|rm|mv`.
//! - `topic`: `kelp topic create|list|describe|locate`, `kelp pub`, `kelp sub`.
//! - `bench`: `kelp bench blob|filer|pub`, the bare-handler ceiling server; `bench_kafka`
//!   (librdkafka) and `bench_nats` (JetStream, the single-record publish peer).

#![deny(missing_docs)]

mod bench;
mod bench_kafka;
mod bench_nats;
mod bench_pub;
mod blob;
mod cert;
mod fs;
mod server;
mod topic;

use std::time::Duration;

use clap::{Parser, Subcommand};
use common::client::HttpClient;

/// The Kelp command line.
#[derive(Debug, Parser)]
#[command(
    name = "kelp",
    version,
    about = "Kelp: a durable blob store and message queue"
)]
struct Cli {
    /// Credentials and CA for the client commands (given before the command).
    #[command(flatten)]
    auth: cert::ClientAuth,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process (data under ./data by default).
    Server(server::ServerArgs),
    /// Write a development CA, a certificate and credentials for a secured cluster.
    Cert(cert::CertArgs),
    /// Upload a file (or `-` for stdin) as a blob and print its file id.
    Upload(blob::UploadArgs),
    /// Download a blob by file id.
    Download(blob::DownloadArgs),
    /// Files in the filer's namespace.
    Fs(fs::FsArgs),
    /// Topics of the broker.
    Topic(topic::TopicArgs),
    /// Publish records (from arguments or stdin lines).
    Pub(topic::PubArgs),
    /// Read records from an offset or a consumer group's committed offset.
    Sub(topic::SubArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::main(args),
        Command::Cert(args) => cert::run(args),
        other => {
            let telemetry = common::telemetry::init("cli", cli.auth.tls_ca())?;
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(run_client(other, &cli.auth));
            drop(runtime);
            telemetry.shutdown();
            result
        }
    }
}

async fn run_client(cmd: Command, auth: &cert::ClientAuth) -> anyhow::Result<()> {
    let http = auth.apply(HttpClient::new(Duration::from_secs(60)))?;
    match cmd {
        Command::Server(_) | Command::Cert(_) => unreachable!("handled in main"),
        Command::Upload(a) => blob::upload(http, a).await,
        Command::Download(a) => blob::download(http, a).await,
        Command::Fs(a) => fs::run(http, a).await,
        Command::Topic(a) => topic::topic(http, a).await,
        Command::Pub(a) => topic::publish(http, a).await,
        Command::Sub(a) => topic::subscribe(http, a).await,
        Command::Bench(b) => bench::run(http, b).await,
    }
}
