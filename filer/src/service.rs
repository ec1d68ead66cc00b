//! Domain operations of the filer: path checks, entry writes with preconditions, uploads
//! split into chunks, ranged reads, deletes and renames.
//!
//! Every mutation runs its read-check-write under [`PathLocks`] inside a task spawned on the
//! filer's [`TaskTracker`], so a client that disconnects cannot cancel it half-way (and the
//! locks are held until the synced write returns). Store calls run on the blocking pool; the
//! write itself is inside a `rocksdb.write` span. The `#[instrument]` spans of this module are
//! DEBUG-level on purpose: in production the `rocksdb.write` span is then a direct child of the
//! HTTP server span (`PUT /__meta/entry`), which is what trace assertions look for.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::api::filer::{Chunk, Entry, Expect, FileUploadResponse, ParentExpect, PutEntryRequest};
use common::api::master::AssignQuery;
use common::client::volume::{BlobClient, WriteOptions, unquote_etag};
use common::client::{ClientError, HttpClient};
use common::ids::FileId;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

use crate::chunks::{self, Chunker, Piece};
use crate::config::Config;
use crate::locks::PathLocks;
use crate::metrics::Metrics;
use crate::path::{self, ROOT};
use crate::store::{self, Batch, ListOpts, MetaStore, Op, Page, PendingDeletion, StoreError};

/// Default mode bits of directories the filer creates.
pub const DIR_MODE: u32 = 0o755;
/// Default mode bits of files.
pub const FILE_MODE: u32 = 0o644;
/// Zeros of a sparse region are served in pieces of at most this size.
const ZERO_PIECE: u64 = 1 << 20;
/// Chunks prefetched while streaming a file.
const READ_AHEAD: usize = 2;

/// Why a filer operation failed; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path breaks the path rules (400 `bad_path`).
    #[error("{0}")]
    BadPath(String),
    /// The entry is malformed (400 `bad_entry`).
    #[error("{0}")]
    BadEntry(String),
    /// The request body could not be read (400 `bad_body`).
    #[error("read the request body: {0}")]
    BadBody(String),
    /// Nothing at this path (404).
    #[error("no entry at {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A file operation hit a directory (409).
    #[error("{path} is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// A directory was needed but a file is there (409).
    #[error("{path} is a file, not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// The destination already exists (409).
    #[error("{path} already exists")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A non-recursive delete of a non-empty directory (409).
    #[error("directory {path} is not empty (use recursive=true)")]
    DirNotEmpty {
        /// The path.
        path: String,
    },
    /// An `expect` precondition did not hold (412).
    #[error("precondition failed on {path}: {message}")]
    PreconditionFailed {
        /// The path.
        path: String,
        /// What was expected and found.
        message: String,
    },
    /// A `parent_expect` fencing token did not hold (412 `fenced`).
    #[error("write to {path} is fenced: {message}")]
    Fenced {
        /// The path.
        path: String,
        /// What was expected and found.
        message: String,
    },
    /// The upload is over `--max-upload-mb` (413).
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Writing a chunk failed (503 when transient, else 500).
    #[error("write chunk at offset {offset} of {path}: {source}")]
    Upload {
        /// The file.
        path: String,
        /// The chunk's offset.
        offset: u64,
        /// The cause (boxed: it is large and errors are rare).
        source: Box<ClientError>,
    },
    /// Reading a chunk failed (503 when transient, else 500).
    #[error("read chunk {fid} of {path}: {reason}")]
    ChunkRead {
        /// The file.
        path: String,
        /// The chunk's fid.
        fid: String,
        /// What went wrong.
        reason: String,
        /// Whether retrying later may help.
        transient: bool,
        /// `Retry-After` hint.
        retry_after: Option<u64>,
    },
    /// The entry names a chunk another entry references, or one queued for deletion (409
    /// `chunk_in_use`; see [`crate::store`]).
    #[error("{0}")]
    ChunkInUse(StoreError),
    /// The metadata store failed (500).
    #[error("metadata store: {0}")]
    Store(StoreError),
    /// Anything else (500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ChunkInUse { .. } | StoreError::ChunkQueued { .. } => Self::ChunkInUse(e),
            other => Self::Store(other),
        }
    }
}

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn check_path(p: &str) -> Result<(), Error> {
    path::validate(p).map_err(|e| Error::BadPath(e.to_string()))
}

/// Checks a path that is about to be written, moved or deleted (the root cannot be).
fn check_mutable(p: &str) -> Result<(), Error> {
    check_path(p)?;
    if p == ROOT {
        return Err(Error::BadPath(
            "the root directory cannot be written, moved or deleted".to_owned(),
        ));
    }
    Ok(())
}

fn root_entry() -> Entry {
    Entry {
        full_path: ROOT.to_owned(),
        is_dir: true,
        mode: DIR_MODE,
        ..Entry::default()
    }
}

fn new_dir(p: &str, now: u64) -> Entry {
    Entry {
        full_path: p.to_owned(),
        is_dir: true,
        mode: DIR_MODE,
        mtime_ms: now,
        version: 1,
        ..Entry::default()
    }
}

/// Checks that `p`'s parent directory holds the fencing token.
fn check_fence(s: &dyn MetaStore, p: &str, fence: &ParentExpect) -> Result<(), Error> {
    let parent = path::split(p).0;
    let found = s
        .get(parent)?
        .and_then(|e| e.extended.get(&fence.key).cloned());
    if found.as_deref() == Some(fence.value.as_str()) {
        return Ok(());
    }
    Err(Error::Fenced {
        path: p.to_owned(),
        message: format!(
            "{parent} has {}={}, not {}",
            fence.key,
            found.as_deref().unwrap_or("(none)"),
            fence.value
        ),
    })
}

fn check_expect(p: &str, old: Option<&Entry>, expect: Option<Expect>) -> Result<(), Error> {
    let fail = |message: String| Error::PreconditionFailed {
        path: p.to_owned(),
        message,
    };
    match (expect, old) {
        (None, _) | (Some(Expect::Absent), None) => Ok(()),
        (Some(Expect::Absent), Some(e)) => Err(fail(format!(
            "expected absent, found version {}",
            e.version
        ))),
        (Some(Expect::Version(v)), Some(e)) if e.version == v => Ok(()),
        (Some(Expect::Version(v)), Some(e)) => Err(fail(format!(
            "expected version {v}, found version {}",
            e.version
        ))),
        (Some(Expect::Version(v)), None) => {
            Err(fail(format!("expected version {v}, found no entry")))
        }
    }
}

/// Adds the missing ancestors of `p` to `batch` as directories; fails if one is a file.
fn plan_parents(s: &dyn MetaStore, p: &str, now: u64, batch: &mut Batch) -> Result<(), Error> {
    for a in path::ancestors(p) {
        match s.get(a)? {
            None => batch.put(new_dir(a, now)),
            Some(e) if e.is_dir => {}
            Some(_) => return Err(Error::NotADirectory { path: a.to_owned() }),
        }
    }
    Ok(())
}

impl Filer {
    /// Builds the filer on `store`, talking to the master named in `cfg`.
    pub fn new(cfg: &Config, store: Arc<dyn MetaStore>, metrics: Metrics) -> Arc<Self> {
        let http = HttpClient::new(std::time::Duration::from_secs(60));
        let blobs = BlobClient::new(http, &cfg.master);
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
        Arc::new(Self {
            store,
            locks: PathLocks::new(),
            chunk_locks: PathLocks::new(),
            blobs,
            upload,
            metrics,
            gc_wake: Notify::new(),
            tasks: TaskTracker::new(),
        })
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
            .map_err(|e| Error::Internal(anyhow::anyhow!("metadata task failed: {e}")))?
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
        .map_err(|e| Error::Internal(anyhow::anyhow!("metadata write task failed: {e}")))??;
        if wake {
            self.gc_wake.notify_one();
        }
        Ok(())
    }

    /// Runs a mutation to completion even if the caller goes away.
    async fn critical<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fut = f(self.clone()).in_current_span();
        self.tasks
            .spawn(fut)
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("mutation task failed: {e}")))?
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), Error> {
        self.read(|s| Ok(s.check()?)).await
    }

    /// The entry at `p` (the root is a synthetic directory), or `None`.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p))]
    pub async fn lookup(&self, p: String) -> Result<Option<Entry>, Error> {
        check_path(&p)?;
        if p == ROOT {
            return Ok(Some(root_entry()));
        }
        self.read(move |s| Ok(s.get(&p)?)).await
    }

    /// The entry at `p`, or [`Error::NotFound`].
    pub async fn get_entry(&self, p: String) -> Result<Entry, Error> {
        let path = p.clone();
        self.lookup(p).await?.ok_or(Error::NotFound { path })
    }

    /// One page of `dir`'s children. A missing directory is an empty page when `missing_ok`,
    /// else [`Error::NotFound`].
    #[tracing::instrument(level = "debug", skip_all, fields(dir = %dir))]
    pub async fn list(&self, dir: String, opts: ListOpts, missing_ok: bool) -> Result<Page, Error> {
        check_path(&dir)?;
        self.read(move |s| {
            if dir != ROOT {
                match s.get(&dir)? {
                    None if missing_ok => return Ok(Page::default()),
                    None => return Err(Error::NotFound { path: dir }),
                    Some(e) if !e.is_dir => return Err(Error::NotADirectory { path: dir }),
                    Some(_) => {}
                }
            }
            Ok(s.list(&dir, &opts)?)
        })
        .await
    }

    /// Creates or replaces an entry as given (chunks kept exactly), creating parents.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %req.entry.full_path))]
    pub async fn put_entry(self: &Arc<Self>, req: PutEntryRequest) -> Result<Entry, Error> {
        let mut e = req.entry;
        check_mutable(&e.full_path)?;
        if e.is_dir && !e.chunks.is_empty() {
            return Err(Error::BadEntry(format!(
                "directory {} cannot have chunks",
                e.full_path
            )));
        }
        if e.size == 0 {
            e.size = chunks::chunks_end(&e.chunks);
        }
        // Holes read as zeros, so without this bound one small request could declare a file
        // of 2^64 bytes that every GET would then stream.
        if e.size > self.upload.max_upload {
            return Err(Error::BadEntry(format!(
                "entry {}: size {} is over the largest file this filer holds ({} bytes, --max-upload-mb)",
                e.full_path, e.size, self.upload.max_upload
            )));
        }
        chunks::check_layout(&e.chunks, e.size)
            .map_err(|err| Error::BadEntry(format!("entry {}: {err}", e.full_path)))?;
        if e.mtime_ms == 0 {
            e.mtime_ms = now_ms();
        }
        if e.mode == 0 {
            e.mode = if e.is_dir { DIR_MODE } else { FILE_MODE };
        }
        let (expect, parent_expect) = (req.expect, req.parent_expect);
        self.critical(move |f| async move { f.commit_entry(e, expect, parent_expect).await })
            .await
    }

    /// Read-check-write of one entry under its path lock. Queues the chunks the new entry no
    /// longer references for deletion, in the same batch; the store refuses the write if a
    /// chunk belongs to another entry (its chunks' locks are held, so no other writer can
    /// claim one of them between the store's check and its write).
    /// The parent's fencing token is checked under the same locks: a writer of the parent
    /// waits for this write, and this write for it.
    async fn commit_entry(
        &self,
        mut entry: Entry,
        expect: Option<Expect>,
        parent_expect: Option<ParentExpect>,
    ) -> Result<Entry, Error> {
        let p = entry.full_path.clone();
        let _locks = self.locks.lock(&[&p]).await;
        let fids: Vec<String> = entry.chunks.iter().map(|c| c.fid.clone()).collect();
        let fids: Vec<&str> = fids.iter().map(String::as_str).collect();
        let _chunk_locks = self.chunk_locks.lock(&fids).await;
        let now = now_ms();
        let planned = {
            let entry = entry.clone();
            self.read(move |s| {
                if let Some(fence) = &parent_expect {
                    check_fence(s, &entry.full_path, fence)?;
                }
                let old = s.get(&entry.full_path)?;
                check_expect(&entry.full_path, old.as_ref(), expect)?;
                match &old {
                    Some(o) if o.is_dir && !entry.is_dir => {
                        return Err(Error::IsADirectory {
                            path: entry.full_path,
                        });
                    }
                    Some(o) if !o.is_dir && entry.is_dir => {
                        return Err(Error::NotADirectory {
                            path: entry.full_path,
                        });
                    }
                    _ => {}
                }
                let mut batch = Batch::new();
                plan_parents(s, &entry.full_path, now, &mut batch)?;
                Ok((old, batch))
            })
            .await?
        };
        let (old, mut batch) = planned;
        entry.version = old.as_ref().map_or(1, |o| o.version.saturating_add(1));
        batch.put(entry.clone());
        if let Some(old) = &old {
            let kept: HashSet<&str> = entry.chunks.iter().map(|c| c.fid.as_str()).collect();
            for c in old.chunks.iter().filter(|c| !kept.contains(c.fid.as_str())) {
                batch.ops.push(Op::QueueDeletion(PendingDeletion {
                    fid: c.fid.clone(),
                    path: p.clone(),
                    queued_ms: now,
                }));
            }
        }
        self.commit(batch).await?;
        Ok(entry)
    }

    /// Deletes the entry at `p` (a non-empty directory only with `recursive`); its chunks are
    /// queued for deletion in the same write. Returns the number of entries removed.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p, recursive))]
    pub async fn delete(self: &Arc<Self>, p: String, recursive: bool) -> Result<usize, Error> {
        check_mutable(&p)?;
        self.critical(move |f| async move {
            let _locks = f.locks.lock(&[&p]).await;
            let now = now_ms();
            let (batch, n) = f
                .read(move |s| {
                    let entry = s
                        .get(&p)?
                        .ok_or_else(|| Error::NotFound { path: p.clone() })?;
                    if entry.is_dir && !recursive && store::has_children(s, &p)? {
                        return Err(Error::DirNotEmpty { path: p });
                    }
                    let mut batch = Batch::new();
                    let n = store::plan_delete(s, &entry, now, &mut batch)?;
                    Ok((batch, n))
                })
                .await?;
            f.commit(batch).await?;
            Ok(n)
        })
        .await
    }

    /// Moves the file or directory (with its subtree) at `src` to `dst`, creating `dst`'s
    /// parents. Returns the moved entry.
    #[tracing::instrument(level = "debug", skip_all, fields(src = %src, dst = %dst))]
    pub async fn rename(self: &Arc<Self>, src: String, dst: String) -> Result<Entry, Error> {
        check_mutable(&src)?;
        check_mutable(&dst)?;
        if src == dst {
            return Err(Error::AlreadyExists { path: dst });
        }
        if path::is_within(&dst, &src) {
            return Err(Error::BadPath(format!(
                "cannot move {src} into itself ({dst})"
            )));
        }
        self.critical(move |f| async move {
            let _locks = f.locks.lock(&[&src, &dst]).await;
            let now = now_ms();
            let (batch, moved) = f
                .read(move |s| {
                    let entry = s
                        .get(&src)?
                        .ok_or_else(|| Error::NotFound { path: src.clone() })?;
                    if s.get(&dst)?.is_some() {
                        return Err(Error::AlreadyExists { path: dst });
                    }
                    let mut batch = Batch::new();
                    plan_parents(s, &dst, now, &mut batch)?;
                    let moved = store::plan_rename(s, &entry, &dst, &mut batch)?;
                    Ok((batch, moved))
                })
                .await?;
            f.commit(batch).await?;
            Ok(moved)
        })
        .await
    }

    /// Fails early (before any chunk is written) when `p` cannot hold a file.
    async fn precheck_file(&self, p: &str) -> Result<(), Error> {
        let p = p.to_owned();
        self.read(move |s| {
            if let Some(e) = s.get(&p)?
                && e.is_dir
            {
                return Err(Error::IsADirectory { path: p });
            }
            for a in path::ancestors(&p) {
                if let Some(e) = s.get(a)?
                    && !e.is_dir
                {
                    return Err(Error::NotADirectory { path: a.to_owned() });
                }
            }
            Ok(())
        })
        .await
    }

    /// Uploads `body` as the file `p`: cuts it into chunks, writes them to volumes in
    /// parallel (bounded), then commits the entry. On failure nothing is committed and the
    /// chunks already written are queued for deletion.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %p))]
    pub async fn upload<S>(
        self: &Arc<Self>,
        p: String,
        mime: String,
        body: S,
    ) -> Result<FileUploadResponse, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send,
    {
        check_mutable(&p)?;
        self.precheck_file(&p).await?;
        let mut guard = OrphanGuard {
            filer: self.clone(),
            path: p.clone(),
            fids: Vec::new(),
        };
        let (chunks, size) = match self.upload_chunks(&p, body, &mut guard).await {
            Ok(done) => done,
            Err(e) => {
                self.metrics.upload_errors.inc();
                return Err(e);
            }
        };
        let chunk_count = chunks.len();
        let entry = Entry {
            full_path: p.clone(),
            is_dir: false,
            mode: FILE_MODE,
            mtime_ms: now_ms(),
            size,
            mime,
            chunks,
            ..Entry::default()
        };
        let committed = self
            .critical(move |f| async move {
                let result = f.commit_entry(entry, None, None).await;
                if result.is_ok() {
                    guard.disarm();
                }
                // On error the guard queues the written chunks for deletion as it drops.
                result
            })
            .await;
        match committed {
            Ok(_) => {
                self.metrics.files_created.inc();
                tracing::debug!(size, chunks = chunk_count, "file stored");
                Ok(FileUploadResponse {
                    name: path::name(&p).to_owned(),
                    size,
                })
            }
            Err(e) => {
                self.metrics.upload_errors.inc();
                Err(e)
            }
        }
    }

    async fn upload_chunks<S>(
        self: &Arc<Self>,
        p: &str,
        body: S,
        guard: &mut OrphanGuard,
    ) -> Result<(Vec<Chunk>, u64), Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send,
    {
        let failed = Arc::new(AtomicBool::new(false));
        let stop = failed.clone();
        let source = chunk_stream(body, self.upload.chunk_size, self.upload.max_upload)
            .take_while(move |_| futures::future::ready(!stop.load(Ordering::Relaxed)));
        let uploads = source
            .map(|item| {
                let this = self.clone();
                let p = p.to_owned();
                async move {
                    let (offset, data) = item?;
                    this.upload_chunk(p, offset, data).await
                }
            })
            .buffered(self.upload.concurrency);
        let mut uploads = std::pin::pin!(uploads);
        let mut chunks = Vec::new();
        let mut first_error = None;
        // Keep draining after a failure so every chunk that did get written is known and
        // queued for deletion; no new chunk is started once `failed` is set.
        while let Some(result) = uploads.next().await {
            match result {
                Ok((chunk, acked)) => {
                    guard.fids.push(chunk.fid.clone());
                    if acked != chunk.size {
                        failed.store(true, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| Error::Upload {
                            path: p.to_owned(),
                            offset: chunk.offset,
                            source: Box::new(ClientError::Decode {
                                url: chunk.fid.clone(),
                                message: format!("volume stored {acked} bytes of {}", chunk.size),
                            }),
                        });
                    }
                    chunks.push(chunk);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let size = chunks.last().map_or(0, |c| c.offset + c.size);
        Ok((chunks, size))
    }

    /// Assigns and writes one chunk; returns it and the size the volume acknowledged.
    async fn upload_chunk(
        &self,
        p: String,
        offset: u64,
        data: Bytes,
    ) -> Result<(Chunk, u64), Error> {
        let size = data.len() as u64;
        let span = tracing::info_span!("filer.upload_chunk", offset, size);
        let written = self
            .blobs
            .upload(&self.upload.assign, data, &self.upload.write)
            .instrument(span)
            .await
            .map_err(|source| Error::Upload {
                path: p,
                offset,
                source: Box::new(source),
            })?;
        self.metrics.chunks_uploaded.inc();
        self.metrics.bytes_written.inc_by(size);
        Ok((
            Chunk {
                fid: written.fid.to_string(),
                offset,
                size,
                etag: written.etag,
            },
            written.size,
        ))
    }

    /// Streams bytes `start..end` of a file. The first piece is fetched before returning, so
    /// an unreadable first chunk is an error response rather than an aborted body.
    pub async fn read_stream(
        self: &Arc<Self>,
        entry: Entry,
        start: u64,
        end: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let pieces: Vec<Piece> = chunks::chunks_for_range(&entry.chunks, start, end)
            .into_iter()
            .flat_map(split_zeros)
            .collect();
        let entry = Arc::new(entry);
        let this = self.clone();
        let span = Span::current();
        let mut pieces = stream::iter(pieces)
            .map(move |piece| {
                let this = this.clone();
                let entry = entry.clone();
                async move { this.read_piece(&entry, piece).await }.instrument(span.clone())
            })
            .buffered(READ_AHEAD)
            .boxed();
        match pieces.next().await {
            None => Ok(stream::empty().boxed()),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(stream::once(futures::future::ready(Ok(first)))
                .chain(pieces)
                .boxed()),
        }
    }

    async fn read_piece(&self, entry: &Entry, piece: Piece) -> Result<Bytes, Error> {
        let (index, skip, len) = match piece {
            Piece::Zeros { len } => {
                return Ok(Bytes::from(vec![0u8; usize::try_from(len).unwrap_or(0)]));
            }
            Piece::Chunk { index, skip, len } => (index, skip, len),
        };
        let chunk = entry.chunks.get(index).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "chunk index {index} out of range for {}",
                entry.full_path
            ))
        })?;
        let fail = |reason: String, transient: bool, retry_after: Option<u64>| {
            self.metrics.chunk_read_errors.inc();
            Error::ChunkRead {
                path: entry.full_path.clone(),
                fid: chunk.fid.clone(),
                reason,
                transient,
                retry_after,
            }
        };
        let fid: FileId = chunk
            .fid
            .parse()
            .map_err(|e: common::ids::FileIdError| fail(e.to_string(), false, None))?;
        let downloaded = self.blobs.download_tagged(&fid).await.map_err(|e| {
            let retry_after = match &e {
                ClientError::Api { retry_after, .. } => *retry_after,
                _ => None,
            };
            fail(e.to_string(), e.is_transient(), retry_after)
        })?;
        // The volume server's ETag is the needle's CRC-32C, which the upload recorded as the
        // chunk's etag: a mismatch means these are not the bytes the entry was written with
        // (a reused or overwritten needle, a wrong fid in a meta write). It comes with the
        // response headers, so the check is free. Entries without a recorded etag, and
        // servers that send none, are not checked.
        let data = downloaded.data;
        if let Some(got) = &downloaded.etag
            && !chunk.etag.is_empty()
            && !unquote_etag(&chunk.etag).eq_ignore_ascii_case(got)
        {
            self.metrics.chunk_etag_mismatches.inc();
            return Err(fail(
                format!(
                    "volume answered etag {got}, the entry records {}",
                    chunk.etag
                ),
                false,
                None,
            ));
        }
        if data.len() as u64 != chunk.size {
            return Err(fail(
                format!(
                    "volume returned {} bytes, the entry records {}",
                    data.len(),
                    chunk.size
                ),
                false,
                None,
            ));
        }
        let from = usize::try_from(skip).unwrap_or(usize::MAX);
        let to = usize::try_from(skip + len).unwrap_or(usize::MAX);
        if from > to || to > data.len() {
            return Err(fail(
                format!("range {skip}+{len} outside the chunk"),
                false,
                None,
            ));
        }
        Ok(data.slice(from..to))
    }
}

fn split_zeros(piece: Piece) -> Vec<Piece> {
    match piece {
        Piece::Zeros { len } if len > ZERO_PIECE => {
            let mut out = Vec::new();
            let mut left = len;
            while left > 0 {
                let n = left.min(ZERO_PIECE);
                out.push(Piece::Zeros { len: n });
                left -= n;
            }
            out
        }
        other => vec![other],
    }
}

/// Cuts a body into `(offset, chunk)` items; yields [`Error::TooLarge`] once more than
/// `max` bytes arrived, and passes body errors through. Stops after the first error.
fn chunk_stream<'a, S>(
    body: S,
    chunk_size: usize,
    max: u64,
) -> impl Stream<Item = Result<(u64, Bytes), Error>> + Send + 'a
where
    S: Stream<Item = Result<Bytes, Error>> + Send + 'a,
{
    struct State<'a> {
        body: BoxStream<'a, Result<Bytes, Error>>,
        chunker: Chunker,
        offset: u64,
        received: u64,
        eof: bool,
        stopped: bool,
    }
    let state = State {
        body: body.boxed(),
        chunker: Chunker::new(chunk_size),
        offset: 0,
        received: 0,
        eof: false,
        stopped: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.stopped {
                return None;
            }
            let next = if st.eof {
                st.chunker.finish()
            } else {
                st.chunker.pop_full()
            };
            if let Some(chunk) = next {
                let offset = st.offset;
                st.offset += chunk.len() as u64;
                return Some((Ok((offset, chunk)), st));
            }
            if st.eof {
                return None;
            }
            match st.body.next().await {
                Some(Ok(frame)) => {
                    st.received += frame.len() as u64;
                    if st.received > max {
                        st.stopped = true;
                        return Some((Err(Error::TooLarge { limit: max }), st));
                    }
                    st.chunker.push(&frame);
                }
                Some(Err(e)) => {
                    st.stopped = true;
                    return Some((Err(e), st));
                }
                None => st.eof = true,
            }
        }
    })
}

/// Remembers the chunks an upload wrote; unless disarmed (the entry was committed), queues
/// them for deletion when dropped — on errors and when the request is cancelled alike.
struct OrphanGuard {
    filer: Arc<Filer>,
    path: String,
    fids: Vec<String>,
}

impl OrphanGuard {
    fn disarm(mut self) {
        self.fids.clear();
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        if self.fids.is_empty() {
            return;
        }
        let now = now_ms();
        let mut batch = Batch::new();
        for fid in self.fids.drain(..) {
            batch.ops.push(Op::QueueDeletion(PendingDeletion {
                fid,
                path: self.path.clone(),
                queued_ms: now,
            }));
        }
        let filer = self.filer.clone();
        let path = self.path.clone();
        tracing::warn!(path = %path, chunks = batch.len(), "upload not committed, queueing its chunks for deletion");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(
                    async move {
                        if let Err(e) = filer.commit(batch).await {
                            tracing::error!(path = %path, "failed to queue orphaned chunks: {e:#}");
                        }
                    }
                    .in_current_span(),
                );
            }
            Err(_) => tracing::error!(path = %path, "no runtime to queue orphaned chunks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_chunk_stream_cuts_and_limits() {
        let frames: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defgh")),
        ];
        let out: Vec<_> = chunk_stream(stream::iter(frames), 3, 100).collect().await;
        let out: Vec<(u64, Bytes)> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            out,
            vec![
                (0, Bytes::from_static(b"abc")),
                (3, Bytes::from_static(b"def")),
                (6, Bytes::from_static(b"gh")),
            ]
        );

        let frames: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from_static(b"abcd")),
            Ok(Bytes::from_static(b"ef")),
        ];
        let out: Vec<_> = chunk_stream(stream::iter(frames), 4, 5).collect().await;
        assert!(matches!(
            out.as_slice(),
            [Ok(_), Err(Error::TooLarge { limit: 5 })]
        ));

        let out: Vec<_> = chunk_stream(stream::iter(Vec::<Result<Bytes, Error>>::new()), 4, 5)
            .collect()
            .await;
        assert!(out.is_empty());
    }

    #[test]
    fn test_check_expect() {
        let e = Entry {
            version: 3,
            ..Entry::default()
        };
        assert!(check_expect("/x", None, Some(Expect::Absent)).is_ok());
        assert!(check_expect("/x", Some(&e), Some(Expect::Absent)).is_err());
        assert!(check_expect("/x", Some(&e), Some(Expect::Version(3))).is_ok());
        assert!(check_expect("/x", Some(&e), Some(Expect::Version(2))).is_err());
        assert!(check_expect("/x", None, Some(Expect::Version(1))).is_err());
        assert!(check_expect("/x", None, None).is_ok());
    }

    #[test]
    fn test_split_zeros_bounds_piece_size() {
        let parts = split_zeros(Piece::Zeros {
            len: 3 * ZERO_PIECE + 1,
        });
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts.iter().map(Piece::len).sum::<u64>(),
            3 * ZERO_PIECE + 1
        );
    }
}
