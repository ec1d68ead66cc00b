//! Shared set-up: a broker over a `MemStore`, and records.

use std::borrow::Cow;
use std::sync::Arc;

use common::api::broker::{Acks, FetchQuery, FetchResponse, Isolation};
use kelp_broker::publish::InRecord;
use kelp_broker::store::TopicKey;
use kelp_broker::store::mem::MemStore;
use kelp_broker::{Broker, Config};
use tokio_util::sync::CancellationToken;

/// A config with short timers, for tests.
pub fn cfg() -> Config {
    Config {
        flush_interval_ms: 50,
        flush_linger_ms: 1,
        flush_retry_max_ms: 40,
        durable_timeout_ms: 5_000,
        shutdown_flush_timeout_ms: 5_000,
        kafka_port: 0,
        ..Config::default()
    }
}

/// A loaded broker over `store`.
pub async fn broker_with(store: Arc<MemStore>, cfg: Config) -> Arc<Broker> {
    let b = Broker::new(cfg, store, CancellationToken::new());
    b.clone().load_all().await;
    b
}

/// A loaded broker over a fresh store, with topic `ns/t` of `partitions` partitions.
pub async fn broker(partitions: u32, cfg: Config) -> (Arc<Broker>, Arc<MemStore>) {
    let store = Arc::new(MemStore::new());
    let b = broker_with(store.clone(), cfg).await;
    b.create_topic(key(), partitions).await.unwrap();
    (b, store)
}

/// The test topic.
pub fn key() -> TopicKey {
    TopicKey::new("ns", "t")
}

/// `n` records `v<start+i>` for partition `p`.
pub fn recs(p: u32, start: usize, n: usize) -> Vec<InRecord<'static>> {
    (start..start + n)
        .map(|i| InRecord {
            partition: Some(p),
            key: None,
            value: Cow::Owned(format!("v{i}").into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

/// Publishes and returns the offsets.
pub async fn publish(b: &Broker, records: Vec<InRecord<'_>>, acks: Acks) -> Vec<u64> {
    b.publish(&key(), records, acks, None)
        .await
        .unwrap()
        .response
        .offsets
        .iter()
        .map(|o| o.offset)
        .collect()
}

/// Fetches partition `p` from `offset`.
pub async fn fetch(b: &Broker, p: u32, offset: u64, isolation: Isolation) -> FetchResponse {
    let q = FetchQuery {
        offset,
        limit: Some(10_000),
        max_bytes: Some(64 << 20),
        wait_ms: None,
        isolation: Some(isolation),
        redirected: false,
    };
    serde_json::from_slice(&b.fetch(&key(), p, q).await.unwrap()).unwrap()
}

/// `(log_start, durable, log_end)` of partition `p`.
pub fn offsets(b: &Broker, p: u32) -> (u64, u64, u64) {
    let info = b.get_topic(&key()).unwrap();
    let p = &info.partitions[p as usize];
    (p.log_start_offset, p.durable_offset, p.log_end_offset)
}

pub use testkit::eventually;
