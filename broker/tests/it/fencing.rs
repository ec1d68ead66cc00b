//! Two brokers on one store: the one that recovers a partition last owns it; the other's
//! next commit is refused (fenced), it stops serving the partition and says so, and nothing
//! it acknowledged is lost or duplicated. And the conditional publish (`if_log_end`) that
//! lets a single writer (the schema registry) never append on top of records it missed.

use std::sync::Arc;

use common::api::broker::{Acks, Isolation};
use common::http::ApiError;
use kelp_broker::store::mem::MemStore;

use crate::helpers::{broker_with, cfg, fetch, key, offsets, publish, recs};

#[tokio::test]
async fn test_a_second_broker_takes_partitions_over_and_fences_the_first() {
    let store = Arc::new(MemStore::new());
    let first = broker_with(store.clone(), cfg()).await;
    first.create_topic(key(), 2).await.unwrap();
    assert_eq!(
        publish(&first, recs(0, 0, 3), Acks::Durable).await,
        vec![0, 1, 2]
    );

    // A second broker starts on the same store and recovers (takes) every partition.
    let second = broker_with(store.clone(), cfg()).await;
    assert_eq!(offsets(&second, 0), (0, 3, 3));

    // The first broker's next durable publish is refused by the fence, not acknowledged.
    let err = first
        .publish(&key(), recs(0, 3, 2), Acks::Durable, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "partition_fenced", "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    // From then on it refuses at once, and its readiness names the fence.
    let again = first
        .publish(&key(), recs(0, 5, 1), Acks::Durable, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(again.code(), "partition_fenced");
    assert!(
        first
            .readiness()
            .map_err(ApiError::from)
            .unwrap_err()
            .to_string()
            .contains("fenced")
    );

    // The owner goes on where the log ends: no gap, no duplicate, nothing stalled.
    assert_eq!(
        publish(&second, recs(0, 3, 2), Acks::Durable).await,
        vec![3, 4]
    );
    let f = fetch(&second, 0, 0, Isolation::Durable).await;
    let values: Vec<String> = f.records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, vec!["v0", "v1", "v2", "v3", "v4"]);
    assert_eq!(
        publish(&second, recs(1, 0, 1), Acks::Durable).await,
        vec![0]
    );
}

#[tokio::test]
async fn test_publish_if_log_end_appends_only_at_that_end() {
    let store = Arc::new(MemStore::new());
    let b = broker_with(store, cfg()).await;
    b.create_topic(key(), 2).await.unwrap();
    let ok = b
        .publish_if(&key(), recs(0, 0, 2), Acks::Durable, None, Some(0))
        .await
        .unwrap();
    assert_eq!(ok.response.offsets.len(), 2);
    // A writer that saw the log up to 1 (not 2) must not append on top of what it missed.
    let err = b
        .publish_if(&key(), recs(0, 2, 1), Acks::Durable, None, Some(1))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "log_end_mismatch", "{err}");
    assert_eq!(offsets(&b, 0), (0, 2, 2), "nothing was appended");
    let ok = b
        .publish_if(&key(), recs(0, 2, 1), Acks::Durable, None, Some(2))
        .await
        .unwrap();
    assert_eq!(ok.response.offsets[0].offset, 2);
    // The condition names one partition's end: records for two partitions are refused.
    let mut two = recs(0, 3, 1);
    two.extend(recs(1, 0, 1));
    let err = b
        .publish_if(&key(), two, Acks::Durable, None, Some(3))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "bad_condition");
}

#[tokio::test]
async fn test_deleted_topic_is_gone_and_can_be_created_anew() {
    let store = Arc::new(MemStore::new());
    let b = broker_with(store.clone(), cfg()).await;
    b.create_topic(key(), 1).await.unwrap();
    assert_eq!(
        publish(&b, recs(0, 0, 3), Acks::Durable).await,
        vec![0, 1, 2]
    );
    // Buffered records are dropped with the topic, and give their buffer bytes back.
    b.publish(&key(), recs(0, 3, 2), Acks::Buffered, None)
        .await
        .unwrap();
    b.delete_topic(&key()).await.unwrap();
    assert_eq!(b.buffered_bytes(), 0);
    assert_eq!(
        b.get_topic(&key())
            .map_err(ApiError::from)
            .unwrap_err()
            .code(),
        "unknown_topic"
    );
    assert!(store.segments(&key(), 0).is_empty());
    assert_eq!(
        b.delete_topic(&key())
            .await
            .map_err(ApiError::from)
            .unwrap_err()
            .code(),
        "unknown_topic"
    );
    // A new topic of the same name starts empty, also after a restart.
    b.create_topic(key(), 2).await.unwrap();
    assert_eq!(offsets(&b, 0), (0, 0, 0));
    assert_eq!(publish(&b, recs(1, 0, 1), Acks::Durable).await, vec![0]);
    let again = broker_with(store, cfg()).await;
    assert_eq!(offsets(&again, 0), (0, 0, 0));
    assert_eq!(offsets(&again, 1), (0, 1, 1));
}
