//! Typed client of volume servers, and [`BlobClient`]: assign + upload, and reads that try
//! each server holding the volume in turn.

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode, header};
use bytes::Bytes;

use super::master::{MasterClient, urlencode};
use super::{Call, ClientError, HttpClient, base_url};
use crate::api::master::{AllocateQuery, AssignQuery};
use crate::api::volume::{DeleteResponse, UploadResponse, VacuumResponse};
use crate::ids::{FileId, VolumeId};
use crate::security::Security;

/// Options of one needle write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Skip the fsync (throwaway data only).
    pub no_fsync: bool,
    /// This is a replica copy forwarded by the primary: do not forward again.
    pub replicate: bool,
    /// File name to store with the needle.
    pub name: Option<String>,
    /// The fid token from the assign; without one, a client holding the signing key mints
    /// its own (see [`VolumeClient::with_security`]).
    pub auth: Option<String>,
}

/// Client of volume servers (the server is named per call).
#[derive(Debug, Clone)]
pub struct VolumeClient {
    http: HttpClient,
    security: Option<Arc<Security>>,
}

impl VolumeClient {
    /// A client sending through `http`.
    pub fn new(http: HttpClient) -> Self {
        Self {
            http,
            security: None,
        }
    }

    /// A client that mints the fid tokens its writes, deletes and reads need with the keys
    /// of `security` (services holding the cluster's signing key: filer, broker, volume
    /// replication).
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = Some(security);
        self
    }

    /// Sets `Authorization: BEARER <token>` on a call: the given token, else one minted.
    fn authorize<'c>(
        &self,
        call: Call<'c>,
        given: Option<&str>,
        mint: impl FnOnce(&Security) -> Option<String>,
    ) -> Call<'c> {
        let token = given
            .map(str::to_owned)
            .or_else(|| self.security.as_deref().and_then(mint));
        match token.and_then(|t| HeaderValue::from_str(&format!("BEARER {t}")).ok()) {
            Some(mut v) => {
                v.set_sensitive(true);
                let mut call = call;
                call.headers.insert(header::AUTHORIZATION, v);
                call
            }
            None => call,
        }
    }

    /// Writes a needle. Idempotent: rewriting the same fid with the same bytes is harmless.
    pub async fn write(
        &self,
        server: &str,
        fid: &FileId,
        data: Bytes,
        opts: &WriteOptions,
    ) -> Result<UploadResponse, ClientError> {
        let mut params = Vec::new();
        if opts.no_fsync {
            params.push("fsync=false".to_owned());
        }
        if opts.replicate {
            params.push("type=replicate".to_owned());
        }
        if let Some(n) = &opts.name {
            params.push(format!("name={}", urlencode(n)));
        }
        let qs = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let call = Call::new(
            Method::POST,
            format!("{}/{fid}{qs}", base_url(server)),
            "POST /{fid}",
        )
        .body(data)
        .idempotent(true);
        let call = self.authorize(call, opts.auth.as_deref(), |s| s.write_token(fid));
        self.http.json(call).await
    }

    /// Reads a needle's data, in one attempt (callers try the other replicas instead).
    pub async fn read(&self, server: &str, fid: &FileId) -> Result<Bytes, ClientError> {
        self.read_tagged(server, fid).await.map(|d| d.data)
    }

    /// Reads a needle's data and the ETag the server answered with (the needle's CRC), in
    /// one attempt.
    pub async fn read_tagged(&self, server: &str, fid: &FileId) -> Result<Downloaded, ClientError> {
        self.read_with(server, fid, None).await
    }

    /// [`VolumeClient::read_tagged`] with the read token from a `fileId` lookup.
    pub async fn read_with(
        &self,
        server: &str,
        fid: &FileId,
        token: Option<&str>,
    ) -> Result<Downloaded, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}/{fid}", base_url(server)),
            "GET /{fid}",
        )
        .idempotent(false);
        let call = self.authorize(call, token, |s| s.read_token(fid));
        let url = call.url.clone();
        let resp = self.http.send(call).await?;
        let etag = resp
            .headers()
            .get(axum::http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(unquote_etag);
        let data = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        Ok(Downloaded { data, etag })
    }

    /// Deletes a needle.
    pub async fn delete(
        &self,
        server: &str,
        fid: &FileId,
        replicate: bool,
    ) -> Result<DeleteResponse, ClientError> {
        self.delete_with(server, fid, replicate, None).await
    }

    /// [`VolumeClient::delete`] with the token from a `fileId` lookup.
    pub async fn delete_with(
        &self,
        server: &str,
        fid: &FileId,
        replicate: bool,
        token: Option<&str>,
    ) -> Result<DeleteResponse, ClientError> {
        let qs = if replicate { "?type=replicate" } else { "" };
        let call = Call::new(
            Method::DELETE,
            format!("{}/{fid}{qs}", base_url(server)),
            "DELETE /{fid}",
        );
        let call = self.authorize(call, token, |s| s.write_token(fid));
        self.http.json(call).await
    }

    /// Asks a server to compact its volumes whose garbage ratio exceeds `garbage_threshold`
    /// (`POST /admin/vacuum`); answers what it compacted.
    pub async fn vacuum(
        &self,
        server: &str,
        garbage_threshold: f64,
    ) -> Result<VacuumResponse, ClientError> {
        let call = Call::new(
            Method::POST,
            format!(
                "{}/admin/vacuum?garbageThreshold={garbage_threshold}",
                base_url(server)
            ),
            "POST /admin/vacuum",
        )
        .idempotent(true);
        self.http.json(call).await
    }

    /// Asks a server to delete a whole volume and its files (`DELETE /admin/volume`).
    /// Idempotent as far as the caller goes: a volume already gone answers 404
    /// (`volume_not_found`), which the caller may count as done.
    pub async fn delete_volume(&self, server: &str, volume: VolumeId) -> Result<(), ClientError> {
        let call = Call::new(
            Method::DELETE,
            format!("{}/admin/volume?volumeId={volume}", base_url(server)),
            "DELETE /admin/volume",
        )
        .idempotent(true);
        self.http.send(call).await.map(drop)
    }

    /// Asks a server to allocate a volume.
    pub async fn allocate(&self, server: &str, q: &AllocateQuery) -> Result<(), ClientError> {
        let mut url = format!(
            "{}/admin/volume?volumeId={}&collection={}",
            base_url(server),
            q.volume_id,
            urlencode(&q.collection)
        );
        if let Some(r) = &q.replication {
            url.push_str(&format!("&replication={}", urlencode(r)));
        }
        let call = Call::new(Method::POST, url, "POST /admin/volume").idempotent(true);
        self.http.send(call).await.map(drop)
    }
}

/// A blob's bytes and the ETag its server answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    /// The bytes.
    pub data: Bytes,
    /// The `ETag` header without quotes (for volume servers, the needle's CRC in hex, as
    /// in the write's `eTag`); `None` when the server sent none.
    pub etag: Option<String>,
}

/// An `ETag` header value without its weak prefix and quotes.
pub fn unquote_etag(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix("W/")
        .unwrap_or(v)
        .trim_matches('"')
        .to_owned()
}

/// Writes blobs where the master assigns them and reads them from any server holding them.
#[derive(Debug, Clone)]
pub struct BlobClient {
    /// The master.
    pub master: Arc<MasterClient>,
    /// The volume servers.
    pub volumes: VolumeClient,
    /// Whether volume servers are reached at their `publicUrl` (clients outside the
    /// cluster's network) instead of their internal `url` (services).
    pub public: bool,
}

/// Where a blob was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Its file id.
    pub fid: FileId,
    /// The server that acknowledged it, at the address this client used.
    pub url: String,
    /// Bytes stored.
    pub size: u64,
    /// Its ETag.
    pub etag: String,
}

impl BlobClient {
    /// A blob client of the master at `master_addr`; it reaches volume servers at the
    /// internal `url` of assigns and lookups unless told otherwise
    /// ([`BlobClient::use_public_urls`]).
    pub fn new(http: HttpClient, master_addr: &str) -> Self {
        Self {
            master: Arc::new(MasterClient::new(http.clone(), master_addr)),
            volumes: VolumeClient::new(http),
            public: false,
        }
    }

    /// Reaches volume servers at the `publicUrl` of assigns and lookups instead of their
    /// internal `url` (a volume server's `--client-url`, e.g. the host port compose
    /// publishes): for clients outside the cluster's network, as SeaweedFS's
    /// `weed upload -usePublicUrl`.
    pub fn use_public_urls(mut self, public: bool) -> Self {
        self.public = public;
        self
    }

    /// The address to reach a server at, given its internal and public addresses.
    fn pick<'a>(&self, url: &'a str, public_url: &'a str) -> &'a str {
        if self.public && !public_url.is_empty() {
            public_url
        } else {
            url
        }
    }

    /// Assigns a fid and writes `data` there (durably unless `opts.no_fsync`).
    pub async fn upload(
        &self,
        assign: &AssignQuery,
        data: Bytes,
        opts: &WriteOptions,
    ) -> Result<Written, ClientError> {
        let a = self.master.assign(assign).await?;
        let fid: FileId =
            a.fid
                .parse()
                .map_err(|e: crate::ids::FileIdError| ClientError::Decode {
                    url: self.master.base(),
                    message: e.to_string(),
                })?;
        let server = self.pick(&a.url, &a.public_url).to_owned();
        let resp = match (&a.auth, &opts.auth) {
            (Some(token), None) => {
                let opts = WriteOptions {
                    auth: Some(token.clone()),
                    ..opts.clone()
                };
                self.volumes.write(&server, &fid, data, &opts).await?
            }
            _ => self.volumes.write(&server, &fid, data, opts).await?,
        };
        Ok(Written {
            fid,
            url: server,
            size: resp.size,
            etag: resp.etag,
        })
    }

    /// Reads a blob, trying each server that holds its volume until one answers; when none
    /// does, looks the volume up afresh and tries again (three rounds, with backoff).
    pub async fn download(&self, fid: &FileId) -> Result<Bytes, ClientError> {
        self.download_tagged(fid).await.map(|d| d.data)
    }

    /// [`BlobClient::download`], keeping the ETag the answering server sent.
    pub async fn download_tagged(&self, fid: &FileId) -> Result<Downloaded, ClientError> {
        let mut last = None;
        let mut token: Option<String> = None;
        for round in 0..3u32 {
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100 << round)).await;
                self.master.invalidate(fid.volume_id);
            }
            let locations = match self.master.lookup(fid.volume_id).await {
                Ok(l) => l,
                Err(e) if e.is_transient() => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for loc in &locations {
                let server = self.pick(&loc.url, &loc.public_url);
                match self.volumes.read_with(server, fid, token.as_deref()).await {
                    Ok(d) => return Ok(d),
                    // The cluster signs read tokens: ask the master for one, try again.
                    Err(e) if needs_token(&e) && token.is_none() => {
                        token = self.master.lookup_file(fid).await?.jwt;
                        if token.is_none() {
                            return Err(e);
                        }
                        match self.volumes.read_with(server, fid, token.as_deref()).await {
                            Ok(d) => return Ok(d),
                            Err(e) => last = Some(e),
                        }
                    }
                    // A missing or corrupt needle on one replica may be fine on another.
                    Err(e) => last = Some(e),
                }
            }
            if last.as_ref().is_some_and(|e| !e.is_transient()) && locations.len() <= 1 {
                break;
            }
        }
        Err(last.unwrap_or_else(|| no_server(&self.master.base(), fid)))
    }

    /// Deletes a blob through a server holding its volume (which deletes the replicas too).
    pub async fn delete(&self, fid: &FileId) -> Result<DeleteResponse, ClientError> {
        let looked_up = self.master.lookup_file(fid).await?;
        let mut last = None;
        for loc in &looked_up.locations {
            match self
                .volumes
                .delete_with(
                    self.pick(&loc.url, &loc.public_url),
                    fid,
                    false,
                    looked_up.auth.as_deref(),
                )
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_server(&self.master.base(), fid)))
    }
}

/// Whether a volume server refused for want of a fid token.
fn needs_token(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::UNAUTHORIZED) && e.code() == Some("token_required")
}

fn no_server(master: &str, fid: &FileId) -> ClientError {
    ClientError::Api {
        url: master.to_owned(),
        status: StatusCode::NOT_FOUND,
        code: "volume_not_found".to_owned(),
        message: format!("no server holds volume {}", fid.volume_id),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Json;
    use axum::Router;
    use axum::routing::{any, get, post};

    use super::*;
    use crate::api::master::{AssignResponse, Location, LookupResponse};

    const FID: &str = "3,01637037d6";

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr.to_string()
    }

    /// A volume server answering one fid, and a master whose assigns and lookups name it as
    /// `publicUrl` while their internal `url` is a closed port.
    async fn cluster() -> String {
        let volume = serve(
            Router::new().route(
                "/{fid}",
                post(|| async {
                    Json(UploadResponse {
                        name: String::new(),
                        size: 5,
                        etag: "abc".to_owned(),
                        mime: String::new(),
                    })
                })
                .get(|| async { "hello" })
                .delete(|| async { Json(DeleteResponse { size: 5 }) }),
            ),
        )
        .await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let location = Location {
            url: closed.clone(),
            public_url: volume.clone(),
        };
        let (assign_loc, lookup_loc) = (location.clone(), location);
        serve(
            Router::new()
                .route(
                    "/dir/assign",
                    any(move || {
                        let l = assign_loc.clone();
                        async move {
                            Json(AssignResponse {
                                fid: FID.to_owned(),
                                url: l.url,
                                public_url: l.public_url,
                                count: 1,
                                auth: None,
                            })
                        }
                    }),
                )
                .route(
                    "/dir/lookup",
                    get(move || {
                        let l = lookup_loc.clone();
                        async move {
                            Json(LookupResponse {
                                volume_or_file_id: "3".to_owned(),
                                locations: vec![l],
                                jwt: None,
                                auth: None,
                            })
                        }
                    }),
                ),
        )
        .await
    }

    #[tokio::test]
    async fn test_use_public_urls_reaches_volume_servers_at_their_public_url() {
        let master = cluster().await;
        let http = HttpClient::new(Duration::from_secs(5));
        let client = BlobClient::new(http.clone(), &master).use_public_urls(true);
        let w = client
            .upload(
                &AssignQuery::default(),
                Bytes::from_static(b"hello"),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(w.fid.to_string(), FID);
        let fid: FileId = FID.parse().unwrap();
        assert_eq!(&client.download(&fid).await.unwrap()[..], b"hello");
        assert_eq!(client.delete(&fid).await.unwrap().size, 5);

        // A service's client uses the internal url, here a closed port: it fails.
        let internal = BlobClient::new(http, &master);
        let err = internal
            .upload(
                &AssignQuery::default(),
                Bytes::from_static(b"hello"),
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(err.status().is_none(), "a transport error, got {err}");
    }
}
