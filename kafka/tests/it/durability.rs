//! Produce's acks reach the backend as the durability the contract names: acks=all →
//! `Durable`, acks=1 and acks=0 → `Buffered`; backend errors become Kafka error codes.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka::backend::*;
use kafka::batch::{self, OwnedRecord};
use kafka::{KafkaConfig, MemBackend};
use kafka_protocol::messages::*;
use tokio_util::sync::CancellationToken;

use crate::harness::{Client, name};

/// A [`MemBackend`] that records each produce's durability and can be told to fail.
#[derive(Default)]
struct Recording {
    inner: MemBackend,
    seen: Mutex<Vec<Durability>>,
    fail_with: Mutex<Option<BackendError>>,
}

#[async_trait::async_trait]
impl Backend for Recording {
    async fn list_topics(&self) -> Result<Vec<TopicMeta>, BackendError> {
        self.inner.list_topics().await
    }
    async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, BackendError> {
        self.inner.topic(name).await
    }
    async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMeta, BackendError> {
        self.inner.create_topic(name, partitions).await
    }
    async fn delete_topic(&self, name: &str) -> Result<(), BackendError> {
        self.inner.delete_topic(name).await
    }
    async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: ProducedBatch,
        durability: Durability,
    ) -> Result<ProduceOutcome, BackendError> {
        self.seen.lock().unwrap().push(durability);
        if let Some(e) = self.fail_with.lock().unwrap().clone() {
            return Err(e);
        }
        self.inner
            .produce(topic, partition, batch, durability)
            .await
    }
    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BackendError> {
        self.inner.offsets(topic, partition).await
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched, BackendError> {
        self.inner.fetch(topic, partition, offset, max_bytes).await
    }
    async fn wait_for_data(&self, topic: &str, partition: u32, offset: i64) {
        self.inner.wait_for_data(topic, partition, offset).await
    }
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, BackendError> {
        self.inner
            .offset_for_timestamp(topic, partition, timestamp_ms)
            .await
    }
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        offset: CommittedOffset,
    ) -> Result<(), BackendError> {
        self.inner.commit_offset(group, topic, offset).await
    }
    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, BackendError> {
        self.inner.committed_offsets(group, topic).await
    }
    async fn allocate_producer_id(&self) -> Result<i64, BackendError> {
        self.inner.allocate_producer_id().await
    }
}

fn produce(acks: i16) -> ProduceRequest {
    let rec = OwnedRecord {
        offset: 0,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: vec![],
    };
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(batch::encode_batch(&[rec]).unwrap());
    let mut t = produce_request::TopicProduceData::default();
    t.name = name("d");
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.topic_data = vec![t];
    r
}

#[tokio::test]
async fn test_acks_map_to_durability_and_backend_errors_to_codes() {
    let backend = Arc::new(Recording::default());
    backend.inner.create_topic("d", 1).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(kafka::serve(
        listener,
        backend.clone(),
        KafkaConfig::default(),
        shutdown.clone(),
    ));
    let mut c = Client::connect(addr).await;
    for acks in [-1, 1] {
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce(acks)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let (_, f) = c.frame(ApiKey::Produce, 9, &produce(0));
    c.send_raw(&f).await;
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce(2)).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );
    assert_eq!(
        *backend.seen.lock().unwrap(),
        vec![
            Durability::Durable,
            Durability::Buffered,
            Durability::Buffered
        ]
    );
    for (err, code) in [
        (BackendError::Unavailable("x".into()), 7),
        (BackendError::OutOfOrderSequence("x".into()), 45),
        (BackendError::InvalidProducerEpoch("x".into()), 47),
        (BackendError::TooLarge("x".into()), 10),
        (BackendError::Internal("x".into()), -1),
    ] {
        *backend.fail_with.lock().unwrap() = Some(err);
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce(-1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, code);
    }
    // Shutdown ends serve.
    shutdown.cancel();
    drop(c);
    tokio::time::timeout(std::time::Duration::from_secs(15), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
