//! Typed client of the broker: topics, publish (JSON or the binary batch), fetch, consumer-group
//! offsets and the admin flush.
//!
//! Publishes are sent once (never retried here): a publish whose answer was lost may have been
//! applied, so repeating it is the caller's decision. Fetches long-poll up to `wait_ms`, so
//! build the [`HttpClient`] with a timeout above the longest `wait_ms` you use.

use axum::http::{HeaderValue, Method, header};
use bytes::Bytes;

use super::master::urlencode;
use super::{Call, ClientError, HttpClient, base_url, origin_of, redirect_error};
use crate::api::broker::{
    Acks, BATCH_CONTENT_TYPE, BatchRecord, CommitOffsetRequest, CreateTopicRequest, FetchQuery,
    FetchResponse, FlushResponse, GroupOffsets, Isolation, PublishRequest, PublishResponse,
    TopicInfo, TopicList, encode_batch,
};

/// Most redirects one call follows.
const MAX_REDIRECTS: usize = 8;
/// The pause before following a redirect back to a broker this call already tried: while a
/// partition moves, its old and new owners may each name the other for a moment (a 307 means
/// the request was not applied, so repeating it is safe).
const LOOP_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Client of a broker, or of several sharing partitions.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    http: HttpClient,
    base: String,
    /// Every broker given: the redirects it follows go to these only.
    brokers: Vec<String>,
}

impl BrokerClient {
    /// A client of the broker at `addr` (`host:port` or a URL), or of the brokers of a
    /// comma-separated list (calls go to the first; a 307 to another of them — a partition's
    /// owner with `--ownership shared`, or the active broker — is followed).
    pub fn new(http: HttpClient, addr: &str) -> Self {
        let brokers: Vec<String> = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(base_url)
            .collect();
        Self {
            http,
            base: brokers.first().cloned().unwrap_or_else(|| base_url(addr)),
            brokers,
        }
    }

    /// Every broker this client was given, as base URLs (the first is where calls go).
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// A client of the same brokers whose calls go first to `base` (one of them, e.g. a
    /// partition's owner found by [`BrokerClient::locate`]).
    pub fn at(&self, base: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: base.to_owned(),
            brokers: self.brokers.clone(),
        }
    }

    /// The base URL of the broker serving partition `partition` of `ns/topic`: the one that
    /// answers a fetch of it, after the redirects of the others.
    pub async fn locate(
        &self,
        ns: &str,
        topic: &str,
        partition: u32,
    ) -> Result<String, ClientError> {
        let url = format!(
            "{}/partitions/{partition}/records?offset=0&limit=1",
            self.topic_url(ns, topic)
        );
        let call = Call::new(
            Method::GET,
            url,
            "GET /topics/{ns}/{topic}/partitions/{partition}/records",
        );
        let (resp, url) = self.exchange(call).await?;
        let _: FetchResponse = super::decode_json(url.clone(), resp).await?;
        origin_of(&url).ok_or_else(|| redirect_error(url, "an answer from no origin".to_owned()))
    }

    /// Sends `call` and decodes its JSON answer, following redirects to the brokers this
    /// client was given (never elsewhere: the call carries credentials).
    async fn send<T: serde::de::DeserializeOwned>(&self, call: Call<'_>) -> Result<T, ClientError> {
        let (resp, url) = self.exchange(call).await?;
        super::decode_json(url, resp).await
    }

    /// Sends `call`, following redirects to the brokers this client was given; returns the
    /// first answer that is not a redirect and the URL that gave it.
    async fn exchange(&self, call: Call<'_>) -> Result<(reqwest::Response, String), ClientError> {
        let mut call = call.accept_redirects();
        let mut tried: Vec<String> = origin_of(&call.url).into_iter().collect();
        for _ in 0..=MAX_REDIRECTS {
            let url = call.url.clone();
            let marked = url.contains("redirected=true");
            // A marked hop is not repeated as is on a 503 (the broker would refuse the mark
            // again); the handling below unmarks it.
            let attempt = if marked {
                call.clone().idempotent(false)
            } else {
                call.clone()
            };
            let resp = match self.http.send(attempt).await {
                Ok(resp) => resp,
                // Redirected here by a broker that thought this one owns the partition, which
                // thinks otherwise (their member views differ for a moment while a partition
                // moves): nothing was applied; ask this broker again shortly, unmarked, so it
                // can name the owner.
                Err(e) if e.code() == Some("not_owner") && marked => {
                    tracing::debug!(url = %url, "broker does not own the partition either; retrying");
                    tokio::time::sleep(LOOP_PAUSE).await;
                    call.url = unmark(&url);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status();
            if !status.is_redirection() {
                return Ok((resp, url));
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match location.as_deref().and_then(origin_of) {
                // Compared by host and port: the client's TLS turns a listed `host:port`
                // (`http://` by default) into `https://`, as the broker's Location says.
                Some(to) if self.brokers.iter().any(|b| authority(b) == authority(&to)) => {
                    if tried.iter().any(|t| authority(t) == authority(&to)) {
                        tokio::time::sleep(LOOP_PAUSE).await;
                    }
                    tried.push(to.clone());
                    tracing::debug!(from = %url, to = %to, "broker redirected");
                    call.url = location.unwrap_or_default();
                }
                to => {
                    return Err(redirect_error(
                        url,
                        format!(
                            "{status} to {}, not one of the brokers given (list every broker)",
                            to.as_deref().unwrap_or("an unusable Location")
                        ),
                    ));
                }
            }
        }
        Err(redirect_error(
            call.url,
            format!("more than {MAX_REDIRECTS} redirects between brokers"),
        ))
    }

    /// The broker's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn topic_url(&self, ns: &str, topic: &str) -> String {
        format!(
            "{}/topics/{}/{}",
            self.base,
            urlencode(ns),
            urlencode(topic)
        )
    }

    /// Creates a topic (or confirms it exists with the same partition count; a different
    /// count is a 409 `topic_exists`).
    pub async fn create_topic(
        &self,
        ns: &str,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicInfo, ClientError> {
        let call = Call::new(
            Method::POST,
            self.topic_url(ns, topic),
            "POST /topics/{ns}/{topic}",
        )
        .json(&CreateTopicRequest { partitions })
        .idempotent(true);
        self.send(call).await
    }

    /// Lists topics.
    pub async fn list_topics(&self) -> Result<TopicList, ClientError> {
        let call = Call::new(Method::GET, format!("{}/topics", self.base), "GET /topics");
        self.send(call).await
    }

    /// A topic's partitions and their offsets.
    pub async fn get_topic(&self, ns: &str, topic: &str) -> Result<TopicInfo, ClientError> {
        let call = Call::new(
            Method::GET,
            self.topic_url(ns, topic),
            "GET /topics/{ns}/{topic}",
        );
        self.send(call).await
    }

    /// Publishes JSON records.
    pub async fn publish(
        &self,
        ns: &str,
        topic: &str,
        req: &PublishRequest<'_>,
        acks: Acks,
    ) -> Result<PublishResponse, ClientError> {
        self.publish_if(ns, topic, req, acks, None).await
    }

    /// [`BrokerClient::publish`] only if the partition's log end offset is `if_log_end`
    /// (409 `log_end_mismatch` otherwise; see `PublishQuery::if_log_end`).
    pub async fn publish_if(
        &self,
        ns: &str,
        topic: &str,
        req: &PublishRequest<'_>,
        acks: Acks,
        if_log_end: Option<u64>,
    ) -> Result<PublishResponse, ClientError> {
        let mut url = format!(
            "{}/publish?acks={}",
            self.topic_url(ns, topic),
            acks.as_str()
        );
        if let Some(end) = if_log_end {
            url.push_str(&format!("&if_log_end={end}"));
        }
        let call = Call::new(Method::POST, url, "POST /topics/{ns}/{topic}/publish").json(req);
        self.send(call).await
    }

    /// Publishes records in the binary batch encoding.
    pub async fn publish_batch(
        &self,
        ns: &str,
        topic: &str,
        records: &[BatchRecord<'_>],
        acks: Acks,
    ) -> Result<PublishResponse, ClientError> {
        let mut buf = Vec::new();
        encode_batch(records, &mut buf);
        self.publish_encoded(ns, topic, Bytes::from(buf), acks)
            .await
    }

    /// Publishes an already encoded binary batch (see [`encode_batch`]).
    pub async fn publish_encoded(
        &self,
        ns: &str,
        topic: &str,
        batch: Bytes,
        acks: Acks,
    ) -> Result<PublishResponse, ClientError> {
        let url = format!(
            "{}/publish?acks={}",
            self.topic_url(ns, topic),
            acks.as_str()
        );
        let mut call =
            Call::new(Method::POST, url, "POST /topics/{ns}/{topic}/publish").body(batch);
        call.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(BATCH_CONTENT_TYPE),
        );
        self.send(call).await
    }

    /// Fetches records of one partition from an exact offset.
    pub async fn fetch(
        &self,
        ns: &str,
        topic: &str,
        partition: u32,
        q: &FetchQuery,
    ) -> Result<FetchResponse, ClientError> {
        let mut url = format!(
            "{}/partitions/{partition}/records?offset={}",
            self.topic_url(ns, topic),
            q.offset
        );
        if let Some(l) = q.limit {
            url.push_str(&format!("&limit={l}"));
        }
        if let Some(b) = q.max_bytes {
            url.push_str(&format!("&max_bytes={b}"));
        }
        if let Some(w) = q.wait_ms {
            url.push_str(&format!("&wait_ms={w}"));
        }
        if let Some(i) = q.isolation {
            let i = match i {
                Isolation::Durable => "durable",
                Isolation::Buffered => "buffered",
            };
            url.push_str(&format!("&isolation={i}"));
        }
        let call = Call::new(
            Method::GET,
            url,
            "GET /topics/{ns}/{topic}/partitions/{p}/records",
        );
        self.send(call).await
    }

    /// Commits a consumer group's offset of one partition (durably, in the filer).
    pub async fn commit_offset(
        &self,
        group: &str,
        req: &CommitOffsetRequest,
    ) -> Result<GroupOffsets, ClientError> {
        let call = Call::new(
            Method::PUT,
            format!("{}/groups/{}/offsets", self.base, urlencode(group)),
            "PUT /groups/{group}/offsets",
        )
        .json(req);
        self.send(call).await
    }

    /// A consumer group's committed offsets of `topic` (`namespace/topic`).
    pub async fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<GroupOffsets, ClientError> {
        let call = Call::new(
            Method::GET,
            format!(
                "{}/groups/{}/offsets?topic={}",
                self.base,
                urlencode(group),
                urlencode(topic)
            ),
            "GET /groups/{group}/offsets",
        );
        self.send(call).await
    }

    /// Makes everything buffered durable; answers once it is (503 naming a failing partition).
    pub async fn flush(&self) -> Result<FlushResponse, ClientError> {
        let call = Call::new(
            Method::POST,
            format!("{}/admin/flush", self.base),
            "POST /admin/flush",
        );
        self.send(call).await
    }
}

/// `url` without the `redirected=true` mark a broker adds when it redirects.
fn unmark(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| *kv != "redirected=true")
        .collect();
    if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// The `host:port` of a base URL.
fn authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    /// A listener on an ephemeral port and its base URL.
    async fn bind() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        (l, base)
    }

    /// Serves `GET /topics`: a 307 to `to` for the first `bounce` calls, then an empty list.
    fn serve(l: tokio::net::TcpListener, to: String, bounce: u32, hits: Arc<AtomicU32>) {
        let app = Router::new().route(
            "/topics",
            get(move || {
                let (to, hits) = (to.clone(), hits.clone());
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) < bounce {
                        (
                            axum::http::StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, format!("{to}/topics"))],
                        )
                            .into_response()
                    } else {
                        axum::Json(serde_json::json!({ "topics": [] })).into_response()
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    }

    #[tokio::test]
    async fn test_a_broker_refusing_a_marked_redirect_is_asked_again_unmarked() {
        // A names B (marking the hop); B does not own the partition either and refuses the
        // marked request with 503 `not_owner`; asked again without the mark, B answers.
        let ((la, a), (lb, b)) = (bind().await, bind().await);
        let to = format!("{b}/topics?redirected=true");
        let app = Router::new().route(
            "/topics",
            get(move || {
                let to = to.clone();
                async move {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, to)],
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(la, app).await.unwrap() });
        let (marked, plain) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (m, p) = (marked.clone(), plain.clone());
        let app = Router::new().route(
            "/topics",
            get(move |q: axum::extract::RawQuery| {
                let (m, p) = (m.clone(), p.clone());
                async move {
                    if q.0.as_deref() == Some("redirected=true") {
                        m.fetch_add(1, Ordering::SeqCst);
                        crate::http::ApiError::unavailable("not_owner", "not mine either", 1)
                            .into_response()
                    } else {
                        p.fetch_add(1, Ordering::SeqCst);
                        axum::Json(serde_json::json!({ "topics": [] })).into_response()
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(lb, app).await.unwrap() });
        let http = HttpClient::new(std::time::Duration::from_secs(5));
        let list = BrokerClient::new(http, &format!("{a},{b}"))
            .list_topics()
            .await
            .unwrap();
        assert!(list.topics.is_empty());
        // The marked hop was sent once (not retried as is), then once unmarked.
        assert_eq!(
            (marked.load(Ordering::SeqCst), plain.load(Ordering::SeqCst)),
            (1, 1)
        );
        assert_eq!(unmark("http://b/x?redirected=true"), "http://b/x");
        assert_eq!(
            unmark("http://b/x?offset=3&redirected=true&limit=1"),
            "http://b/x?offset=3&limit=1"
        );
    }

    #[tokio::test]
    async fn test_redirects_between_listed_brokers_are_followed_until_they_agree() {
        let ((la, a), (lb, b)) = (bind().await, bind().await);
        let (ha, hb) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        // While a partition moves, each names the other a few times.
        serve(la, b.clone(), 3, ha.clone());
        serve(lb, a.clone(), 2, hb.clone());
        let http = HttpClient::new(std::time::Duration::from_secs(5));
        let client = BrokerClient::new(http.clone(), &format!("{a},{b}"));
        let started = std::time::Instant::now();
        let list = client.list_topics().await.unwrap();
        assert!(list.topics.is_empty());
        assert_eq!(
            (ha.load(Ordering::SeqCst), hb.load(Ordering::SeqCst)),
            (3, 3)
        );
        // Going back to a broker already tried waits a moment each time.
        assert!(
            started.elapsed() >= LOOP_PAUSE * 4,
            "{:?}",
            started.elapsed()
        );

        // A redirect to a broker not given is not followed (the call carries credentials).
        let (lc, c) = bind().await;
        serve(lc, "http://10.255.255.1:1".to_owned(), 1, Arc::default());
        let err = BrokerClient::new(http, &c).list_topics().await.unwrap_err();
        assert!(
            err.to_string().contains("not one of the brokers given"),
            "{err}"
        );
        assert_eq!(authority("https://b:1"), "b:1");
    }
}
