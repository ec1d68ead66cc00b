//! The broker as the Kafka listener's backend, over an in-memory store: producer batches are
//! stored as sent (only the base offset rewritten) and read back whole over Kafka and as
//! records over HTTP; `acks=all` waits for the flush; an idempotent retry is answered with
//! its original offset, also by a broker restarted on the same store; HTTP records are served
//! to Kafka consumers as v2 batches.

use std::sync::Arc;

use bytes::Bytes;
use common::api::broker::{Acks, FetchQuery, FetchResponse, Isolation};
use kafka::backend::{ProduceOutcome, ProducedBatch};
use kafka::batch::{BatchInfo, OwnedRecord, decode_batches, encode_batch};
use kafka::{Backend, BackendError, Durability};
use kelp_broker::Broker;
use kelp_broker::kafka_backend::KafkaBackend;
use kelp_broker::store::TopicKey;
use kelp_broker::store::mem::MemStore;

use crate::helpers::{broker_with, cfg, recs};

/// A v2 batch of `n` records from a producer (`pid`, sequence `seq`), base offset 0.
fn producer_batch(pid: i64, seq: i32, n: usize, tag: &str) -> ProducedBatch {
    let records: Vec<OwnedRecord> = (0..n)
        .map(|i| OwnedRecord {
            offset: i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: (i != 1).then(|| Bytes::from(format!("{tag}-{i}"))),
            headers: vec![("h".to_owned(), Some(Bytes::from_static(b"\x00\xff")))],
        })
        .collect();
    let bytes = encode_batch(&records).unwrap();
    let mut raw = bytes.to_vec();
    // Stamp the producer id and sequence as an idempotent producer would (crc covers them).
    if pid >= 0 {
        raw[43..51].copy_from_slice(&pid.to_be_bytes());
        raw[51..53].copy_from_slice(&0i16.to_be_bytes());
        raw[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let info = BatchInfo::parse(&raw).unwrap();
    ProducedBatch {
        bytes: Bytes::from(raw),
        info,
    }
}

async fn kafka_broker(store: Arc<MemStore>) -> (Arc<Broker>, KafkaBackend) {
    let b = broker_with(store, cfg()).await;
    let backend = KafkaBackend::new(b.clone(), "kafka");
    (b, backend)
}

fn base(o: ProduceOutcome) -> i64 {
    match o {
        ProduceOutcome::Appended { base_offset, .. } => base_offset,
        ProduceOutcome::Duplicate { base_offset, .. } => base_offset,
    }
}

#[tokio::test]
async fn test_kafka_produce_durable_is_flushed_and_read_back_whole() {
    let store = Arc::new(MemStore::new());
    let (b, k) = kafka_broker(store.clone()).await;
    k.create_topic("events", 1).await.unwrap();
    let batch = producer_batch(-1, -1, 3, "a");
    let out = k
        .produce("events", 0, batch.clone(), Durability::Durable)
        .await
        .unwrap();
    assert_eq!(base(out), 0);
    k.wait_durable("events", 0, 3).await.unwrap();
    let offs = k.offsets("events", 0).await.unwrap();
    assert_eq!(
        (offs.high_watermark, offs.log_end),
        (3, 3),
        "durable when answered"
    );
    assert_eq!(
        store.segments(&TopicKey::new("kafka", "events"), 0).len(),
        1
    );

    // A second batch lands after it; a fetch inside the first returns it whole, unchanged
    // but for the base offset.
    let second = producer_batch(-1, -1, 2, "b");
    let second_end = 5;
    assert_eq!(
        base(
            k.produce("events", 0, second, Durability::Durable)
                .await
                .unwrap()
        ),
        3
    );
    k.wait_durable("events", 0, second_end).await.unwrap();
    let f = k.fetch("events", 0, 1, 1 << 20).await.unwrap();
    assert_eq!(&f.batches[8..batch.bytes.len()], &batch.bytes[8..]);
    let records = decode_batches(&f.batches).unwrap();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    assert_eq!(records[1].value, None, "a null value stays null");
    assert_eq!(records[3].value.as_deref(), Some(&b"b-0"[..]));
    assert_eq!(records[4].value, None);
    assert_eq!(records[0].headers[0].1.as_deref(), Some(&b"\x00\xff"[..]));
    assert_eq!(records[2].timestamp, 1_700_000_000_002);
    assert!(matches!(
        k.fetch("events", 0, 6, 1 << 20).await,
        Err(BackendError::OffsetOutOfRange(_))
    ));
    assert!(
        k.fetch("events", 0, 5, 1 << 20)
            .await
            .unwrap()
            .batches
            .is_empty()
    );

    // The HTTP API reads the same records; the segment cache path too after eviction.
    let q = FetchQuery {
        offset: 0,
        limit: Some(100),
        max_bytes: None,
        wait_ms: None,
        isolation: Some(Isolation::Durable),
        redirected: false,
    };
    let body = b
        .fetch(&TopicKey::new("kafka", "events"), 0, q)
        .await
        .unwrap();
    let http: FetchResponse = serde_json::from_slice(&body).unwrap();
    let values: Vec<Option<String>> = http.records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values.len(), 5);
    assert_eq!(values[0].as_deref(), Some("a-0"));
    assert_eq!(values[1], None);
}

#[tokio::test]
async fn test_kafka_idempotent_retry_is_not_stored_twice_across_restart() {
    let store = Arc::new(MemStore::new());
    let (b, k) = kafka_broker(store.clone()).await;
    k.create_topic("ids", 1).await.unwrap();
    let pid = k.allocate_producer_id().await.unwrap();
    let first = producer_batch(pid, 0, 4, "x");
    assert_eq!(
        base(
            k.produce("ids", 0, first.clone(), Durability::Durable)
                .await
                .unwrap()
        ),
        0
    );
    let dup = k
        .produce("ids", 0, first.clone(), Durability::Durable)
        .await
        .unwrap();
    assert!(
        matches!(dup, ProduceOutcome::Duplicate { base_offset: 0, .. }),
        "{dup:?}"
    );
    k.wait_durable("ids", 0, 4).await.unwrap();
    assert_eq!(store.segments(&TopicKey::new("kafka", "ids"), 0).len(), 1);
    assert!(matches!(
        k.produce(
            "ids",
            0,
            producer_batch(pid, 9, 1, "gap"),
            Durability::Durable
        )
        .await,
        Err(BackendError::OutOfOrderSequence(_))
    ));
    drop(k);
    drop(b);

    // A new broker on the same store (a restart) still knows the batch from the segment.
    let (b2, k2) = kafka_broker(store.clone()).await;
    let again = k2
        .produce("ids", 0, first, Durability::Durable)
        .await
        .unwrap();
    assert!(
        matches!(again, ProduceOutcome::Duplicate { base_offset: 0, .. }),
        "{again:?}"
    );
    let next = k2
        .produce(
            "ids",
            0,
            producer_batch(pid, 4, 2, "y"),
            Durability::Durable,
        )
        .await
        .unwrap();
    assert_eq!(base(next), 4);
    k2.wait_durable("ids", 0, 6).await.unwrap();
    assert_eq!(k2.offsets("ids", 0).await.unwrap().high_watermark, 6);
    let pid2 = k2.allocate_producer_id().await.unwrap();
    assert_ne!(pid2, pid, "producer ids are never reused after a restart");
    drop(b2);
}

#[tokio::test]
async fn test_http_records_are_served_to_kafka_as_batches() {
    let store = Arc::new(MemStore::new());
    let (b, k) = kafka_broker(store).await;
    b.create_topic(TopicKey::new("kafka", "t"), 1)
        .await
        .unwrap();
    let offs = b
        .publish(
            &TopicKey::new("kafka", "t"),
            recs(0, 0, 3),
            Acks::Durable,
            None,
        )
        .await
        .unwrap();
    assert_eq!(offs.response.offsets.len(), 3);
    let f = k.fetch("t", 0, 1, 1 << 20).await.unwrap();
    let records = decode_batches(&f.batches).unwrap();
    let got: Vec<(i64, Option<Bytes>)> = records.into_iter().map(|r| (r.offset, r.value)).collect();
    assert_eq!(
        got,
        vec![
            (1, Some(Bytes::from_static(b"v1"))),
            (2, Some(Bytes::from_static(b"v2")))
        ]
    );
}
