//! Retention against an in-memory store: whole segments go, oldest first, by size or by age;
//! the newest always stays; reads below the new log start are 416; a restart agrees.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::api::broker::{Acks, FetchQuery, Isolation};
use common::http::ApiError;
use kelp_broker::store::mem::MemStore;

use crate::helpers::{broker, broker_with, cfg, eventually, fetch, key, offsets, publish, recs};

/// Publishes `n` durable batches of 10 records: `n` segments of offsets `10i..10i+9`.
async fn segments(b: &kelp_broker::Broker, n: usize) {
    for i in 0..n {
        publish(b, recs(0, i * 10, 10), Acks::Durable).await;
    }
}

/// The status of a fetch of partition 0 at `offset`.
async fn fetch_status(b: &kelp_broker::Broker, offset: u64) -> StatusCode {
    let q = FetchQuery {
        offset,
        limit: None,
        max_bytes: None,
        wait_ms: None,
        isolation: Some(Isolation::Durable),
        redirected: false,
    };
    match b.fetch(&key(), 0, q).await {
        Ok(_) => StatusCode::OK,
        Err(e) => ApiError::from(e).status(),
    }
}

#[tokio::test]
async fn test_retention_by_size_deletes_the_oldest_segments_and_keeps_the_newest() {
    let c = kelp_broker::Config {
        retention_check_ms: 20,
        ..cfg()
    };
    // Learn one segment's size first, then allow two and a half of them.
    let (probe, probe_store) = broker(1, cfg()).await;
    segments(&probe, 1).await;
    let seg_size = probe_store.segments(&key(), 0)[0].chunk.size;
    drop(probe);
    let (b, store) = broker(
        1,
        kelp_broker::Config {
            retention_bytes: seg_size * 5 / 2,
            ..c
        },
    )
    .await;
    segments(&b, 6).await;
    eventually("retention down to two segments", || {
        store.segments(&key(), 0).len() == 2
    })
    .await;
    let left: Vec<u64> = store
        .segments(&key(), 0)
        .iter()
        .map(|s| s.offset_min)
        .collect();
    assert_eq!(left, vec![40, 50], "the two newest stay, contiguous");
    assert_eq!(offsets(&b, 0), (40, 60, 60));
    assert_eq!(
        fetch_status(&b, 39).await,
        StatusCode::RANGE_NOT_SATISFIABLE
    );
    let f = fetch(&b, 0, 40, Isolation::Durable).await;
    assert_eq!(f.records.first().map(|r| r.offset), Some(40));
    assert_eq!(f.records.len(), 20);
    // The deleted segments' chunks are gone too.
    assert_eq!(store.blob_count(), 2);

    // A restart derives the same log start from the remaining entries.
    let again = broker_with(store.clone(), cfg()).await;
    assert_eq!(offsets(&again, 0), (40, 60, 60));
}

#[tokio::test]
async fn test_retention_by_age_keeps_only_the_newest_segment_once_all_are_old() {
    let (b, store) = broker(
        1,
        kelp_broker::Config {
            retention_check_ms: 20,
            // 36 ms.
            retention_hours: 0.00001,
            ..cfg()
        },
    )
    .await;
    segments(&b, 4).await;
    eventually("retention down to the newest segment", || {
        store.segments(&key(), 0).len() == 1
    })
    .await;
    assert_eq!(store.segments(&key(), 0)[0].offset_min, 30);
    assert_eq!(offsets(&b, 0).0, 30);
    // Publishing goes on after the deletions, at the next offset.
    assert_eq!(publish(&b, recs(0, 40, 1), Acks::Durable).await, vec![40]);
}

#[tokio::test]
async fn test_no_retention_configured_deletes_nothing() {
    let store = Arc::new(MemStore::new());
    let b = broker_with(
        store.clone(),
        kelp_broker::Config {
            retention_check_ms: 10,
            ..cfg()
        },
    )
    .await;
    b.create_topic(key(), 1).await.unwrap();
    segments(&b, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.segments(&key(), 0).len(), 3);
    assert_eq!(offsets(&b, 0).0, 0);
}
