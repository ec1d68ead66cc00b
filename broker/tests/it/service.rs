//! Publish, flush, fetch and recovery against an in-memory store.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use common::api::broker::{Acks, FetchQuery, FetchResponse, Isolation, partition_for_key};
use common::http::ApiError;
use kelp_broker::publish::InRecord;
use kelp_broker::store::mem::MemStore;
use kelp_broker::store::{SegmentMeta, TopicKey};

use crate::helpers::{broker, broker_with, cfg, eventually, fetch, key, offsets, publish, recs};

/// Checks that the store's segments of partition `p` follow each other without gap or overlap.
fn assert_contiguous(store: &MemStore, p: u32) {
    let segs = store.segments(&key(), p);
    let mut next = segs.first().map_or(0, |s| s.offset_min);
    for s in &segs {
        assert_eq!(
            s.offset_min,
            next,
            "gap or overlap before segment {}",
            s.path()
        );
        next = s.offset_max + 1;
    }
}

#[tokio::test]
async fn test_publish_durable_waits_for_flush() {
    let (b, store) = broker(1, cfg()).await;
    let offs = publish(&b, recs(0, 0, 5), Acks::Durable).await;
    assert_eq!(offs, vec![0, 1, 2, 3, 4]);
    // Answered only once the segment is committed.
    assert_eq!(offsets(&b, 0), (0, 5, 5));
    let segs = store.segments(&key(), 0);
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].offset_min, segs[0].offset_max), (0, 4));
    assert_eq!(
        segs[0].path(),
        "/topics/ns/t/p0000/00000000000000000000.seg"
    );
    let ext = segs[0].extended();
    assert_eq!(ext["record_count"], "5");
    assert!(!ext.contains_key("trace_id"), "no trace id without tracing");
    let f = fetch(&b, 0, 0, Isolation::Durable).await;
    let values: Vec<_> = f.records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, vec!["v0", "v1", "v2", "v3", "v4"]);
    assert_eq!(
        (f.next_offset, f.durable_offset, f.log_end_offset),
        (5, 5, 5)
    );
    assert_contiguous(&store, 0);
}

#[tokio::test]
async fn test_concurrent_durable_publishers_share_flushes() {
    let c = kelp_broker::Config {
        flush_linger_ms: 5,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            publish(&b, recs(0, i * 10, 10), Acks::Durable).await
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..500).collect::<Vec<_>>());
    assert_eq!(offsets(&b, 0), (0, 500, 500));
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(
        commits < 50,
        "group commit: {commits} flushes for 50 publishes"
    );
    assert_contiguous(&store, 0);
}

#[tokio::test]
async fn test_segments_are_written_concurrently_and_committed_in_offset_order() {
    // The first segment's volume write is slow; the segments sealed after it are written
    // meanwhile (the pipeline holds four flushes), finish first, and still wait for it: the
    // commits, and every durable answer, follow offset order.
    let c = kelp_broker::Config {
        flush_pipeline: 4,
        flush_linger_ms: 0,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    store
        .faults
        .slow_next_write_us
        .store(400_000, Ordering::SeqCst);
    let first = {
        let b = b.clone();
        tokio::spawn(async move { publish(&b, recs(0, 0, 1), Acks::Durable).await })
    };
    eventually("the first segment's write", || {
        store.max_writes_in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut later = Vec::new();
    for i in 1..4 {
        let b = b.clone();
        later.push(tokio::spawn(async move {
            publish(&b, recs(0, i, 1), Acks::Durable).await
        }));
        // Each publish arrives once the previous one's flush started: one segment each.
        eventually("the publish's flush", || {
            store.assigns.load(Ordering::SeqCst) == i as u64 + 1
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        later.iter().all(|t| !t.is_finished()),
        "a segment above a write in flight was answered before it"
    );
    assert_eq!(
        offsets(&b, 0).1,
        0,
        "nothing durable before the first commit"
    );
    assert_eq!(first.await.unwrap(), vec![0]);
    for (i, t) in later.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), vec![i as u64 + 1]);
    }
    assert!(
        store.max_writes_in_flight.load(Ordering::SeqCst) >= 2,
        "segments were written one at a time"
    );
    let order = store.commit_order.lock().unwrap().clone();
    assert_eq!(order, vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
    assert_eq!(offsets(&b, 0), (0, 4, 4));
    assert_contiguous(&store, 0);
}

#[tokio::test]
async fn test_a_pipeline_of_one_writes_one_segment_at_a_time() {
    let c = kelp_broker::Config {
        flush_pipeline: 1,
        flush_linger_ms: 0,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    store.faults.delay_us.store(20_000, Ordering::SeqCst);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { publish(&b, recs(0, i, 1), Acks::Durable).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.max_writes_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(offsets(&b, 0), (0, 6, 6));
    assert_contiguous(&store, 0);
}

#[tokio::test]
async fn test_durable_publish_on_an_idle_partition_flushes_without_lingering() {
    // A linger of a minute would hold every publish below for a minute if the flusher
    // lingered on an idle partition; it lingers only while another flush is in flight.
    let c = kelp_broker::Config {
        flush_linger_ms: 60_000,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    for i in 0..3 {
        let offs = tokio::time::timeout(
            Duration::from_secs(20),
            publish(&b, recs(0, i, 1), Acks::Durable),
        )
        .await
        .expect("a durable publish on an idle partition waits for no linger");
        assert_eq!(offs, vec![i as u64]);
    }
    assert_eq!(store.segments(&key(), 0).len(), 3, "one flush per publish");
}

#[tokio::test]
async fn test_publish_buffered_returns_before_flush_and_is_flushed_by_interval() {
    let c = kelp_broker::Config {
        flush_interval_ms: 300,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    let started = Instant::now();
    publish(&b, recs(0, 0, 3), Acks::Buffered).await;
    assert_eq!(offsets(&b, 0), (0, 0, 3), "answered while only in memory");
    // Not visible by default, visible with isolation=buffered.
    assert!(fetch(&b, 0, 0, Isolation::Durable).await.records.is_empty());
    assert_eq!(fetch(&b, 0, 0, Isolation::Buffered).await.records.len(), 3);
    eventually("interval flush", || offsets(&b, 0).1 == 3).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "flushed by the interval, not at once"
    );
    assert_eq!(store.segments(&key(), 0).len(), 1);
}

#[tokio::test]
async fn test_buffered_publish_is_flushed_at_flush_bytes() {
    let c = kelp_broker::Config {
        flush_interval_ms: 60_000,
        flush_bytes: 1000,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    publish(&b, recs(0, 0, 5), Acks::Buffered).await;
    assert_eq!(offsets(&b, 0).1, 0, "small buffer waits for the interval");
    let big: Vec<InRecord<'static>> = (0..3)
        .map(|_| InRecord {
            partition: Some(0),
            key: None,
            value: Cow::Owned(vec![7u8; 500]),
            headers: Vec::new(),
        })
        .collect();
    publish(&b, big, Acks::Buffered).await;
    eventually("size-triggered flush", || offsets(&b, 0).1 == 8).await;
    let first = store.segments(&key(), 0)[0].clone();
    assert!(
        first.offset_max >= 5,
        "the first five records waited for the size trigger instead of a flush of their own: {first:?}"
    );
}

#[tokio::test]
async fn test_failing_store_keeps_data_retries_and_recovers_without_gap() {
    let (b, store) = broker(1, cfg()).await;
    store.faults.write.store(true, Ordering::SeqCst);
    publish(&b, recs(0, 0, 10), Acks::Buffered).await;
    eventually("readyz reports the failure", || b.readiness().is_err()).await;
    let err = b.readiness().map_err(ApiError::from).unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.to_string().contains("ns/t partition 0"), "{err}");
    publish(&b, recs(0, 10, 5), Acks::Buffered).await;
    assert_eq!(offsets(&b, 0), (0, 0, 15));
    assert_eq!(fetch(&b, 0, 0, Isolation::Buffered).await.records.len(), 15);
    eventually("the flush is retried", || {
        store.assigns.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(store.segments(&key(), 0).is_empty());

    store.faults.write.store(false, Ordering::SeqCst);
    eventually("recovery", || offsets(&b, 0).1 == 15).await;
    assert!(b.readiness().is_ok());
    assert_contiguous(&store, 0);
    let f = fetch(&b, 0, 0, Isolation::Durable).await;
    let values: Vec<_> = f.records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, (0..15).map(|i| format!("v{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn test_lost_commit_answer_is_detected_as_success() {
    let (b, store) = broker(1, cfg()).await;
    store.faults.lose_commit_answers.store(1, Ordering::SeqCst);
    publish(&b, recs(0, 0, 4), Acks::Durable).await;
    assert_eq!(offsets(&b, 0), (0, 4, 4));
    assert_eq!(
        store.segments(&key(), 0).len(),
        1,
        "the retry found its own entry"
    );
    assert_eq!(
        store.assigns.load(Ordering::SeqCst),
        1,
        "the segment was not rewritten"
    );
}

#[tokio::test]
async fn test_durable_publish_times_out_with_503_and_is_flushed_later() {
    let c = kelp_broker::Config {
        durable_timeout_ms: 300,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    store.faults.commit.store(true, Ordering::SeqCst);
    let err = b
        .publish(&key(), recs(0, 0, 2), Acks::Durable, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.code(), "not_durable_yet");
    assert!(err.to_string().contains("will still be flushed"), "{err}");
    store.faults.commit.store(false, Ordering::SeqCst);
    eventually("late flush", || offsets(&b, 0).1 == 2).await;
}

#[tokio::test]
async fn test_buffer_full_is_503_and_loses_nothing() {
    let c = kelp_broker::Config {
        max_buffer_mb: 1,
        max_batch_bytes: 1 << 20,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    store.faults.write.store(true, Ordering::SeqCst);
    let big = |n: usize| -> Vec<InRecord<'static>> {
        (0..n)
            .map(|_| InRecord {
                partition: Some(0),
                key: None,
                value: Cow::Owned(vec![1u8; 100_000]),
                headers: Vec::new(),
            })
            .collect()
    };
    publish(&b, big(6), Acks::Buffered).await;
    let err = b
        .publish(&key(), big(6), Acks::Buffered, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "buffer_full");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(offsets(&b, 0).2, 6, "the refused records were not appended");
    assert!(b.buffered_bytes() <= b.cfg.max_buffer());
    store.faults.write.store(false, Ordering::SeqCst);
    eventually("flush after the store recovers", || offsets(&b, 0).1 == 6).await;
    assert_eq!(b.buffered_bytes(), 0, "memory is released once durable");
    publish(&b, big(6), Acks::Buffered).await;
}

#[tokio::test]
async fn test_recovery_from_store_entries() {
    let store = Arc::new(MemStore::new());
    {
        let b = broker_with(store.clone(), cfg()).await;
        b.create_topic(key(), 3).await.unwrap();
        // Partition 0: one record at offset 0. Partition 1: two segments. Partition 2: empty.
        publish(&b, recs(0, 0, 1), Acks::Durable).await;
        publish(&b, recs(1, 0, 3), Acks::Durable).await;
        publish(&b, recs(1, 3, 4), Acks::Durable).await;
    }
    let b = broker_with(store.clone(), cfg()).await;
    assert_eq!(offsets(&b, 0), (0, 1, 1), "single segment at offset 0");
    assert_eq!(offsets(&b, 1), (0, 7, 7));
    assert_eq!(offsets(&b, 2), (0, 0, 0));
    // Reads come from the segments now.
    let f = fetch(&b, 1, 2, Isolation::Durable).await;
    assert_eq!(
        f.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(f.records[0].value.as_deref(), Some("v2"));
    // Appends continue after the recovered offsets.
    assert_eq!(publish(&b, recs(0, 1, 2), Acks::Durable).await, vec![1, 2]);
    assert_eq!(publish(&b, recs(2, 0, 1), Acks::Durable).await, vec![0]);
}

#[tokio::test]
async fn test_recovery_log_start_from_first_segment_and_416_below_it() {
    let store = Arc::new(MemStore::new());
    let source = Arc::new(MemStore::new());
    {
        // Write segments at offsets 0..5 and 5..9 through a broker, then keep only the second.
        let b = broker_with(source.clone(), cfg()).await;
        b.create_topic(key(), 1).await.unwrap();
        publish(&b, recs(0, 0, 5), Acks::Durable).await;
        publish(&b, recs(0, 5, 4), Acks::Durable).await;
    }
    let segs = source.segments(&key(), 0);
    let second: SegmentMeta = segs[1].clone();
    let blob = kelp_broker::store::Store::read_segment(
        source.as_ref(),
        &kelp_broker::store::SegmentRef {
            offset_min: second.offset_min,
            offset_max: second.offset_max,
            fid: second.chunk.fid,
            size: second.chunk.size,
            ts_max: second.ts_max,
        },
    )
    .await
    .unwrap();
    kelp_broker::store::Store::create_topic(
        store.as_ref(),
        &kelp_broker::store::TopicConf {
            key: key(),
            partitions: 1,
        },
    )
    .await
    .unwrap();
    store.insert_segment(second, blob);
    let b = broker_with(store, cfg()).await;
    assert_eq!(offsets(&b, 0), (5, 9, 9));
    let err = b
        .fetch(&key(), 0, query(3))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let f = fetch(&b, 0, 5, Isolation::Durable).await;
    assert_eq!(f.records.first().map(|r| r.offset), Some(5));
    assert_eq!(f.records.len(), 4);
}

fn query(offset: u64) -> FetchQuery {
    FetchQuery {
        offset,
        limit: None,
        max_bytes: None,
        wait_ms: None,
        isolation: None,
        redirected: false,
    }
}

#[tokio::test]
async fn test_fetch_416_bounds_and_end_is_empty() {
    let (b, _store) = broker(1, cfg()).await;
    publish(&b, recs(0, 0, 3), Acks::Durable).await;
    let err = b
        .fetch(&key(), 0, query(4))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let common::http::ApiError::RangeNotSatisfiable { detail, .. } = err else {
        panic!("not a 416")
    };
    assert_eq!(
        detail,
        serde_json::json!({"log_start_offset": 0, "log_end_offset": 3})
    );
    let f = fetch(&b, 0, 3, Isolation::Durable).await;
    assert!(f.records.is_empty());
    assert_eq!(f.next_offset, 3);
    let err = b
        .fetch(&key(), 5, query(0))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_fetch_limits_and_max_bytes() {
    let (b, _store) = broker(1, cfg()).await;
    publish(&b, recs(0, 0, 20), Acks::Durable).await;
    let q = FetchQuery {
        limit: Some(4),
        ..query(3)
    };
    let f: FetchResponse = serde_json::from_slice(&b.fetch(&key(), 0, q).await.unwrap()).unwrap();
    assert_eq!(
        f.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert_eq!(f.next_offset, 7);
    let q = FetchQuery {
        max_bytes: Some(1),
        ..query(0)
    };
    let f: FetchResponse = serde_json::from_slice(&b.fetch(&key(), 0, q).await.unwrap()).unwrap();
    assert_eq!(f.records.len(), 1, "at least one record");
}

#[tokio::test]
async fn test_fetch_reads_segments_when_tail_is_evicted_and_reports_corruption() {
    let c = kelp_broker::Config {
        tail_cache_mb: 0,
        ..cfg()
    };
    let (b, store) = broker(1, c).await;
    publish(&b, recs(0, 0, 3), Acks::Durable).await;
    publish(&b, recs(0, 3, 3), Acks::Durable).await;
    let f = fetch(&b, 0, 1, Isolation::Durable).await;
    assert_eq!(
        f.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(f.records[4].value.as_deref(), Some("v5"));

    // A corrupt segment is a 5xx naming its fid, never a silent skip.
    let (b2, store2) = broker(
        1,
        kelp_broker::Config {
            tail_cache_mb: 0,
            ..cfg()
        },
    )
    .await;
    publish(&b2, recs(0, 0, 3), Acks::Durable).await;
    let seg = store2.segments(&key(), 0)[0].clone();
    store2.corrupt_blob(&seg.chunk.fid, Bytes::from_static(b"garbage"));
    let err = b2
        .fetch(&key(), 0, query(0))
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert!(err.status().is_server_error());
    assert!(
        err.to_string().contains(&seg.chunk.fid.to_string()),
        "{err}"
    );
    drop(store);
}

#[tokio::test]
async fn test_fetch_binary_values_use_b64() {
    let (b, _store) = broker(1, cfg()).await;
    let r = InRecord {
        partition: Some(0),
        key: Some(Cow::Owned(vec![0xff, 0xfe])),
        value: Cow::Owned(vec![0x80, 0x00]),
        headers: vec![(Cow::Borrowed("h"), Cow::Borrowed("v"))],
    };
    publish(&b, vec![r], Acks::Durable).await;
    let f = fetch(&b, 0, 0, Isolation::Durable).await;
    let rec = &f.records[0];
    assert_eq!(rec.key, None);
    assert_eq!(rec.key_b64.as_deref(), Some("//4="));
    assert_eq!(rec.value, None);
    assert_eq!(rec.value_b64.as_deref(), Some("gAA="));
    assert_eq!(rec.headers.get("h").map(String::as_str), Some("v"));
    assert!(rec.timestamp_ms > 0);
}

#[tokio::test]
async fn test_partition_by_key_hash_and_round_robin() {
    let (b, _store) = broker(4, cfg()).await;
    let keyed: Vec<InRecord<'static>> = ["a", "b", "a", "c"]
        .iter()
        .map(|k| InRecord {
            partition: None,
            key: Some(Cow::Owned(k.as_bytes().to_vec())),
            value: Cow::Borrowed(b"x"),
            headers: Vec::new(),
        })
        .collect();
    let resp = b
        .publish(&key(), keyed, Acks::Buffered, None)
        .await
        .unwrap()
        .response;
    let parts: Vec<u32> = resp.offsets.iter().map(|o| o.partition).collect();
    assert_eq!(parts[0], partition_for_key(b"a", 4));
    assert_eq!(parts[0], parts[2], "same key, same partition");
    assert_eq!(parts[1], partition_for_key(b"b", 4));
    let plain: Vec<InRecord<'static>> = (0..8)
        .map(|_| InRecord {
            partition: None,
            key: None,
            value: Cow::Borrowed(b"x"),
            headers: Vec::new(),
        })
        .collect();
    let resp = b
        .publish(&key(), plain, Acks::Buffered, None)
        .await
        .unwrap()
        .response;
    let mut counts = [0; 4];
    for o in &resp.offsets {
        counts[o.partition as usize] += 1;
    }
    assert_eq!(counts, [2, 2, 2, 2], "round robin spreads evenly");
    // Offsets are per partition and in request order.
    let err = b
        .publish(&key(), recs(4, 0, 1), Acks::Buffered, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "unknown_partition");
}

#[tokio::test]
async fn test_publish_validation() {
    let c = kelp_broker::Config {
        max_record_bytes: 100,
        max_batch_bytes: 1000,
        ..cfg()
    };
    let (b, _store) = broker(1, c).await;
    let err = b
        .publish(&key(), Vec::new(), Acks::Buffered, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    let big = vec![InRecord {
        partition: None,
        key: None,
        value: Cow::Owned(vec![0; 200]),
        headers: Vec::new(),
    }];
    let err = b
        .publish(&key(), big, Acks::Buffered, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err = b
        .publish(&key(), recs(0, 0, 100), Acks::Buffered, None)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err = b
        .publish(
            &TopicKey::new("ns", "nope"),
            recs(0, 0, 1),
            Acks::Buffered,
            None,
        )
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
    assert!(err.to_string().contains("ns/nope"));
    assert_eq!(offsets(&b, 0), (0, 0, 0));
    assert_eq!(b.buffered_bytes(), 0);
}

#[tokio::test]
async fn test_long_poll_wakes_on_durable_publish() {
    let (b, _store) = broker(1, cfg()).await;
    let b2 = b.clone();
    let poll = tokio::spawn(async move {
        let q = FetchQuery {
            wait_ms: Some(5_000),
            ..query(0)
        };
        let started = Instant::now();
        let f: FetchResponse =
            serde_json::from_slice(&b2.fetch(&key(), 0, q).await.unwrap()).unwrap();
        (f, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&b, recs(0, 0, 2), Acks::Durable).await;
    let (f, took) = poll.await.unwrap();
    assert_eq!(f.records.len(), 2);
    assert!(took < Duration::from_secs(4));
    // A poll with nothing coming returns empty after wait_ms.
    let q = FetchQuery {
        wait_ms: Some(100),
        ..query(2)
    };
    let f: FetchResponse = serde_json::from_slice(&b.fetch(&key(), 0, q).await.unwrap()).unwrap();
    assert!(f.records.is_empty());
}

#[tokio::test]
async fn test_admin_flush_makes_everything_durable_or_names_the_failure() {
    let c = kelp_broker::Config {
        flush_interval_ms: 60_000,
        ..cfg()
    };
    let (b, store) = broker(2, c).await;
    publish(&b, recs(0, 0, 3), Acks::Buffered).await;
    publish(&b, recs(1, 0, 2), Acks::Buffered).await;
    let r = b.flush_all().await.unwrap();
    assert_eq!(r.flushed_partitions, 2);
    assert_eq!(offsets(&b, 0), (0, 3, 3));
    assert_eq!(offsets(&b, 1), (0, 2, 2));

    store.faults.assign.store(true, Ordering::SeqCst);
    publish(&b, recs(1, 2, 1), Acks::Buffered).await;
    let err = b.flush_all().await.map_err(ApiError::from).unwrap_err();
    assert_eq!(err.code(), "flush_failed");
    assert!(err.to_string().contains("partition 1 of ns/t"), "{err}");
    store.faults.assign.store(false, Ordering::SeqCst);
    b.flush_all().await.unwrap();
    assert_eq!(offsets(&b, 1), (0, 3, 3));
}

#[tokio::test]
async fn test_topics_create_conflict_and_groups() {
    let (b, _store) = broker(2, cfg()).await;
    let (created, info) = b.create_topic(key(), 2).await.unwrap();
    assert!(!created);
    assert_eq!(info.partitions.len(), 2);
    let err = b
        .create_topic(key(), 3)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::CONFLICT);
    for bad in [0, 1025] {
        let err = b
            .create_topic(TopicKey::new("ns", "x"), bad)
            .await
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
    let err = b
        .create_topic(TopicKey::new("..", "x"), 1)
        .await
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(err.code(), "bad_name");
    assert_eq!(b.list_topics().unwrap().len(), 1);

    b.commit_offset("g1", "ns/t", 1, 42, false).await.unwrap();
    b.commit_offset("g1", "ns/t", 0, 0, false).await.unwrap();
    b.commit_offset("g1", "ns/t", 1, 43, false).await.unwrap();
    // A late commit of an older offset does not rewind the group; the answer says so.
    let kept = b.commit_offset("g1", "ns/t", 1, 40, false).await.unwrap();
    assert_eq!(kept.offsets[0].offset, 43);
    let g = b.group_offsets("g1", "ns/t").await.unwrap();
    assert_eq!(
        g.offsets
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 43)]
    );
    // A deliberate reset may go down.
    let reset = b.commit_offset("g1", "ns/t", 1, 7, true).await.unwrap();
    assert_eq!(reset.offsets[0].offset, 7);
    assert_eq!(
        b.group_offsets("g1", "ns/t").await.unwrap().offsets[1].offset,
        7
    );
    assert_eq!(
        b.commit_offset("g1", "ns/t", 2, 1, false)
            .await
            .map_err(ApiError::from)
            .unwrap_err()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.commit_offset("g1", "ns/zz", 0, 1, false)
            .await
            .map_err(ApiError::from)
            .unwrap_err()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.commit_offset("g1", "nst", 0, 1, false)
            .await
            .map_err(ApiError::from)
            .unwrap_err()
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn test_loader_retries_until_filer_is_reachable() {
    let store = Arc::new(MemStore::new());
    store.faults.meta.store(true, Ordering::SeqCst);
    let b = kelp_broker::Broker::new(
        cfg(),
        store.clone(),
        tokio_util::sync::CancellationToken::new(),
    );
    b.spawn_loader(None);
    // The loader cannot succeed while the filer fails: not ready, whenever we look.
    let err = b.readiness().map_err(ApiError::from).unwrap_err();
    assert_eq!(err.code(), "not_ready");
    assert_eq!(
        b.create_topic(key(), 1)
            .await
            .map_err(ApiError::from)
            .unwrap_err()
            .code(),
        "not_ready"
    );
    store.faults.meta.store(false, Ordering::SeqCst);
    eventually("loaded", || b.readiness().is_ok()).await;
}
