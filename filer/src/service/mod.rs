//! Domain operations of the filer: the [`Filer`] state and the machinery every operation
//! shares (store calls on the blocking pool, synced commits, mutations that finish even when
//! their request goes away). The operations themselves live beside it, one file per pipeline:
//!
//! - `error`: the [`Error`] enum (status codes are mapped in `crate::http::error` only);
//! - `namespace`: lookups, listings, entry writes with preconditions, deletes, renames;
//! - `upload`: body → chunks on volumes → one committed entry, with its orphan guard;
//! - `read`: the streaming, verified read path.
//!
//! Every mutation runs its read-check-write under [`PathLocks`] inside a task spawned on the
//! filer's [`TaskTracker`], so a client that disconnects cannot cancel it half-way (and the
//! locks are held until the synced write returns). Store calls run on the blocking pool; the
//! write itself is inside a `rocksdb.write` span. The `#[instrument]` spans of these modules
//! are DEBUG-level on purpose: in production the `rocksdb.write` span is then a direct child
//! of the HTTP server span (`PUT /__meta/entry`), which is what trace assertions look for.
//!
//! # Panics
//! A panic is fatal (`STYLE.md` 18): a store call or mutation task that panics aborts the
//! process (`join_failed`) instead of answering 500 and serving on with path locks or store
//! state a half-run critical section left behind. The filer's locks are `tokio` locks, which
//! do not poison; the in-memory store's `std` mutex treats poisoning as the same fatal case.
//! Correctness never depends on it: everything acknowledged is already synced.

mod error;
mod namespace;
mod read;
mod upload;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use common::api::master::AssignQuery;
use common::client::HttpClient;
use common::client::volume::{BlobClient, WriteOptions};
use common::security::Security;
use tokio::sync::Notify;
use tokio::task::JoinError;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

pub use common::time::now_ms;
pub use error::Error;

use crate::config::Config;
use crate::locks::PathLocks;
use crate::metrics::Metrics;
use crate::path::{self, ROOT};
use crate::store::{Batch, MetaStore, Op};

/// Ops per batch of [`Filer::commit_independent`].
const INDEPENDENT_PIECE: usize = 64;

/// Default mode bits of directories the filer creates.
pub const DIR_MODE: u32 = 0o755;
/// Default mode bits of files.
pub const FILE_MODE: u32 = 0o644;

/// Upload settings derived from the config.
#[derive(Debug, Clone)]
struct UploadSettings {
    chunk_size: usize,
    max_upload: u64,
    concurrency: usize,
    assign: AssignQuery,
    write: WriteOptions,
}

/// The filer's domain state: the store, the path locks and the blob client.
pub struct Filer {
    store: Arc<dyn MetaStore>,
    locks: PathLocks,
    /// Serializes writers that make an entry reference a chunk, so two cannot both find it
    /// unowned (keys are fids; no fid contains `/`, so no ancestor is locked).
    chunk_locks: PathLocks,
    pub(crate) blobs: BlobClient,
    upload: UploadSettings,
    pub(crate) metrics: Metrics,
    pub(crate) gc_wake: Notify,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Filer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filer")
            .field("upload", &self.upload)
            .finish_non_exhaustive()
    }
}

/// The error for a spawned store call or mutation that did not finish: a panic aborts the
/// process (see the module doc); a cancelled task (only at runtime shutdown) is a 500.
fn join_failed(e: JoinError, what: &str) -> Error {
    if e.is_panic() {
        tracing::error!(task = what, "a filer task panicked, aborting: {e}");
        std::process::abort();
    }
    Error::Internal(anyhow::anyhow!("{what} task failed: {e}"))
}

pub(crate) fn check_path(p: &str) -> Result<(), Error> {
    path::validate(p).map_err(|e| Error::BadPath(e.to_string()))
}

/// Checks a path that is about to be written, moved or deleted (the root cannot be).
pub(crate) fn check_mutable(p: &str) -> Result<(), Error> {
    check_path(p)?;
    if p == ROOT {
        return Err(Error::BadPath(
            "the root directory cannot be written, moved or deleted".to_owned(),
        ));
    }
    Ok(())
}

impl Filer {
    /// Builds the filer on `store`, talking to the master named in `cfg`. Its calls carry
    /// the cluster token of `security`, and its chunk writes, reads and deletes the fid
    /// tokens it mints with `security`'s keys (when they are set).
    pub fn new(
        cfg: &Config,
        store: Arc<dyn MetaStore>,
        metrics: Metrics,
        security: Arc<Security>,
    ) -> anyhow::Result<Arc<Self>> {
        let http = security
            .apply(HttpClient::new(std::time::Duration::from_secs(60)))
            .context("build the filer's http client")?;
        let blobs = BlobClient::new(http, &cfg.master);
        let blobs = BlobClient {
            volumes: blobs.volumes.with_security(security),
            ..blobs
        };
        let upload = UploadSettings {
            chunk_size: usize::try_from(cfg.chunk_size()).unwrap_or(usize::MAX),
            max_upload: cfg.max_upload(),
            concurrency: cfg.upload_concurrency.max(1),
            assign: AssignQuery {
                count: None,
                collection: (!cfg.collection.is_empty()).then(|| cfg.collection.clone()),
                replication: Some(cfg.replication.clone()),
                ttl: None,
            },
            write: WriteOptions {
                no_fsync: !cfg.fsync,
                ..WriteOptions::default()
            },
        };
        Ok(Arc::new(Self {
            store,
            locks: PathLocks::new(),
            chunk_locks: PathLocks::new(),
            blobs,
            upload,
            metrics,
            gc_wake: Notify::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Largest upload accepted, in bytes.
    pub fn max_upload(&self) -> u64 {
        self.upload.max_upload
    }

    /// Mutations still running (for a bounded drain at shutdown).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Runs `f` against the store on the blocking pool, in the current span.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&dyn MetaStore) -> Result<T, Error> + Send + 'static,
    {
        let store = self.store.clone();
        let span = Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&*store)))
            .await
            .map_err(|e| join_failed(e, "metadata"))?
    }

    /// Writes a batch durably, inside a `rocksdb.write` span, and wakes the chunk collector
    /// when the batch queued deletions.
    pub(crate) async fn commit(&self, batch: Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let wake = batch.queues_deletions();
        let span = tracing::info_span!(
            "rocksdb.write",
            otel.name = "rocksdb.write",
            entries = batch.len()
        );
        let store = self.store.clone();
        let hist = self.metrics.rocksdb_write_seconds.clone();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let started = Instant::now();
            let result = store.write(&batch);
            hist.observe(started.elapsed().as_secs_f64());
            result
        })
        .await
        .map_err(|e| join_failed(e, "metadata write"))??;
        if wake {
            self.gc_wake.notify_one();
        }
        Ok(())
    }

    /// Writes independent ops (queued deletions, dequeues: none depends on another) in
    /// batches of at most 64, so a long list fits a store's transaction limit (etcd's); each
    /// batch is atomic and durable, the list as a whole is not.
    pub(crate) async fn commit_independent(&self, ops: Vec<Op>) -> Result<(), Error> {
        for piece in ops.chunks(INDEPENDENT_PIECE) {
            self.commit(Batch {
                ops: piece.to_vec(),
                guards: Vec::new(),
            })
            .await?;
        }
        Ok(())
    }

    /// Runs a mutation to completion even if the caller goes away.
    pub(crate) async fn critical<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fut = f(self.clone()).in_current_span();
        self.tasks
            .spawn(fut)
            .await
            .map_err(|e| join_failed(e, "mutation"))?
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), Error> {
        self.read(|s| Ok(s.check()?)).await
    }
}
