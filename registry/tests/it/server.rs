//! `run_with_log` on a real socket: `/readyz` turns 200 once the log is replayed, and the
//! process-level routes answer.

use std::sync::Arc;
use std::time::Duration;

use kelp_registry::store::mem::MemLog;
use kelp_registry::{Config, run_with_log};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn test_run_serves_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let log = Arc::new(MemLog::new());
    let server = tokio::spawn(run_with_log(
        Config::default(),
        log,
        listener,
        shutdown.clone(),
    ));
    // The test is an outside client of the registry, not a service calling another one;
    // reqwest is built without a default TLS provider, so install Kelp's (ring) first.
    common::tls::install_default_provider();
    #[allow(clippy::disallowed_methods)]
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.get(format!("http://{addr}/readyz")).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client
        .post(format!("http://{addr}/subjects/s/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"schema":"\"string\""}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );
    assert_eq!(r.text().await.unwrap(), r#"{"id":1}"#);
    let m = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("registry_schemas_registered_total 1"), "{m}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
