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

    /// Lists a directory through the SeaweedFS-style file API.
    pub async fn list_dir(
        &self,
        dir: &str,
        last_file_name: Option<&str>,
        limit: usize,
    ) -> Result<DirListing, ClientError> {
        let dir = if dir.ends_with('/') {
            dir.to_owned()
        } else {
            format!("{dir}/")
        };
        let mut url = format!("{}{}?limit={limit}", self.base, encode_path(&dir));
        if let Some(l) = last_file_name {
            url.push_str(&format!("&lastFileName={}", urlencode(l)));
        }
        let mut call = Call::new(Method::GET, url, "GET /{*path}");
        call.headers.insert(
            axum::http::header::ACCEPT,
            axum::http::HeaderValue::from_static("application/json"),
        );
        self.http.json(call).await
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
