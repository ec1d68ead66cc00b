//! `kelp bench blob`: N writes (assign + upload, as SeaweedFS's benchmark does) then N random
//! reads of S-byte blobs at concurrency C, printing req/s, MB/s and latency percentiles; and
//! `kelp bench filer` (small-file create then read through the filer), and
//! `kelp bench bare-server`, an axum server that answers the same routes without any I/O, to
//! measure the ceiling of this machine with the same client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::get;
use bytes::Bytes;
use clap::{Args, Subcommand};
use common::api::broker::{PublishResponse, RecordOffset, TopicInfo, decode_batch};
use common::api::master::{AssignQuery, AssignResponse, Location, LookupResponse};
use common::api::volume::UploadResponse;
use common::client::filer::FilerClient;
use common::client::volume::BlobClient;
use common::client::{Call, HttpClient, base_url};
use common::ids::FileId;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Blob writes then random reads against a master and its volume servers.
    Blob(BlobArgs),
    /// Publish throughput and ack latency, then consumption from flushed segments.
    Pub(crate::bench_pub::PubArgs),
    /// Small-file create then read through the filer.
    Filer(FilerArgs),
    /// Serve the blob and publish routes from memory with no I/O: the ceiling for `bench
    /// blob` and `bench pub --no-fetch`.
    BareServer(BareArgs),
    /// Produce then consume through a Kafka listener with librdkafka.
    Kafka(crate::bench_kafka::KafkaArgs),
    /// Publish single messages to NATS JetStream: the peer of `pub --batch 1`.
    Nats(crate::bench_nats::NatsArgs),
}

/// Arguments of `kelp bench blob`.
#[derive(Debug, Args)]
pub struct BlobArgs {
    /// The master (or a bare server).
    #[arg(long, env = "KELP_MASTER", default_value = "127.0.0.1:9333")]
    master: String,
    /// Number of blobs.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    count: usize,
    /// Blob size in bytes.
    #[arg(short, long, default_value_t = 1024)]
    size: usize,
    /// Concurrent requests.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Ask the volume server to fsync each write (`?fsync=true`): the default. Kelp fsyncs
    /// unless told otherwise, SeaweedFS only when asked, so the flag is always sent.
    #[arg(long, conflicts_with = "no_fsync")]
    fsync: bool,
    /// Ask the volume server not to fsync (`?fsync=false`, throwaway data; SeaweedFS's
    /// default).
    #[arg(long)]
    no_fsync: bool,
    /// Collection to write to.
    #[arg(long, default_value = "bench")]
    collection: String,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `kelp bench filer`.
#[derive(Debug, Args)]
pub struct FilerArgs {
    /// The filer.
    #[arg(long, env = "KELP_FILER", default_value = "127.0.0.1:8888")]
    filer: String,
    /// Number of files.
    #[arg(short = 'n', long, default_value_t = 5_000)]
    count: usize,
    /// File size in bytes.
    #[arg(short, long, default_value_t = 1024)]
    size: usize,
    /// Concurrent requests.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Directory to create the files in.
    #[arg(long, default_value = "/bench")]
    dir: String,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `kelp bench bare-server`.
#[derive(Debug, Args)]
pub struct BareArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Size of the blob GET answers with.
    #[arg(short, long, default_value_t = 1024)]
    size: usize,
}

/// Runs a benchmark command.
pub async fn run(http: HttpClient, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Blob(a) => blob(http.with_attempts(1), a).await,
        BenchCommand::Pub(a) => crate::bench_pub::run(http.with_attempts(1), a).await,
        BenchCommand::Filer(a) => filer(http.with_attempts(1), a).await,
        BenchCommand::BareServer(a) => bare_server(a).await,
        BenchCommand::Kafka(a) => crate::bench_kafka::run(a).await,
        BenchCommand::Nats(a) => crate::bench_nats::run(a).await,
    }
}

/// What one benchmark phase measured.
pub(crate) struct Phase {
    name: &'static str,
    hist: Histogram<u64>,
    /// Wall time of the phase.
    pub(crate) elapsed: Duration,
    /// Operations that succeeded.
    pub(crate) ok: usize,
    /// Operations that failed.
    pub(crate) errors: usize,
    /// Bytes the operations moved.
    pub(crate) bytes: u64,
}

impl Phase {
    pub(crate) fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<6} {:>8} ok {:>5} err in {:>7.2}s: {:>10.0} req/s {:>8.2} MB/s  latency p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.name,
            self.ok,
            self.errors,
            secs,
            self.ok as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            us(0.5),
            us(0.99),
            self.hist.max() as f64 / 1000.0,
        );
    }
}

/// Runs `count` operations at `concurrency`, op `i` being `op(i)`, with a progress bar.
pub(crate) async fn drive<F, Fut>(
    name: &'static str,
    count: usize,
    concurrency: usize,
    quiet: bool,
    op: F,
) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).expect("valid histogram"),
    ));
    let errors = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(count as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>6} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next, done, hist, errors, bytes) = (
            op.clone(),
            next.clone(),
            done.clone(),
            hist.clone(),
            errors.clone(),
            bytes.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("valid histogram");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(n) => {
                        let _ = local.record(t.elapsed().as_micros() as u64);
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("{name} {i} failed: {e:#}");
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            hist.lock()
                .expect("histogram lock")
                .add(&local)
                .expect("same bounds");
        }));
    }
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let errors = errors.load(Ordering::Relaxed);
    let hist = hist.lock().expect("histogram lock").clone();
    Phase {
        name,
        hist,
        elapsed,
        ok: count - errors,
        errors,
        bytes: bytes.load(Ordering::Relaxed),
    }
}

async fn blob(http: HttpClient, a: BlobArgs) -> anyhow::Result<()> {
    let client = Arc::new(BlobClient::new(http.clone(), &a.master));
    let payload = Bytes::from((0..a.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let fids: Arc<Vec<Mutex<Option<FileId>>>> =
        Arc::new((0..a.count).map(|_| Mutex::new(None)).collect());
    let assign = Arc::new(AssignQuery {
        collection: Some(a.collection.clone()).filter(|c| !c.is_empty()),
        ..Default::default()
    });
    let fsync = !a.no_fsync;
    println!(
        "kelp bench blob: {} blobs of {} B, concurrency {}, fsync {}, master {}",
        a.count,
        a.size,
        a.concurrency,
        if a.no_fsync { "off" } else { "on" },
        a.master
    );
    let write = {
        let (client, fids, payload) = (client.clone(), fids.clone(), payload.clone());
        drive("write", a.count, a.concurrency, a.quiet, move |i| {
            let (http, client, fids, payload, assign) = (
                http.clone(),
                client.clone(),
                fids.clone(),
                payload.clone(),
                assign.clone(),
            );
            async move {
                let (fid, size) = upload(&http, &client, &assign, payload, fsync).await?;
                *fids[i].lock().expect("fid slot") = Some(fid);
                Ok(size)
            }
        })
        .await
    };
    write.print();
    let written: Arc<Vec<FileId>> = Arc::new(
        fids.iter()
            .filter_map(|f| *f.lock().expect("fid slot"))
            .collect(),
    );
    anyhow::ensure!(!written.is_empty(), "no blob was written");
    let expected = payload.len();
    let read = drive("read", a.count, a.concurrency, a.quiet, move |_| {
        let (client, written) = (client.clone(), written.clone());
        async move {
            let fid = written[rand::rng().random_range(0..written.len())];
            let data = client.download(&fid).await?;
            anyhow::ensure!(
                data.len() == expected,
                "{fid} read {} bytes, wrote {expected}",
                data.len()
            );
            Ok(data.len() as u64)
        }
    })
    .await;
    read.print();
    anyhow::ensure!(
        write.errors == 0 && read.errors == 0,
        "{} writes and {} reads failed",
        write.errors,
        read.errors
    );
    Ok(())
}

/// Assigns a fid and uploads `data` there as SeaweedFS's volume server accepts it too: a raw
/// body typed `application/octet-stream` (SeaweedFS refuses an untyped POST body as not
/// multipart) and `fsync` always explicit (SeaweedFS fsyncs only on `?fsync=true`, Kelp
/// unless `?fsync=false`). Answers the fid and the size stored.
async fn upload(
    http: &HttpClient,
    client: &BlobClient,
    assign: &AssignQuery,
    data: Bytes,
    fsync: bool,
) -> anyhow::Result<(FileId, u64)> {
    let a = client.master.assign(assign).await?;
    let fid: FileId = a
        .fid
        .parse()
        .with_context(|| format!("assigned fid {:?}", a.fid))?;
    let mut call = Call::new(
        Method::POST,
        format!("{}/{fid}?fsync={fsync}", base_url(&a.url)),
        "POST /{fid}",
    )
    .body(data)
    .idempotent(true);
    call.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // The fid token the assign handed out, when the cluster signs them (SeaweedFS's shape).
    if let Some(auth) = a.auth.as_deref() {
        call.headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("BEARER {auth}")).context("the assign's token")?,
        );
    }
    let resp: UploadResponse = http.json(call).await?;
    Ok((fid, resp.size))
}

async fn filer(http: HttpClient, a: FilerArgs) -> anyhow::Result<()> {
    let f = Arc::new(FilerClient::new(http, &a.filer));
    let payload = Bytes::from((0..a.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let run = format!("{}/{}", a.dir.trim_end_matches('/'), std::process::id());
    println!(
        "kelp bench filer: {} files of {} B, concurrency {}, under {run} on {}",
        a.count, a.size, a.concurrency, a.filer
    );
    let create = {
        let (f, payload, run) = (f.clone(), payload.clone(), run.clone());
        drive("create", a.count, a.concurrency, a.quiet, move |i| {
            let (f, payload, path) = (f.clone(), payload.clone(), format!("{run}/f{i:08}"));
            async move { Ok(f.put_file(&path, payload).await?.size) }
        })
        .await
    };
    create.print();
    let (count, expected) = (a.count, payload.len());
    let read = drive("read", a.count, a.concurrency, a.quiet, move |_| {
        let (f, path) = (
            f.clone(),
            format!("{run}/f{:08}", rand::rng().random_range(0..count)),
        );
        async move {
            let data = f.get_file(&path).await?;
            anyhow::ensure!(
                data.len() == expected,
                "{path} read {} bytes, wrote {expected}",
                data.len()
            );
            Ok(data.len() as u64)
        }
    })
    .await;
    read.print();
    anyhow::ensure!(
        create.errors == 0 && read.errors == 0,
        "{} creates and {} reads failed",
        create.errors,
        read.errors
    );
    Ok(())
}

#[derive(Clone)]
struct Bare {
    addr: String,
    next: Arc<AtomicU64>,
    blob: Bytes,
}

async fn bare_server(a: BareArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .context("bind")?;
    let addr = listener.local_addr()?.to_string();
    let state = Bare {
        addr: addr.clone(),
        next: Arc::new(AtomicU64::new(1)),
        blob: Bytes::from(vec![7u8; a.size]),
    };
    let app = Router::new()
        .route("/dir/assign", get(bare_assign).post(bare_assign))
        .route("/dir/lookup", get(bare_lookup))
        .route("/{fid}", get(bare_get).post(bare_put).put(bare_put))
        .route(
            "/topics/{ns}/{topic}",
            axum::routing::post(bare_create_topic),
        )
        .route(
            "/topics/{ns}/{topic}/publish",
            axum::routing::post(bare_publish),
        )
        .with_state(state);
    println!("{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serve")
}

async fn bare_assign(State(s): State<Bare>) -> axum::Json<AssignResponse> {
    let key = s.next.fetch_add(1, Ordering::Relaxed);
    axum::Json(AssignResponse {
        fid: FileId::new(1, key, 0x1234_5678).to_string(),
        url: s.addr.clone(),
        public_url: s.addr.clone(),
        count: 1,
        auth: None,
    })
}

async fn bare_lookup(State(s): State<Bare>) -> axum::Json<LookupResponse> {
    axum::Json(LookupResponse {
        volume_or_file_id: "1".into(),
        locations: vec![Location {
            url: s.addr.clone(),
            public_url: s.addr,
        }],
        jwt: None,
        auth: None,
    })
}

async fn bare_put(
    Path(_fid): Path<String>,
    body: Bytes,
) -> (StatusCode, axum::Json<UploadResponse>) {
    (
        StatusCode::CREATED,
        axum::Json(UploadResponse {
            name: String::new(),
            size: body.len() as u64,
            etag: "00000000".into(),
            mime: String::new(),
        }),
    )
}

async fn bare_get(State(s): State<Bare>, Path(_fid): Path<String>) -> Bytes {
    s.blob
}

/// `POST /topics/{ns}/{topic}`: a topic with no partitions to report.
async fn bare_create_topic(Path((ns, topic)): Path<(String, String)>) -> axum::Json<TopicInfo> {
    axum::Json(TopicInfo {
        namespace: ns,
        name: topic,
        partitions: Vec::new(),
    })
}

/// `POST /topics/{ns}/{topic}/publish`: decodes the batch (as the broker does) and answers
/// made-up offsets, with no I/O: the ceiling of `kelp bench pub --no-fetch`.
async fn bare_publish(
    State(s): State<Bare>,
    body: Bytes,
) -> Result<axum::Json<PublishResponse>, StatusCode> {
    let records = decode_batch(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let first = s.next.fetch_add(records.len() as u64, Ordering::Relaxed);
    let offsets = records
        .iter()
        .enumerate()
        .map(|(i, r)| RecordOffset {
            partition: r.partition.unwrap_or(0),
            offset: first + i as u64,
        })
        .collect();
    Ok(axum::Json(PublishResponse { offsets }))
}
