//! The volume server's domain operations: blob writes with their synchronous replication
//! fan-out, reads, deletes (on every copy), volume allocation and status. Handlers call these
//! and map [`Error`] to HTTP in `crate::http::error`; nothing here knows a status code.
//!
//! # Replication invariant
//! On a replicated volume the server that receives a client's write (the primary) writes
//! locally and forwards the same needle (same fid, cookie, name, MIME type and last-modified
//! time, so every copy has the same checksum) to every other holder in parallel, and answers
//! only when all copies are durable. A copy forwarded by a primary (`replicate`) is written
//! locally only. Fewer holders than the placement asks for is an error, never a write with
//! fewer copies.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use common::api::master::{AllocateQuery, Heartbeat, Replication};
use common::api::volume::{Compacted, UploadResponse, VacuumResponse, VolumeServerStatus};
use common::client::master::{MasterClient, urlencode};
use common::client::volume::VolumeClient;
use common::client::{Call, ClientError, HttpClient, base_url};
use common::ids::FileId;
use common::security::Security;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::ReadNeedle;
use crate::store::needle::Needle;
use crate::store::{Store, VolumeError};

/// Reads above this size run on the blocking pool.
const INLINE_READ_MAX: u32 = 256 << 10;
/// Needles larger than this serve a `Range` by streaming through the checksum, keeping only
/// the range in memory ([`VolumeServer::read_range`]).
pub const RANGE_READ_MIN: u32 = 4 << 20;

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store error about one file id.
    #[error("file {fid}: {source}")]
    Blob {
        /// The file id.
        fid: FileId,
        /// What the store said.
        source: VolumeError,
    },
    /// A store error about a volume.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A replica could not be found or written; retry.
    #[error("{0}")]
    ReplicaUnavailable(String),
    /// A replicated delete found the needle on no copy.
    #[error("file {fid}: not found on any copy of volume {}", fid.volume_id)]
    NotFoundOnAnyCopy {
        /// The file id.
        fid: FileId,
    },
    /// A replication string that does not parse.
    #[error("{0}")]
    BadReplication(String),
    /// A collection name that is not allowed.
    #[error("collection {0:?} must be at most 64 letters, digits, '-' or '.'")]
    BadCollection(String),
    /// A garbage threshold outside `0..=1`.
    #[error("garbageThreshold {0} must be between 0 and 1")]
    BadThreshold(f64),
    /// This server holds as many volumes as it may.
    #[error("this server already holds its maximum of {max} volumes")]
    NoFreeSlot {
        /// `--max-volumes`.
        max: u32,
    },
    /// An unexpected failure (a join error).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    fn blob(fid: FileId) -> impl FnOnce(VolumeError) -> Self {
        move |source| Self::Blob { fid, source }
    }
}

/// A blob to write, as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The bytes.
    pub data: Bytes,
    /// File name (multipart file name or `?name=`).
    pub name: Option<String>,
    /// MIME type.
    pub mime: Option<String>,
}

/// How to write a blob.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `Some(false)` skips the fsync for this write (throwaway data).
    pub fsync: Option<bool>,
    /// A copy forwarded by the primary: write locally only.
    pub replicate: bool,
    /// The primary's last-modified time (seconds), kept by a replica copy.
    pub last_modified: Option<u64>,
}

/// What an allocation created (or found).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Allocated {
    /// Volume id.
    pub volume: u32,
    /// Collection.
    pub collection: String,
    /// Replica placement.
    pub replication: Replication,
}

/// The volume server: its store, its clients of the master and of other volume servers.
pub struct VolumeServer {
    store: Arc<Store>,
    master: Arc<MasterClient>,
    volumes: VolumeClient,
    http: HttpClient,
    url: String,
    cfg: Arc<Config>,
    metrics: Metrics,
    /// Bumped when a heartbeat should go out at once; each master's loop watches it.
    beat: watch::Sender<u64>,
    security: Arc<Security>,
}

impl std::fmt::Debug for VolumeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeServer")
            .field("url", &self.url)
            .field("volumes", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl VolumeServer {
    /// A server over `store`, known to the master as `url`.
    pub fn new(store: Arc<Store>, cfg: Arc<Config>, url: String, metrics: Metrics) -> Self {
        let http = HttpClient::new(Duration::from_secs(60));
        Self::with_client(store, cfg, url, metrics, http)
    }

    /// [`VolumeServer::new`] with a given HTTP client (tests use one that does not retry; a
    /// service passes one made by `Security::apply`, so its calls carry the cluster token).
    pub fn with_client(
        store: Arc<Store>,
        cfg: Arc<Config>,
        url: String,
        metrics: Metrics,
        http: HttpClient,
    ) -> Self {
        Self {
            master: Arc::new(MasterClient::new(http.clone(), &cfg.master)),
            volumes: VolumeClient::new(http.clone()),
            http,
            store,
            url,
            cfg,
            metrics,
            beat: watch::Sender::new(0),
            security: Arc::new(Security::default()),
        }
    }

    /// Checks requests against `security`'s credentials ([`VolumeServer::security`]) and
    /// mints the fid tokens replica writes and deletes need with its keys.
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.volumes = self.volumes.with_security(security.clone());
        self.security = security;
        self
    }

    /// The credentials this server runs with.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// The volumes.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This server's address as the master knows it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the next heartbeat reports: this server's internal `url`, its `publicUrl`
    /// (`--client-url`, else the internal one) and its volumes.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            url: self.url.clone(),
            public_url: self
                .cfg
                .client_url
                .clone()
                .unwrap_or_else(|| self.url.clone()),
            max_volumes: self.cfg.max_volumes,
            volumes: self.store.infos(),
        }
    }

    /// The master client.
    pub fn master(&self) -> &MasterClient {
        &self.master
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The requests for a heartbeat at once (after an allocation or a volume deletion): a
    /// loop awaits `changed()` on its own receiver, so every master's loop sees each request.
    pub fn beat_requests(&self) -> watch::Receiver<u64> {
        self.beat.subscribe()
    }

    /// Largest blob accepted, in bytes.
    pub fn max_blob(&self) -> usize {
        usize::try_from(common::config::mib(self.cfg.max_blob_mb)).unwrap_or(usize::MAX)
    }

    /// What `GET /status` answers.
    pub fn status(&self) -> VolumeServerStatus {
        VolumeServerStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            volumes: self.store.infos(),
        }
    }

    /// Stores a blob durably (and, unless `opts.replicate`, on every replica) and answers its
    /// name, size and ETag. Its spans (`needle.append`, `volume.fsync`) are children of the
    /// request's server span, as the tracing tests expect.
    pub async fn write(
        &self,
        fid: FileId,
        upload: Upload,
        opts: WriteOptions,
    ) -> Result<UploadResponse, Error> {
        let vol = self.store.get(fid.volume_id).map_err(Error::blob(fid))?;
        let fsync = self.cfg.fsync && opts.fsync != Some(false);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        let Upload { data, name, mime } = upload;
        let needle = Needle {
            cookie: fid.cookie,
            key: fid.key,
            data: data.clone(),
            name: name.clone(),
            mime: mime.clone(),
            last_modified: if opts.replicate {
                opts.last_modified.or(now)
            } else {
                now
            },
        };
        let local = async {
            let mut pending = vol
                .write(&needle, fsync, self.store.size_limit())
                .await
                .map_err(Error::blob(fid))?;
            let checksum = pending.checksum;
            pending
                .appended()
                .instrument(tracing::info_span!(
                    "needle.append",
                    otel.name = "needle.append",
                    volume = fid.volume_id,
                    bytes = data.len()
                ))
                .await;
            pending
                .done()
                .instrument(tracing::info_span!(
                    "volume.fsync",
                    otel.name = "volume.fsync",
                    volume = fid.volume_id,
                    fsync
                ))
                .await
                .map_err(Error::blob(fid))?;
            Ok::<u32, Error>(checksum)
        };
        let checksum = if opts.replicate || vol.replication.copies() == 1 {
            local.await?
        } else {
            let replicas = self
                .replica_urls(fid.volume_id, vol.replication.copies())
                .await?;
            let copy = ReplicaCopy {
                fsync,
                name: name.as_deref(),
                mime: mime.as_deref(),
                last_modified: needle.last_modified,
            };
            let forwards = replicas.iter().map(|url| {
                let (data, copy) = (data.clone(), &copy);
                async move {
                    let token = self.security.write_token(&fid);
                    replicate_write(&self.http, url, &fid, data, copy, token.as_deref())
                        .await
                        .map_err(|e| {
                            Error::ReplicaUnavailable(format!(
                                "replica write of {fid} to {url} failed: {e}"
                            ))
                        })
                }
            });
            let (checksum, forwarded) = tokio::join!(local, futures::future::join_all(forwards));
            let checksum = checksum?;
            for (f, url) in forwarded.into_iter().zip(&replicas) {
                let copy = f?;
                if copy.etag != format!("{checksum:08x}") {
                    tracing::error!(fid = %fid, replica = %url, local = format_args!("{checksum:08x}"), replica_etag = %copy.etag, "replica stored a needle with a different checksum; the copies differ");
                }
            }
            checksum
        };
        Ok(UploadResponse {
            name: needle.name.unwrap_or_default(),
            size: data.len() as u64,
            etag: format!("{checksum:08x}"),
            mime: mime.unwrap_or_default(),
        })
    }

    /// Reads a blob, checksum verified; a wrong cookie is "not found".
    pub async fn read(&self, fid: FileId) -> Result<ReadNeedle, Error> {
        let vol = self.store.get(fid.volume_id).map_err(Error::blob(fid))?;
        if vol.needle_size(fid.key).unwrap_or(0) > INLINE_READ_MAX {
            let v = vol.clone();
            tokio::task::spawn_blocking(move || v.read(fid.key, fid.cookie))
                .await
                .map_err(|e| Error::Internal(e.into()))?
        } else {
            vol.read(fid.key, fid.cookie)
        }
        .map_err(Error::blob(fid))
    }

    /// Reads part of a big blob with memory bounded by the part (see
    /// [`Volume::read_range`](crate::store::Volume::read_range)): for a needle larger than
    /// [`RANGE_READ_MIN`] whose length `pick` turns into an inclusive byte range. `None` when
    /// the needle is small, or `pick` declines, or the record is not what the index says: read
    /// it whole then.
    pub async fn read_range(
        &self,
        fid: FileId,
        pick: impl FnOnce(u64) -> Option<(u64, u64)> + Send + 'static,
    ) -> Result<Option<crate::store::RangeRead>, Error> {
        let vol = self.store.get(fid.volume_id).map_err(Error::blob(fid))?;
        if vol.needle_size(fid.key).unwrap_or(0) <= RANGE_READ_MIN {
            return Ok(None);
        }
        tokio::task::spawn_blocking(move || vol.read_range(fid.key, fid.cookie, pick))
            .await
            .map_err(|e| Error::Internal(e.into()))?
            .map_err(Error::blob(fid))
    }

    /// Deletes a blob (cookie checked) here and on every replica; returns its size.
    ///
    /// On a replicated volume the delete reaches every replica even when the needle is already
    /// gone here: a retry after a replica failed must still delete the replica's copy, or it
    /// would serve the blob after a failover. It succeeds if any copy held the needle, is
    /// [`Error::NotFoundOnAnyCopy`] if none did, [`Error::ReplicaUnavailable`] if a replica
    /// could not be reached (retry it).
    pub async fn delete(
        &self,
        fid: FileId,
        fsync: Option<bool>,
        replicate: bool,
    ) -> Result<u64, Error> {
        let vol = self.store.get(fid.volume_id).map_err(Error::blob(fid))?;
        let fsync = self.cfg.fsync && fsync != Some(false);
        let local = vol.delete(fid.key, fid.cookie, fsync).await;
        if replicate || vol.replication.copies() == 1 {
            return local.map_err(Error::blob(fid));
        }
        let mut size = match local {
            Ok(size) => Some(size),
            Err(VolumeError::NeedleNotFound { .. }) => None,
            Err(e) => return Err(Error::blob(fid)(e)),
        };
        let replicas = self
            .replica_urls(fid.volume_id, vol.replication.copies())
            .await?;
        let volumes = &self.volumes;
        let deletes = replicas
            .iter()
            .map(|url| async move { (url, volumes.delete(url, &fid, true).await) });
        for (url, res) in futures::future::join_all(deletes).await {
            match res {
                Ok(r) => size = size.or(Some(r.size)),
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {}
                Err(e) => {
                    return Err(Error::ReplicaUnavailable(format!(
                        "replica delete of {fid} on {url} failed: {e}"
                    )));
                }
            }
        }
        size.ok_or(Error::NotFoundOnAnyCopy { fid })
    }

    /// Creates a volume (the master grows one here); idempotent for the same collection and
    /// replication. Wakes the heartbeat so the master learns of it at once.
    #[tracing::instrument(name = "volume.allocate", skip_all, fields(volume = q.volume_id))]
    pub async fn allocate(&self, q: AllocateQuery) -> Result<Allocated, Error> {
        let replication: Replication = match &q.replication {
            Some(r) if !r.is_empty() => r.parse().map_err(Error::BadReplication)?,
            _ => Replication::default(),
        };
        if q.collection.len() > 64
            || !q
                .collection
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::BadCollection(q.collection));
        }
        if self.store.get(q.volume_id).is_err() && self.store.len() >= self.cfg.max_volumes as usize
        {
            return Err(Error::NoFreeSlot {
                max: self.cfg.max_volumes,
            });
        }
        let store = self.store.clone();
        let collection = q.collection.clone();
        let vid = q.volume_id;
        tokio::task::spawn_blocking(move || store.allocate(vid, &collection, replication))
            .await
            .map_err(|e| Error::Internal(e.into()))??;
        self.beat.send_modify(|n| *n += 1);
        Ok(Allocated {
            volume: vid,
            collection: q.collection,
            replication,
        })
    }

    /// Deletes a whole volume (the master's `/col/delete`): its files are removed durably and
    /// the heartbeat, woken at once, no longer reports it.
    #[tracing::instrument(name = "volume.delete_volume", skip(self))]
    pub async fn delete_volume(&self, volume: u32) -> Result<(), Error> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.delete_volume(volume))
            .await
            .map_err(|e| Error::Internal(e.into()))??;
        self.beat.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Compacts every local volume whose garbage ratio exceeds `threshold` (default 0.3),
    /// online (see `store::vacuum`).
    #[tracing::instrument(name = "volume.vacuum", skip_all)]
    pub async fn vacuum(&self, threshold: Option<f64>) -> Result<VacuumResponse, Error> {
        let threshold = threshold.unwrap_or(0.3);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::BadThreshold(threshold));
        }
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.vacuum(threshold))
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        Ok(VacuumResponse {
            compacted: done
                .into_iter()
                .map(|(volume, before, after)| Compacted {
                    volume,
                    before,
                    after,
                })
                .collect(),
        })
    }

    /// The other servers holding `vid`, which must number `copies - 1`.
    async fn replica_urls(&self, vid: u32, copies: usize) -> Result<Vec<String>, Error> {
        let locations = self.master.lookup(vid).await.map_err(|e| {
            Error::ReplicaUnavailable(format!("cannot find the replicas of volume {vid}: {e}"))
        })?;
        let others: Vec<String> = locations
            .into_iter()
            .map(|l| l.url)
            .filter(|u| *u != self.url)
            .collect();
        if others.len() + 1 < copies {
            self.master.invalidate(vid);
            return Err(Error::ReplicaUnavailable(format!(
                "volume {vid} needs {copies} copies but only {} servers hold it; refusing a write with fewer copies",
                others.len() + 1
            )));
        }
        Ok(others)
    }
}

/// What a replica copy must keep identical to the primary's needle.
struct ReplicaCopy<'a> {
    fsync: bool,
    name: Option<&'a str>,
    mime: Option<&'a str>,
    last_modified: Option<u64>,
}

/// Forwards a write to a replica with the needle's metadata (name, MIME type as
/// `Content-Type`, last-modified), so both copies hold the same bytes and the same ETag, and
/// with `token`, the fid token the replica demands when the cluster signs them (the cluster
/// token goes with every call of `http`).
async fn replicate_write(
    http: &HttpClient,
    server: &str,
    fid: &FileId,
    data: Bytes,
    copy: &ReplicaCopy<'_>,
    token: Option<&str>,
) -> Result<UploadResponse, ClientError> {
    let mut params = vec!["type=replicate".to_owned()];
    if !copy.fsync {
        params.push("fsync=false".to_owned());
    }
    if let Some(n) = copy.name {
        params.push(format!("name={}", urlencode(n)));
    }
    if let Some(t) = copy.last_modified {
        params.push(format!("lastModified={t}"));
    }
    let mut call = Call::new(
        Method::POST,
        format!("{}/{fid}?{}", base_url(server), params.join("&")),
        "POST /{fid}",
    )
    .body(data)
    .idempotent(true);
    let mime = copy
        .mime
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    call.headers.insert(header::CONTENT_TYPE, mime);
    if let Some(mut auth) = token.and_then(|t| HeaderValue::from_str(&format!("BEARER {t}")).ok()) {
        auth.set_sensitive(true);
        call.headers.insert(header::AUTHORIZATION, auth);
    }
    http.json(call).await
}
