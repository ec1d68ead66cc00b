//! The broker's guards through the real router: API keys on topics, publishes, fetches and
//! consumer-group offsets; the cluster token on `/admin/flush`; open probes; everything open
//! with security off. And `run_with_store` loading the credentials from its flags.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use common::security::{ApiKeys, CLUSTER_TOKEN_HEADER, Secret, Security, SecurityFlags};
use http_body_util::BodyExt;
use kelp_broker::http::router;
use kelp_broker::store::mem::MemStore;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::helpers::{broker, cfg};

const READ_KEY: &str = "read-key-0123456789";
const WRITE_KEY: &str = "write-key-0123456789";
const CLUSTER_TOKEN: &str = "cluster-token-0123456789";

fn security() -> Arc<Security> {
    Arc::new(Security {
        cluster_token: Some(Secret::new(CLUSTER_TOKEN)),
        api_keys: Some(ApiKeys::parse(&format!("read {READ_KEY}\nwrite {WRITE_KEY}")).unwrap()),
        ..Security::default()
    })
}

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Cluster(&'a str),
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: &str,
    cred: Cred<'_>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    match cred {
        Cred::None => {}
        Cred::Bearer(key) => req = req.header(header::AUTHORIZATION, format!("Bearer {key}")),
        Cred::Cluster(token) => req = req.header(CLUSTER_TOKEN_HEADER, token),
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const PUBLISH: &str = r#"{"records":[{"value":"aGk=","partition":0}]}"#;
const COMMIT: &str = r#"{"topic":"ns/t","partition":0,"offset":0}"#;

#[tokio::test]
async fn test_security_client_routes_need_an_api_key_of_the_right_scope() {
    let (b, _store) = broker(1, cfg()).await;
    let app = router(b, security());
    let writes = [
        (Method::POST, "/topics/ns/new", r#"{"partitions":1}"#),
        (Method::POST, "/topics/ns/t/publish?acks=buffered", PUBLISH),
        (Method::PUT, "/groups/g/offsets", COMMIT),
    ];
    let reads = [
        "/topics",
        "/topics/ns/t",
        "/topics/ns/t/partitions/0/records?offset=0&isolation=buffered",
        "/groups/g/offsets?topic=ns/t",
    ];
    for (method, uri, body) in &writes {
        let (s, e) = call(&app, method.clone(), uri, body, Cred::None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}: {e}");
        assert_eq!(e["code"], "api_key_required");
        let (s, e) = call(
            &app,
            method.clone(),
            uri,
            body,
            Cred::Bearer("bad-key-0123456789"),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(e["code"], "bad_api_key");
        let (s, e) = call(&app, method.clone(), uri, body, Cred::Bearer(READ_KEY)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(e["code"], "read_only_api_key");
    }
    for uri in reads {
        let (s, _) = call(&app, Method::GET, uri, "", Cred::None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // A write key does everything; the cluster token passes as any key.
    for (method, uri, body) in &writes {
        let (s, e) = call(&app, method.clone(), uri, body, Cred::Bearer(WRITE_KEY)).await;
        assert!(s.is_success(), "{method} {uri}: {s} {e}");
    }
    let (s, e) = call(
        &app,
        Method::PUT,
        "/groups/g2/offsets",
        COMMIT,
        Cred::Cluster(CLUSTER_TOKEN),
    )
    .await;
    assert!(s.is_success(), "{s} {e}");
    // A read key (and a write key) read.
    for key in [READ_KEY, WRITE_KEY] {
        for uri in reads {
            let (s, e) = call(&app, Method::GET, uri, "", Cred::Bearer(key)).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {e}");
        }
    }
}

#[tokio::test]
async fn test_security_admin_flush_needs_the_cluster_token() {
    let (b, _store) = broker(1, cfg()).await;
    let app = router(b, security());
    for cred in [
        Cred::None,
        Cred::Bearer(WRITE_KEY),
        Cred::Cluster("wrong-token-0123456789"),
    ] {
        let (s, e) = call(&app, Method::POST, "/admin/flush", "", cred).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{cred:?}: {e}");
    }
    let (s, e) = call(
        &app,
        Method::POST,
        "/admin/flush",
        "",
        Cred::Cluster(CLUSTER_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
}

#[tokio::test]
async fn test_security_probes_metrics_and_the_document_stay_open() {
    let (b, _store) = broker(1, cfg()).await;
    let app = router(b, security());
    for uri in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (s, _) = call(&app, Method::GET, uri, "", Cred::None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn test_security_off_leaves_every_route_open() {
    let (b, _store) = broker(1, cfg()).await;
    let app = router(b, Arc::default());
    let (s, e) = call(
        &app,
        Method::POST,
        "/topics/ns/t/publish?acks=buffered",
        PUBLISH,
        Cred::None,
    )
    .await;
    assert!(s.is_success(), "{s} {e}");
    let (s, _) = call(&app, Method::PUT, "/groups/g/offsets", COMMIT, Cred::None).await;
    assert!(s.is_success());
    let (s, _) = call(&app, Method::POST, "/admin/flush", "", Cred::None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        Method::GET,
        "/topics/ns/t",
        "",
        Cred::Bearer("whatever-0123456789"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn test_security_run_with_store_loads_the_credentials_of_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("cluster-token");
    std::fs::write(&token_file, format!("{CLUSTER_TOKEN}\n")).unwrap();
    let keys_file = tmp.path().join("api-keys");
    std::fs::write(&keys_file, format!("# clients\nwrite {WRITE_KEY}\n")).unwrap();
    let c = kelp_broker::Config {
        security: SecurityFlags {
            cluster_token_file: Some(token_file.clone()),
            api_keys_file: Some(keys_file),
            ..SecurityFlags::default()
        },
        ..cfg()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let server = tokio::spawn(kelp_broker::run_with_store(
        c,
        Arc::new(MemStore::new()),
        listener,
        stop.clone(),
    ));
    let open = BrokerClient::new(HttpClient::new(Duration::from_secs(10)), &addr);
    let flags = SecurityFlags {
        cluster_token_file: Some(token_file),
        ..SecurityFlags::default()
    };
    let http = flags
        .load()
        .unwrap()
        .apply(HttpClient::new(Duration::from_secs(10)))
        .unwrap();
    let internal = BrokerClient::new(http, &addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while internal.list_topics().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "broker never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = open.list_topics().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED), "{e}");
    internal.create_topic("ns", "t", 1).await.unwrap();
    internal.flush().await.unwrap();
    let e = open.flush().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED), "{e}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
