//! `run_with_store` on `127.0.0.1:0` through the typed client: graceful shutdown flushes.

use std::sync::Arc;
use std::time::Duration;

use common::api::broker::{Acks, BatchRecord, FetchQuery, PublishRecord, PublishRequest};
use common::client::HttpClient;
use common::client::broker::BrokerClient;
use kelp_broker::store::mem::MemStore;
use tokio_util::sync::CancellationToken;

use crate::helpers::{broker_with, cfg, key};

#[tokio::test]
async fn test_server_graceful_shutdown_flushes_buffered_records() {
    let store = Arc::new(MemStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let c = kelp_broker::Config {
        flush_interval_ms: 60_000,
        ..cfg()
    };
    let server = tokio::spawn(kelp_broker::run_with_store(
        c,
        store.clone(),
        listener,
        shutdown.clone(),
    ));
    let client = BrokerClient::new(HttpClient::new(Duration::from_secs(10)), &addr.to_string());
    let mut ready = false;
    for _ in 0..200 {
        if client.list_topics().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "broker did not become ready");
    client.create_topic("ns", "t", 2).await.unwrap();
    let req = PublishRequest {
        records: (0..10)
            .map(|i| PublishRecord {
                value: Some(format!("v{i}").into()),
                partition: Some(i % 2),
                ..PublishRecord::default()
            })
            .collect(),
    };
    let resp = client
        .publish("ns", "t", &req, Acks::Buffered)
        .await
        .unwrap();
    assert_eq!(resp.offsets.len(), 10);
    let resp = client
        .publish_batch(
            "ns",
            "t",
            &[BatchRecord {
                partition: Some(1),
                key: Some(b"k"),
                value: b"durable",
                headers: vec![],
            }],
            Acks::Durable,
        )
        .await
        .unwrap();
    assert_eq!(resp.offsets[0].offset, 5);
    let info = client.get_topic("ns", "t").await.unwrap();
    assert_eq!(
        info.partitions[0].durable_offset, 0,
        "partition 0 is only buffered"
    );
    let f = client
        .fetch("ns", "t", 1, &FetchQuery::at(0))
        .await
        .unwrap();
    assert_eq!(f.records.len(), 6);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    let p0 = store.segments(&key(), 0);
    assert_eq!(
        p0.last().map(|s| s.offset_max),
        Some(4),
        "buffered records flushed on shutdown"
    );

    // A new broker recovers what the old one flushed.
    let b = broker_with(store, cfg()).await;
    let info = b.get_topic(&key()).unwrap();
    assert_eq!(info.partitions[0].durable_offset, 5);
    assert_eq!(info.partitions[1].durable_offset, 6);
}
