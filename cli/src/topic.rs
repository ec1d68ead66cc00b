//! `kelp topic create|list|describe|locate`, `kelp pub` and `kelp sub`.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use common::api::broker::{Acks, CommitOffsetRequest, FetchQuery, PublishRecord, PublishRequest};
use common::api::filer::ListQuery;
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use common::client::filer::FilerClient;
use common::client::master::MasterClient;
use common::ids::FileId;
use tokio::io::AsyncBufReadExt;

/// Where the services are.
#[derive(Debug, Args)]
pub struct Endpoints {
    /// The broker.
    #[arg(
        long,
        env = "KELP_BROKER",
        default_value = "127.0.0.1:17777",
        global = true
    )]
    broker: String,
    /// The filer (for `locate`).
    #[arg(
        long,
        env = "KELP_FILER",
        default_value = "127.0.0.1:8888",
        global = true
    )]
    filer: String,
    /// The master, or several comma-separated (for `locate`).
    #[arg(
        long,
        env = "KELP_MASTER",
        default_value = "127.0.0.1:9333",
        global = true
    )]
    master: String,
}

/// Topic commands.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// `namespace/name`.
        topic: String,
        /// Number of partitions.
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
    },
    /// List topics.
    List,
    /// Show a topic's partitions and offsets.
    Describe {
        /// `namespace/name`.
        topic: String,
    },
    /// Find where an offset is stored: segment, fid, volume server and the flush's trace id.
    Locate {
        /// `namespace/name`.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
    },
}

/// Ack mode of `kelp pub`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AckMode {
    /// Answered once fsynced on a volume and committed in the filer.
    Durable,
    /// Answered once in the broker's memory.
    Buffered,
}

impl From<AckMode> for Acks {
    fn from(a: AckMode) -> Self {
        match a {
            AckMode::Durable => Acks::Durable,
            AckMode::Buffered => Acks::Buffered,
        }
    }
}

/// Arguments of `kelp pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// `namespace/name`.
    topic: String,
    /// Values to publish; read from stdin, one per line, when none are given.
    values: Vec<String>,
    /// Key (its hash picks the partition).
    #[arg(short, long)]
    key: Option<String>,
    /// Partition (overrides the key).
    #[arg(short, long)]
    partition: Option<u32>,
    /// Ack mode.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AckMode,
}

/// Arguments of `kelp sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// `namespace/name`.
    topic: String,
    /// Partition.
    #[arg(short, long, default_value_t = 0)]
    partition: u32,
    /// Start offset (default: the group's committed offset, else 0).
    #[arg(short, long)]
    offset: Option<u64>,
    /// Consumer group: start from its committed offset and commit as records are printed.
    #[arg(short, long)]
    group: Option<String>,
    /// Keep waiting for new records.
    #[arg(short, long)]
    follow: bool,
}

fn split_topic(t: &str) -> anyhow::Result<(&str, &str)> {
    t.split_once('/')
        .filter(|(n, t)| !n.is_empty() && !t.is_empty() && !t.contains('/'))
        .with_context(|| format!("topic {t:?} must be namespace/name"))
}

fn broker(http: &HttpClient, e: &Endpoints) -> BrokerClient {
    BrokerClient::new(http.clone(), &e.broker)
}

/// Runs a topic command.
pub async fn topic(http: HttpClient, a: TopicArgs) -> anyhow::Result<()> {
    let b = broker(&http, &a.endpoints);
    match a.command {
        TopicCommand::Create { topic, partitions } => {
            let (ns, name) = split_topic(&topic)?;
            let info = b
                .create_topic(ns, name, partitions)
                .await
                .context("create topic")?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        TopicCommand::List => {
            let list = b.list_topics().await.context("list topics")?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        TopicCommand::Describe { topic } => {
            let (ns, name) = split_topic(&topic)?;
            let info = b.get_topic(ns, name).await.context("describe topic")?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        TopicCommand::Locate {
            topic,
            partition,
            offset,
        } => {
            let (ns, name) = split_topic(&topic)?;
            locate(&http, &a.endpoints, ns, name, partition, offset).await?;
        }
    }
    Ok(())
}

async fn locate(
    http: &HttpClient,
    e: &Endpoints,
    ns: &str,
    name: &str,
    partition: u32,
    offset: u64,
) -> anyhow::Result<()> {
    let filer = FilerClient::new(http.clone(), &e.filer);
    let dir = format!("/topics/{ns}/{name}/p{partition:04}");
    let list = filer
        .list(&ListQuery {
            dir: dir.clone(),
            start: Some(format!("{offset:020}.seg")),
            inclusive: true,
            limit: Some(1),
            reverse: true,
        })
        .await
        .context("list segments")?;
    let seg = list
        .entries
        .into_iter()
        .find(|s| s.full_path.ends_with(".seg"))
        .with_context(|| {
            format!(
                "offset {offset} of {ns}/{name}/{partition} is in no flushed segment under {dir}"
            )
        })?;
    let max: Option<u64> = seg.extended.get("offset_max").and_then(|v| v.parse().ok());
    anyhow::ensure!(
        max.is_some_and(|m| offset <= m),
        "offset {offset} is not durable yet (the last segment ends at {})",
        max.map_or("?".to_owned(), |m| m.to_string())
    );
    println!("segment   {}", seg.full_path);
    println!(
        "offsets   {}..={} ({} records)",
        seg.extended.get("offset_min").map_or("?", String::as_str),
        seg.extended.get("offset_max").map_or("?", String::as_str),
        seg.extended.get("record_count").map_or("?", String::as_str)
    );
    let master = MasterClient::new(http.clone(), &e.master);
    for chunk in &seg.chunks {
        println!("fid       {} ({} bytes)", chunk.fid, chunk.size);
        let servers = match chunk.fid.parse::<FileId>() {
            Ok(fid) => match master.lookup(fid.volume_id).await {
                Ok(locs) => locs
                    .into_iter()
                    .map(|l| l.url)
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("lookup failed: {e}"),
            },
            Err(e) => format!("bad fid: {e}"),
        };
        println!("volume    {servers}");
    }
    println!(
        "trace_id  {}",
        seg.extended
            .get("trace_id")
            .map_or("(not traced)", String::as_str)
    );
    Ok(())
}

/// Publishes values from the arguments or stdin lines.
pub async fn publish(http: HttpClient, a: PubArgs) -> anyhow::Result<()> {
    let (ns, name) = split_topic(&a.topic)?;
    let b = broker(&http, &a.endpoints);
    let mut values = a.values;
    if values.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("read stdin")? {
            values.push(line);
        }
    }
    for chunk in values.chunks(1000) {
        let req = PublishRequest {
            records: chunk
                .iter()
                .map(|v| PublishRecord {
                    key: a.key.as_deref().map(Cow::Borrowed),
                    value: Some(Cow::Borrowed(v.as_str())),
                    partition: a.partition,
                    ..Default::default()
                })
                .collect(),
        };
        let resp = b
            .publish(ns, name, &req, a.acks.into())
            .await
            .context("publish")?;
        for o in resp.offsets {
            println!(
                "{}/{} partition {} offset {}",
                ns, name, o.partition, o.offset
            );
        }
    }
    Ok(())
}

/// Prints records from an offset or a group's committed offset, optionally following.
pub async fn subscribe(http: HttpClient, a: SubArgs) -> anyhow::Result<()> {
    let (ns, name) = split_topic(&a.topic)?;
    let b = broker(&http, &a.endpoints);
    let mut offset = match (a.offset, &a.group) {
        (Some(o), _) => o,
        (None, Some(g)) => b
            .group_offsets(g, &a.topic)
            .await
            .context("read group offsets")?
            .offsets
            .iter()
            .find(|o| o.partition == a.partition)
            .map_or(0, |o| o.offset),
        (None, None) => 0,
    };
    loop {
        let q = FetchQuery {
            offset,
            limit: Some(1000),
            max_bytes: None,
            wait_ms: a.follow.then_some(10_000),
            isolation: None,
            redirected: false,
        };
        let resp = b.fetch(ns, name, a.partition, &q).await.context("fetch")?;
        for r in &resp.records {
            let value = r.value.as_deref().or(r.value_b64.as_deref()).unwrap_or("");
            println!("{}\t{value}", r.offset);
        }
        if resp.next_offset != offset {
            offset = resp.next_offset;
            if let Some(g) = &a.group {
                let req = CommitOffsetRequest {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    offset,
                    reset: false,
                };
                b.commit_offset(g, &req)
                    .await
                    .context("commit group offset")?;
            }
        }
        if !a.follow && (resp.records.is_empty() || offset >= resp.durable_offset) {
            return Ok(());
        }
        if resp.records.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
