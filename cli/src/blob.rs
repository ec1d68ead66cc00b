//! `kelp upload` and `kelp download`.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use common::api::master::AssignQuery;
use common::client::HttpClient;
use common::client::volume::{BlobClient, WriteOptions};
use common::ids::FileId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments of `kelp upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// File to upload, or `-` for stdin.
    file: PathBuf,
    /// The master, or several masters comma-separated (the client follows their leader).
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    master: String,
    /// Collection.
    #[arg(long, default_value = "")]
    collection: String,
    /// Replication, e.g. 001.
    #[arg(long)]
    replication: Option<String>,
    /// Write to the volume server's `publicUrl` rather than its internal `url` (from outside
    /// the cluster's network, e.g. the host of a compose deployment).
    #[arg(long, env = "KELP_USE_PUBLIC_URL")]
    use_public_url: bool,
}

/// Arguments of `kelp download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// File id, e.g. 3,01637037d6.
    fid: String,
    /// Write here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The master, or several masters comma-separated (the client follows their leader).
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    master: String,
    /// Read from the volume servers' `publicUrl` rather than their internal `url`.
    #[arg(long, env = "KELP_USE_PUBLIC_URL")]
    use_public_url: bool,
}

/// Uploads a file and prints its fid.
pub async fn upload(http: HttpClient, a: UploadArgs) -> anyhow::Result<()> {
    let (data, name) = if a.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .context("read stdin")?;
        (buf, None)
    } else {
        let data = tokio::fs::read(&a.file)
            .await
            .with_context(|| format!("read {}", a.file.display()))?;
        (
            data,
            a.file.file_name().map(|n| n.to_string_lossy().into_owned()),
        )
    };
    let client = BlobClient::new(http, &a.master).use_public_urls(a.use_public_url);
    let q = AssignQuery {
        collection: Some(a.collection).filter(|c| !c.is_empty()),
        replication: a.replication,
        ..Default::default()
    };
    let w = client
        .upload(
            &q,
            Bytes::from(data),
            &WriteOptions {
                name,
                ..Default::default()
            },
        )
        .await
        .context("upload")?;
    println!("{}", w.fid);
    Ok(())
}

/// Downloads a blob to stdout or a file.
pub async fn download(http: HttpClient, a: DownloadArgs) -> anyhow::Result<()> {
    let fid: FileId = a.fid.parse()?;
    let client = BlobClient::new(http, &a.master).use_public_urls(a.use_public_url);
    let data = client
        .download(&fid)
        .await
        .with_context(|| format!("download {fid}"))?;
    match a.output {
        Some(path) => common::fs::durable_overwrite(&path, &data)
            .with_context(|| format!("write {}", path.display()))?,
        None => tokio::io::stdout()
            .write_all(&data)
            .await
            .context("write stdout")?,
    }
    Ok(())
}
