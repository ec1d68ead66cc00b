//! `kelp fs ls|put|get|rm|mv`: the filer's namespace from the command line.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use common::client::HttpClient;
use common::client::filer::FilerClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Filer commands.
#[derive(Debug, Args)]
pub struct FsArgs {
    /// The filer.
    #[arg(
        long,
        env = "KELP_FILER",
        default_value = "127.0.0.1:8888",
        global = true
    )]
    filer: String,
    #[command(subcommand)]
    command: FsCommand,
}

#[derive(Debug, Subcommand)]
enum FsCommand {
    /// List a directory.
    Ls {
        /// Directory.
        #[arg(default_value = "/")]
        dir: String,
        /// Entries per page.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Upload a local file (or `-` for stdin) to a path.
    Put {
        /// Local file or `-`.
        local: PathBuf,
        /// Destination path in the filer.
        path: String,
    },
    /// Download a file to stdout or a local file.
    Get {
        /// Path in the filer.
        path: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Delete a file or directory.
    Rm {
        /// Path in the filer.
        path: String,
        /// Delete a non-empty directory and everything under it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename a file or directory.
    Mv {
        /// Source path.
        src: String,
        /// Destination path.
        dst: String,
    },
}

/// Runs a filer command.
pub async fn run(http: HttpClient, a: FsArgs) -> anyhow::Result<()> {
    let f = FilerClient::new(http, &a.filer);
    match a.command {
        FsCommand::Ls { dir, limit } => {
            let mut last: Option<String> = None;
            loop {
                let page = f
                    .list_dir(&dir, last.as_deref(), limit)
                    .await
                    .with_context(|| format!("list {dir}"))?;
                for e in &page.entries {
                    let kind = if e.is_dir { "d" } else { "-" };
                    println!("{kind} {:>12} {}", e.size, e.full_path);
                }
                if !page.should_display_load_more {
                    break;
                }
                last = Some(page.last_file_name);
            }
        }
        FsCommand::Put { local, path } => {
            let data = if local.as_os_str() == "-" {
                let mut buf = Vec::new();
                tokio::io::stdin()
                    .read_to_end(&mut buf)
                    .await
                    .context("read stdin")?;
                buf
            } else {
                tokio::fs::read(&local)
                    .await
                    .with_context(|| format!("read {}", local.display()))?
            };
            let r = f
                .put_file(&path, Bytes::from(data))
                .await
                .with_context(|| format!("put {path}"))?;
            println!("{path} {} bytes", r.size);
        }
        FsCommand::Get { path, output } => {
            let data = f
                .get_file(&path)
                .await
                .with_context(|| format!("get {path}"))?;
            match output {
                Some(p) => common::fs::durable_overwrite(&p, &data)
                    .with_context(|| format!("write {}", p.display()))?,
                None => tokio::io::stdout()
                    .write_all(&data)
                    .await
                    .context("write stdout")?,
            }
        }
        FsCommand::Rm { path, recursive } => f
            .delete(&path, recursive)
            .await
            .with_context(|| format!("rm {path}"))?,
        FsCommand::Mv { src, dst } => f
            .rename(&src, &dst)
            .await
            .with_context(|| format!("mv {src} {dst}"))?,
    }
    Ok(())
}
