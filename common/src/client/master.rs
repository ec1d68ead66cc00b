//! Typed client of the master: assign, lookup (with a short-lived location cache) and heartbeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;

use super::{Call, ClientError, HttpClient, base_url};
use crate::api::master::{
    AssignQuery, AssignResponse, DirStatus, Heartbeat, HeartbeatResponse, Location, LookupResponse,
};
use crate::ids::{FileId, VolumeId};

/// How long a lookup answer is trusted before asking the master again.
const LOOKUP_TTL: Duration = Duration::from_secs(5);

/// Client of one master.
#[derive(Debug)]
pub struct MasterClient {
    http: HttpClient,
    base: String,
    cache: Mutex<HashMap<VolumeId, (Instant, Vec<Location>)>>,
}

impl MasterClient {
    /// A client of the master at `addr` (`host:port`).
    pub fn new(http: HttpClient, addr: &str) -> Self {
        Self {
            http,
            base: base_url(addr),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The master's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Asks for a file id to write to. Retried on 503 (no writable volume yet) and transport
    /// errors: an assignment that was answered but lost only wastes keys.
    pub async fn assign(&self, query: &AssignQuery) -> Result<AssignResponse, ClientError> {
        let qs = serde_urlencoded_query(query);
        let call = Call::new(
            Method::POST,
            format!("{}/dir/assign{qs}", self.base),
            "POST /dir/assign",
        )
        .idempotent(true);
        self.http.json(call).await
    }

    /// The servers holding `volume_id`, from cache when fresh.
    pub async fn lookup(&self, volume_id: VolumeId) -> Result<Vec<Location>, ClientError> {
        if let Some((at, locs)) = self
            .cache
            .lock()
            .expect("lookup cache lock")
            .get(&volume_id)
            && at.elapsed() < LOOKUP_TTL
        {
            return Ok(locs.clone());
        }
        let locs = self.lookup_fresh(volume_id).await?;
        self.cache
            .lock()
            .expect("lookup cache lock")
            .insert(volume_id, (Instant::now(), locs.clone()));
        Ok(locs)
    }

    /// The servers holding `volume_id`, asking the master now.
    pub async fn lookup_fresh(&self, volume_id: VolumeId) -> Result<Vec<Location>, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}/dir/lookup?volumeId={volume_id}", self.base),
            "GET /dir/lookup",
        );
        let resp: LookupResponse = self.http.json(call).await?;
        Ok(resp.locations)
    }

    /// Looks up one file id (never cached): its servers and, when the cluster signs fid
    /// tokens, the tokens a read (`jwt`) and a delete (`auth`) of it need.
    pub async fn lookup_file(&self, fid: &FileId) -> Result<LookupResponse, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}/dir/lookup?fileId={fid}", self.base),
            "GET /dir/lookup",
        );
        self.http.json(call).await
    }

    /// Forgets the cached locations of a volume (after a server failed to serve it).
    pub fn invalidate(&self, volume_id: VolumeId) {
        self.cache
            .lock()
            .expect("lookup cache lock")
            .remove(&volume_id);
    }

    /// Sends a heartbeat (sent once: the next beat is the retry).
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<HeartbeatResponse, ClientError> {
        let call = Call::new(
            Method::POST,
            format!("{}/heartbeat", self.base),
            "POST /heartbeat",
        )
        .json(beat);
        self.http.json(call).await
    }

    /// The master's topology.
    pub async fn dir_status(&self) -> Result<DirStatus, ClientError> {
        let call = Call::new(
            Method::GET,
            format!("{}/dir/status", self.base),
            "GET /dir/status",
        );
        self.http.json(call).await
    }
}

fn serde_urlencoded_query(q: &AssignQuery) -> String {
    let mut parts = Vec::new();
    if let Some(c) = q.count {
        parts.push(format!("count={c}"));
    }
    if let Some(c) = &q.collection {
        parts.push(format!("collection={}", urlencode(c)));
    }
    if let Some(r) = &q.replication {
        parts.push(format!("replication={}", urlencode(r)));
    }
    if let Some(t) = &q.ttl {
        parts.push(format!("ttl={}", urlencode(t)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
