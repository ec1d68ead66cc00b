//! Typed client of the master: assign, lookup (with a short-lived location cache) and heartbeat.
//!
//! # Several masters
//! Built with a comma-separated list (`--master a:9333,b:9333`), the client follows the
//! leader: a call goes to the master that answered last; a standby answers 307 with the
//! leader's address, which the client then calls (with every header: the API key and cluster
//! token are Kelp's own, so the hop is not a cross-site redirect to strip them on) and
//! remembers. A master that cannot be reached, or answers 503 because no leader is elected
//! yet (or it was just deposed), makes the client go on to the next one; after a round over
//! all of them it waits and tries again, [`FAILOVER_ROUNDS`] rounds in all, so a call rides
//! out an election. Heartbeats are not routed: a volume server sends each master its own
//! ([`MasterClient::masters`], [`MasterClient::heartbeat_to`]), so standbys know the topology
//! when they take over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::sync::LockExt;

use super::{Call, ClientError, HttpClient, REDIRECT_CODE, base_url, origin_of, redirect_error};
use crate::api::master::{
    AssignQuery, AssignResponse, DirStatus, Heartbeat, HeartbeatResponse, Location, LookupResponse,
};
use crate::ids::{FileId, VolumeId};

/// How long a lookup answer is trusted before asking the master again.
const LOOKUP_TTL: Duration = Duration::from_secs(5);

/// Rounds over every master a call makes before it gives up (with several masters).
pub const FAILOVER_ROUNDS: u32 = 6;
/// The wait between two rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(500);
/// Most redirects one call follows.
const MAX_REDIRECTS: u32 = 4;
/// How long one call to one master may take when there are several (the next is tried then).
/// A master answers an assignment or a lookup in milliseconds (the leader's etcd round trip
/// included); one that takes seconds is cut off or hung, and every call in flight to it
/// stalls this long before failing over (it was 10 s: a silently cut leader stalled writes
/// for 10-11 s in the compose HA test).
const HOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Client of the master, or of several masters following their leader.
#[derive(Debug)]
pub struct MasterClient {
    http: HttpClient,
    /// Every master given, as base URLs.
    masters: Vec<String>,
    /// The master that answered last (perhaps one a redirect named that is not in the list).
    current: Mutex<String>,
    cache: Mutex<HashMap<VolumeId, (Instant, Vec<Location>)>>,
}

impl MasterClient {
    /// A client of the master at `addr` (`host:port`), or of the masters at `a,b,c`.
    pub fn new(http: HttpClient, addr: &str) -> Self {
        let mut masters: Vec<String> = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(base_url)
            .collect();
        if masters.is_empty() {
            masters.push(base_url(addr));
        }
        Self {
            http,
            current: Mutex::new(masters[0].clone()),
            masters,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The base URL of the master calls go to now (the leader, as far as this client knows).
    pub fn base(&self) -> String {
        self.current.lock_or_abort().clone()
    }

    /// Every master this client was given, as base URLs.
    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// Whether `url` is one of the masters' base URLs (or the current one).
    pub fn is_master(&self, url: &str) -> bool {
        self.masters.iter().any(|m| m == url) || self.base() == url
    }

    /// Sends the call `make` builds for a master's base URL to the leader, as the module doc
    /// says, and decodes its JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        make: impl Fn(&str) -> Call<'static>,
    ) -> Result<T, ClientError> {
        let several = self.masters.len() > 1;
        // With several masters the rounds are the retries: one attempt per hop, bounded, so a
        // standby between terms or a hung master costs one hop, not the client's full retries.
        let make = |base: &str| {
            let call = make(base).accept_redirects();
            if several {
                call.idempotent(false).with_timeout(HOP_TIMEOUT)
            } else {
                call
            }
        };
        let rounds = if several { FAILOVER_ROUNDS } else { 1 };
        let mut last = None;
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            let first = self.base();
            let order = std::iter::once(first.clone())
                .chain(self.masters.iter().filter(|m| **m != first).cloned());
            for base in order {
                match self.call_following(&base, &make).await {
                    Ok(v) => return Ok(v),
                    Err(e) if several && fails_over(&e) => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last.expect("at least one master was called"))
    }

    /// Calls `base`, following the redirects of standbys to the masters this client was
    /// given (never elsewhere: the call carries credentials); remembers who answered.
    async fn call_following<T: DeserializeOwned>(
        &self,
        base: &str,
        make: &impl Fn(&str) -> Call<'static>,
    ) -> Result<T, ClientError> {
        let mut base = base.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let call = make(&base);
            let url = call.url.clone();
            let resp = self.http.send(call).await?;
            let status = resp.status();
            if status.is_redirection() {
                let to = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(origin_of);
                match to {
                    Some(to) if self.masters.contains(&to) => {
                        tracing::debug!(from = %base, to = %to, "master redirected to its leader");
                        base = to;
                        continue;
                    }
                    // A leader this client cannot reach by that name (a container's internal
                    // name, say): the next master of the list is tried instead.
                    to => {
                        return Err(redirect_error(
                            url,
                            format!(
                                "{status} to {}, not one of the masters given",
                                to.as_deref().unwrap_or("an unusable Location")
                            ),
                        ));
                    }
                }
            }
            let v = super::decode_json(url, resp).await?;
            *self.current.lock_or_abort() = base;
            return Ok(v);
        }
        Err(redirect_error(
            base,
            format!("more than {MAX_REDIRECTS} redirects between masters"),
        ))
    }

    /// Asks for a file id to write to. Retried on 503 (no writable volume yet) and transport
    /// errors: an assignment that was answered but lost only wastes keys.
    pub async fn assign(&self, query: &AssignQuery) -> Result<AssignResponse, ClientError> {
        let qs = serde_urlencoded_query(query);
        self.call(|base| {
            Call::new(
                Method::POST,
                format!("{base}/dir/assign{qs}"),
                "POST /dir/assign",
            )
            .idempotent(true)
        })
        .await
    }

    /// The servers holding `volume_id`, from cache when fresh.
    pub async fn lookup(&self, volume_id: VolumeId) -> Result<Vec<Location>, ClientError> {
        if let Some((at, locs)) = self.cache.lock_or_abort().get(&volume_id)
            && at.elapsed() < LOOKUP_TTL
        {
            return Ok(locs.clone());
        }
        let locs = self.lookup_fresh(volume_id).await?;
        self.cache
            .lock_or_abort()
            .insert(volume_id, (Instant::now(), locs.clone()));
        Ok(locs)
    }

    /// The servers holding `volume_id`, asking the master now.
    pub async fn lookup_fresh(&self, volume_id: VolumeId) -> Result<Vec<Location>, ClientError> {
        let resp: LookupResponse = self
            .call(|base| {
                Call::new(
                    Method::GET,
                    format!("{base}/dir/lookup?volumeId={volume_id}"),
                    "GET /dir/lookup",
                )
            })
            .await?;
        Ok(resp.locations)
    }

    /// Looks up one file id (never cached): its servers and, when the cluster signs fid
    /// tokens, the tokens a read (`jwt`) and a delete (`auth`) of it need.
    pub async fn lookup_file(&self, fid: &FileId) -> Result<LookupResponse, ClientError> {
        self.call(|base| {
            Call::new(
                Method::GET,
                format!("{base}/dir/lookup?fileId={fid}"),
                "GET /dir/lookup",
            )
        })
        .await
    }

    /// Forgets the cached locations of a volume (after a server failed to serve it).
    pub fn invalidate(&self, volume_id: VolumeId) {
        self.cache.lock_or_abort().remove(&volume_id);
    }

    /// Sends a heartbeat to the master at `base` (one of [`MasterClient::masters`]), once: the
    /// next beat is the retry.
    pub async fn heartbeat_to(
        &self,
        base: &str,
        beat: &Heartbeat,
    ) -> Result<HeartbeatResponse, ClientError> {
        let call =
            Call::new(Method::POST, format!("{base}/heartbeat"), "POST /heartbeat").json(beat);
        self.http.json(call).await
    }

    /// The leader's topology.
    pub async fn dir_status(&self) -> Result<DirStatus, ClientError> {
        self.call(|base| Call::new(Method::GET, format!("{base}/dir/status"), "GET /dir/status"))
            .await
    }
}

/// Whether a call that failed this way may succeed on another master: it could not reach this
/// one, or this one has no leader to send it to (`no_leader`), is not the leader any more
/// (`not_leader`), lost its hold on the id state mid-call (`state_unavailable`), or redirected
/// where this client does not follow.
fn fails_over(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, code, .. } => {
            (*status == StatusCode::SERVICE_UNAVAILABLE
                && matches!(
                    code.as_str(),
                    "no_leader" | "not_leader" | "state_unavailable"
                ))
                || code == REDIRECT_CODE
        }
        ClientError::Decode { .. } => false,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::any;

    use super::*;

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// A leader answering assigns when the API key came along, counting its calls.
    async fn leader() -> (String, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = Router::new().route(
            "/dir/assign",
            any(move |headers: HeaderMap| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if headers.get(header::AUTHORIZATION).is_none() {
                        return crate::http::ApiError::unauthorized("api_key_required", "no key")
                            .into_response();
                    }
                    axum::Json(serde_json::json!({"fid": "3,01637037d6", "url": "v:1", "publicUrl": "v:1", "count": 1}))
                        .into_response()
                }
            }),
        );
        (serve(app).await, hits)
    }

    /// A standby: 307 to `leader`, or 503 `no_leader` when `leader` is empty.
    async fn standby(leader: String) -> (String, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = Router::new().fallback(any(move |uri: axum::http::Uri| {
            let (h, leader) = (h.clone(), leader.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if leader.is_empty() {
                    return crate::http::ApiError::unavailable("no_leader", "electing", 0)
                        .into_response();
                }
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("http://{leader}{uri}"))],
                )
                    .into_response()
            }
        }));
        (serve(app).await, hits)
    }

    fn client(masters: &str) -> MasterClient {
        let http = HttpClient::new(Duration::from_secs(5))
            .with_attempts(1)
            .with_default_header(
                header::AUTHORIZATION,
                axum::http::HeaderValue::from_static("Bearer k"),
            );
        MasterClient::new(http, masters)
    }

    fn a_dead_address() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// The client skips a dead master and one without a leader, follows a standby's 307 to the
    /// leader with its API key, and then calls the leader directly.
    #[tokio::test]
    async fn test_master_client_follows_the_leader() {
        crate::tls::install_default_provider();
        let (lead, lead_hits) = leader().await;
        let (redirecting, redirect_hits) = standby(lead.clone()).await;
        let (electing, electing_hits) = standby(String::new()).await;
        let c = client(&format!(
            "{},{electing},{redirecting},{lead}",
            a_dead_address()
        ));
        assert_eq!(c.masters().len(), 4);
        let a = c.assign(&AssignQuery::default()).await.unwrap();
        assert_eq!(a.fid, "3,01637037d6");
        assert_eq!(c.base(), format!("http://{lead}"));
        assert_eq!(electing_hits.load(Ordering::SeqCst), 1);
        assert_eq!(redirect_hits.load(Ordering::SeqCst), 1);
        c.assign(&AssignQuery::default()).await.unwrap();
        assert_eq!(lead_hits.load(Ordering::SeqCst), 2);
        assert_eq!(
            redirect_hits.load(Ordering::SeqCst),
            1,
            "the leader was remembered"
        );
        assert!(c.is_master(&format!("http://{lead}")));
    }

    /// A redirect to a host that is not one of the masters given is not followed (the call
    /// carries credentials): the client goes on to the next master instead.
    #[tokio::test]
    async fn test_master_client_follows_redirects_only_to_its_masters() {
        crate::tls::install_default_provider();
        let (elsewhere, elsewhere_hits) = leader().await;
        let (lead, lead_hits) = leader().await;
        let (redirecting, _) = standby(elsewhere).await;
        let c = client(&format!("{redirecting},{lead}"));
        c.assign(&AssignQuery::default()).await.unwrap();
        assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
        assert_eq!(lead_hits.load(Ordering::SeqCst), 1);
        assert_eq!(c.base(), format!("http://{lead}"));
    }

    /// One master: its errors come back as they are (no failover rounds, no waiting).
    #[tokio::test]
    async fn test_master_client_with_one_master_does_not_fail_over() {
        crate::tls::install_default_provider();
        let (electing, hits) = standby(String::new()).await;
        let c = client(&electing);
        let e = c.assign(&AssignQuery::default()).await.unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// A master that redirects to itself forever ends in an error, not a loop.
    #[tokio::test]
    async fn test_master_client_redirect_loop_is_bounded() {
        crate::tls::install_default_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = Router::new().fallback(any(move |uri: axum::http::Uri| {
            let (h, me) = (h.clone(), me.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("http://{me}{uri}"))],
                )
            }
        }));
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let e = client(&addr)
            .assign(&AssignQuery::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("redirects"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
    }

    #[test]
    fn test_origin_of_a_location() {
        assert_eq!(
            origin_of("http://a:1/dir/assign?x=1").as_deref(),
            Some("http://a:1")
        );
        assert_eq!(origin_of("https://b:2").as_deref(), Some("https://b:2"));
        assert_eq!(origin_of("/relative"), None);
        assert_eq!(origin_of("http:///x"), None);
    }
}
