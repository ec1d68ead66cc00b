//! Tests of the serve loop: slowloris, load shedding, TLS, connect info and graceful drain.

use std::sync::atomic::AtomicUsize;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::client::{Call, ClientError, HttpClient};

/// Starts `router` with `opts` on a free port; returns its address, the shutdown token and the
/// serve task.
async fn start(
    router: Router,
    opts: ServeOptions,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_with(listener, router, shutdown.clone(), opts));
    (addr, shutdown, task)
}

fn health_router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

#[tokio::test]
async fn test_serve_closes_a_slowloris_connection() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let (addr, _shutdown, _task) = start(health_router(), opts).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    // One header byte every 200 ms, never finishing the header.
    let writer = tokio::spawn(async move {
        let header = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
            "a".repeat(200)
        );
        for b in header.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The server closes the connection (possibly after a 408): the read reaches its end.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    writer.abort();
    assert!(read.is_ok(), "the slow connection was never closed");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.contains("408"), "{text}");
}

#[tokio::test]
async fn test_serve_sheds_requests_beyond_max_in_flight() {
    let release = CancellationToken::new();
    let entered = Arc::new(AtomicUsize::new(0));
    let router = {
        let release = release.clone();
        let entered = entered.clone();
        Router::new().route(
            "/wait",
            get(move || {
                let release = release.clone();
                let entered = entered.clone();
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    release.cancelled().await;
                    "done"
                }
            }),
        )
    };
    let opts = ServeOptions {
        max_in_flight: 4,
        ..ServeOptions::default()
    };
    let (addr, _shutdown, _task) = start(router, opts).await;
    let client = HttpClient::new(Duration::from_secs(10)).with_attempts(1);
    let url = format!("http://{addr}/wait");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        let url = url.clone();
        calls.spawn(async move { client.bytes(Call::new(Method::GET, url, "GET /wait")).await });
    }
    // The 16 beyond the limit are answered at once, while 4 wait in the handler.
    let mut refused = 0;
    while refused < 16 {
        let result = tokio::time::timeout(Duration::from_secs(5), calls.join_next())
            .await
            .expect("the excess requests are answered at once")
            .unwrap()
            .unwrap();
        match result {
            Err(ClientError::Api {
                status,
                code,
                retry_after,
                ..
            }) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(code, "overloaded");
                assert_eq!(retry_after, Some(1));
                refused += 1;
            }
            other => panic!("expected a 503 overloaded, got {other:?}"),
        }
    }
    assert_eq!(entered.load(Ordering::SeqCst), 4);
    release.cancel();
    let mut served = 0;
    while let Some(result) = calls.join_next().await {
        assert_eq!(&result.unwrap().unwrap()[..], b"done");
        served += 1;
    }
    assert_eq!(served, 4);
    // The permits are back: a new request is served.
    let body = client
        .bytes(Call::new(Method::GET, &url, "GET /wait"))
        .await
        .unwrap();
    assert_eq!(&body[..], b"done");
}

#[tokio::test]
async fn test_serve_tls_round_trip_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::tls::dev::generate(dir.path(), &[], false).unwrap();
    let opts = ServeOptions {
        tls: Some(crate::tls::server_config(&files.cert, &files.key, None).unwrap()),
        ..ServeOptions::default()
    };
    let (addr, _shutdown, _task) = start(health_router(), opts).await;
    let tls_client = HttpClient::new(Duration::from_secs(5))
        .with_tls(crate::tls::client_config(&files.ca, None).unwrap());
    assert!(tls_client.is_tls());
    // An internal `http://host:port` address is sent as https.
    let url = format!("{}/healthz", crate::client::base_url(&addr.to_string()));
    let body = tls_client
        .bytes(Call::new(Method::GET, &url, "GET /healthz"))
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);

    // Plain HTTP to the TLS port fails cleanly, raw and through the plain client.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .expect("the server drops a plain http connection");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    let plain = HttpClient::new(Duration::from_secs(5)).with_attempts(1);
    let err = plain
        .bytes(Call::new(Method::GET, &url, "GET /healthz"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { .. }),
        "plain http to a tls port: {err:?}"
    );

    // The server keeps serving TLS.
    let body = tls_client
        .bytes(Call::new(Method::GET, &url, "GET /healthz"))
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);

    // A client trusting another CA is refused.
    let other = tempfile::tempdir().unwrap();
    let other = crate::tls::dev::generate(other.path(), &[], false).unwrap();
    let stranger = HttpClient::new(Duration::from_secs(5))
        .with_attempts(1)
        .with_tls(crate::tls::client_config(&other.ca, None).unwrap());
    assert!(
        stranger
            .bytes(Call::new(Method::GET, &url, "GET /healthz"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn test_serve_sends_default_headers_and_connect_info() {
    let router = Router::new().route(
        "/who",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: axum::http::HeaderMap| async move {
                let token = headers
                    .get("x-kelp-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                format!("{} {token}", peer.ip())
            },
        ),
    );
    let (addr, _shutdown, _task) = start(router, ServeOptions::default()).await;
    let client = HttpClient::new(Duration::from_secs(5)).with_default_header(
        HeaderName::from_static("x-kelp-test"),
        axum::http::HeaderValue::from_static("secret"),
    );
    assert!(!format!("{client:?}").contains("secret"));
    let body = client
        .bytes(Call::new(
            Method::GET,
            format!("http://{addr}/who"),
            "GET /who",
        ))
        .await
        .unwrap();
    assert_eq!(&body[..], b"127.0.0.1 secret");
}

#[tokio::test]
async fn test_serve_drains_in_flight_requests_on_shutdown() {
    let entered = CancellationToken::new();
    let router = {
        let entered = entered.clone();
        Router::new().route(
            "/slow",
            get(move || {
                let entered = entered.clone();
                async move {
                    entered.cancel();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }
            }),
        )
    };
    let opts = ServeOptions {
        drain: Duration::from_secs(5),
        ..ServeOptions::default()
    };
    let (addr, shutdown, task) = start(router, opts).await;
    let client = HttpClient::new(Duration::from_secs(5)).with_attempts(1);
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .bytes(Call::new(
                    Method::GET,
                    format!("http://{addr}/slow"),
                    "GET /slow",
                ))
                .await
        })
    };
    entered.cancelled().await;
    shutdown.cancel();
    let served = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the server returns once the request is done");
    served.unwrap().unwrap();
    assert_eq!(&call.await.unwrap().unwrap()[..], b"slow");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn test_serve_gives_up_draining_after_the_drain_period() {
    let router = Router::new().route("/hang", get(std::future::pending::<&'static str>));
    let opts = ServeOptions {
        drain: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let (addr, shutdown, task) = start(router, opts).await;
    let client = HttpClient::new(Duration::from_secs(30)).with_attempts(1);
    let _call = tokio::spawn(async move {
        client
            .bytes(Call::new(
                Method::GET,
                format!("http://{addr}/hang"),
                "GET /hang",
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the drain period bounds the shutdown")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
}
