//! Typed client of the filer: the `/__meta/` entry API and the file API.

use axum::http::{Method, StatusCode};
use bytes::Bytes;

use super::master::urlencode;
use super::{Call, ClientError, HttpClient, base_url};
use crate::api::filer::{
    DirListing, Entry, Expect, FileUploadResponse, ListQuery, ListResponse, ParentExpect,
    PutEntryRequest,
};

/// What [`FilerClient::create_entry`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The entry was created (as stored, with its version).
    New(Entry),
    /// An entry already existed at the path; this is it.
    Exists(Entry),
}

/// Client of one filer.
#[derive(Debug, Clone)]
pub struct FilerClient {
    http: HttpClient,
    base: String,
}

/// Percent-encodes each segment of an absolute path, keeping the slashes.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(urlencode).collect::<Vec<_>>().join("/")
}

impl FilerClient {
    /// A client of the filer at `addr` (`host:port`).
    pub fn new(http: HttpClient, addr: &str) -> Self {
        Self {
            http,
            base: base_url(addr),
        }
    }

    /// The filer's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The entry at `path`, or `None` when there is none.
    pub async fn get_entry(&self, path: &str) -> Result<Option<Entry>, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}/__meta/entry?path={}", self.base, urlencode(path)),
            "GET /__meta/entry",
        );
        match self.http.json(call).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or replaces an entry (durably: answered after the RocksDB write is synced).
    /// Retried on transient errors only when a precondition makes the retry detectable.
    pub async fn put_entry(
        &self,
        entry: &Entry,
        expect: Option<Expect>,
    ) -> Result<Entry, ClientError> {
        self.put_entry_fenced(entry, expect, None).await
    }

    /// [`FilerClient::put_entry`] that also requires the parent directory to hold a fencing
    /// token (`parent_expect`); a write under a stale token is a 412 with code `fenced`.
    pub async fn put_entry_fenced(
        &self,
        entry: &Entry,
        expect: Option<Expect>,
        parent_expect: Option<&ParentExpect>,
    ) -> Result<Entry, ClientError> {
        let body = PutEntryRequest {
            entry: entry.clone(),
            expect,
            parent_expect: parent_expect.cloned(),
        };
        let call = Call::new(
            Method::PUT,
            format!("{}/__meta/entry", self.base),
            "PUT /__meta/entry",
        )
        .json(&body);
        self.http.json(call).await
    }

    /// Creates `entry` unless an entry already exists at its path, in which case the existing
    /// one is returned. Safe to repeat: a create whose answer was lost shows up as `Exists`
    /// with the caller's own content, which the caller can recognise.
    pub async fn create_entry(&self, entry: &Entry) -> Result<Created, ClientError> {
        self.create_entry_fenced(entry, None).await
    }

    /// [`FilerClient::create_entry`] under a fencing token on the parent directory (see
    /// [`FilerClient::put_entry_fenced`]); a stale token is an error with code `fenced`.
    pub async fn create_entry_fenced(
        &self,
        entry: &Entry,
        fence: Option<&ParentExpect>,
    ) -> Result<Created, ClientError> {
        let mut attempt = 0;
        loop {
            match self
                .put_entry_fenced(entry, Some(Expect::Absent), fence)
                .await
            {
                Ok(e) => return Ok(Created::New(e)),
                Err(e) if e.code() == Some("fenced") => return Err(e),
                Err(e) if e.status() == Some(StatusCode::PRECONDITION_FAILED) => {
                    match self.get_entry(&entry.full_path).await? {
                        Some(existing) => return Ok(Created::Exists(existing)),
                        // Deleted between the two calls: try the create again.
                        None if attempt < 2 => attempt += 1,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes an entry (and, if `recursive`, everything under it).
    pub async fn delete_entry(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let call = Call::new(
            Method::DELETE,
            format!(
                "{}/__meta/entry?path={}&recursive={recursive}",
                self.base,
                urlencode(path)
            ),
            "DELETE /__meta/entry",
        );
        self.http.send(call).await.map(drop)
    }

    /// Lists a directory.
    pub async fn list(&self, q: &ListQuery) -> Result<ListResponse, ClientError> {
        let mut url = format!(
            "{}/__meta/list?dir={}&inclusive={}&reverse={}",
            self.base,
            urlencode(&q.dir),
            q.inclusive,
            q.reverse
        );
        if let Some(s) = &q.start {
            url.push_str(&format!("&start={}", urlencode(s)));
        }
        if let Some(l) = q.limit {
            url.push_str(&format!("&limit={l}"));
        }
        self.http
            .json(Call::new(Method::GET, url, "GET /__meta/list"))
            .await
    }

    /// Uploads a whole file to `path` (parents are created).
    pub async fn put_file(
        &self,
        path: &str,
        data: Bytes,
    ) -> Result<FileUploadResponse, ClientError> {
        let call = Call::new(
            Method::PUT,
            format!("{}{}", self.base, encode_path(path)),
            "PUT /{*path}",
        )
        .body(data);
        self.http.json(call).await
    }

    /// Downloads a whole file.
    pub async fn get_file(&self, path: &str) -> Result<Bytes, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}{}", self.base, encode_path(path)),
            "GET /{*path}",
        );
        self.http.bytes(call).await
    }

    /// One page of a directory in Kelp's entry shape, paged by name as the SeaweedFS file API
    /// pages (`last_file_name` exclusive). Reads `GET /__meta/list` (the file API answers in
    /// SeaweedFS's shape); a missing directory is a 404 `not_found`, a file a 409, as on the
    /// file API.
    pub async fn list_dir(
        &self,
        dir: &str,
        last_file_name: Option<&str>,
        limit: usize,
    ) -> Result<DirListing, ClientError> {
        let dir = match dir.trim_end_matches('/') {
            "" => "/".to_owned(),
            d => d.to_owned(),
        };
        let limit = limit.clamp(1, 10_000);
        let page = self
            .list(&ListQuery {
                dir: dir.clone(),
                start: last_file_name.filter(|l| !l.is_empty()).map(str::to_owned),
                inclusive: false,
                limit: Some(limit),
                reverse: false,
            })
            .await?;
        // `/__meta/list` lists a missing directory as empty; the file API's 404 is kept.
        if page.entries.is_empty() && dir != "/" && self.get_entry(&dir).await?.is_none() {
            return Err(ClientError::Api {
                url: format!("{}/__meta/list", self.base),
                status: StatusCode::NOT_FOUND,
                code: "not_found".to_owned(),
                message: format!("no entry at {dir}"),
                retry_after: None,
            });
        }
        let last_file_name = page
            .entries
            .last()
            .and_then(|e| e.full_path.rsplit('/').next())
            .map_or_else(|| last_file_name.unwrap_or("").to_owned(), str::to_owned);
        Ok(DirListing {
            path: dir,
            entries: page.entries,
            limit,
            last_file_name,
            should_display_load_more: page.has_more,
        })
    }

    /// Deletes a file or directory.
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let call = Call::new(
            Method::DELETE,
            format!("{}{}?recursive={recursive}", self.base, encode_path(path)),
            "DELETE /{*path}",
        );
        self.http.send(call).await.map(drop)
    }

    /// Renames `src` to `dst`.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<(), ClientError> {
        let call = Call::new(
            Method::POST,
            format!(
                "{}{}?mv.from={}",
                self.base,
                encode_path(dst),
                urlencode(src)
            ),
            "POST /{*path}",
        );
        self.http.send(call).await.map(drop)
    }
}
