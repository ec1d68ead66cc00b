//! Every handler through the codec with a raw client: versions, framing, bad input,
//! produce/fetch/offsets, pipelining.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka::KafkaConfig;
use kafka::batch::{self, OwnedRecord};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::harness::{Client, Server, name, sb};

fn records(base_ts: i64, n: usize) -> Vec<OwnedRecord> {
    (0..n)
        .map(|i| OwnedRecord {
            offset: 0,
            timestamp: base_ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: if i % 2 == 0 {
                Some(Bytes::from(format!("v{i}")))
            } else {
                None
            },
            headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
        })
        .collect()
}

/// A batch of `n` records from an idempotent producer (`pid` >= 0) or none.
fn batch_bytes(n: usize, pid: i64, seq: i32) -> Bytes {
    let mut b = BytesMut::from(&batch::encode_batch(&records(1000, n)).unwrap()[..]);
    if pid >= 0 {
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b.freeze()
}

fn produce_req(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = produce_request::TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    r
}

fn produce_result(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut p = fetch_request::FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = fetch_request::FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    r.max_bytes = 1 << 20;
    r.session_epoch = -1;
    r.topics = vec![t];
    r
}

async fn create(c: &mut Client, topic: &str, partitions: i32) -> i16 {
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = -1;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &r).await;
    resp.topics[0].error_code
}

#[tokio::test]
async fn test_api_versions_lists_kafka_ranges() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    for v in [0, 3] {
        let r: ApiVersionsResponse = c
            .call(ApiKey::ApiVersions, v, &ApiVersionsRequest::default())
            .await;
        assert_eq!(r.error_code, 0);
        let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 9));
        let fetch = r.api_keys.iter().find(|k| k.api_key == 1).unwrap();
        assert_eq!(fetch.max_version, 12);
        assert!(r.api_keys.len() >= 19);
    }
}

#[tokio::test]
async fn test_api_versions_unknown_version_gets_error_35_and_v0_body() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    // ApiVersions v9 with a flexible (v2) header: key, version, correlation, client id,
    // no tagged fields; then a body the server does not need to understand.
    let mut f = BytesMut::new();
    f.put_i16(18);
    f.put_i16(9);
    f.put_i32(77);
    f.put_i16(2);
    f.put_slice(b"it");
    f.put_u8(0);
    f.put_slice(&[1, 2, 3]);
    let mut frame = BytesMut::new();
    frame.put_i32(f.len() as i32);
    frame.put_slice(&f);
    c.send_raw(&frame).await;
    let resp = c.read_frame().await.unwrap();
    let (corr, body) = Client::decode::<ApiVersionsResponse>(resp, 0);
    assert_eq!(corr, 77);
    assert_eq!(body.error_code, 35);
    assert!(
        body.api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version == 3)
    );
}

#[tokio::test]
async fn test_unimplemented_apis_get_unsupported_version_and_keep_the_connection() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    let r: SaslHandshakeResponse = c
        .call(ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default())
        .await;
    assert_eq!(r.error_code, 35);
    // A known api at a version the listener does not advertise (Fetch v13 uses topic ids).
    let r: FetchResponse = c.call(ApiKey::Fetch, 13, &FetchRequest::default()).await;
    assert_eq!(r.error_code, 35);
    // An api key nobody knows: header + error code.
    c.send_raw(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 5, 0xff, 0xff])
        .await;
    let f = c.read_frame().await.unwrap();
    assert_eq!(&f[..], &[0, 0, 0, 5, 0, 35]);
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(r.error_code, 0);
}

#[tokio::test]
async fn test_oversized_and_malformed_frames_close_the_connection_only() {
    let cfg = KafkaConfig {
        max_request_bytes: 1024,
        ..KafkaConfig::default()
    };
    let s = Server::start(cfg).await;
    let mut c = s.client().await;
    c.send_raw(&[0, 0, 0x10, 0]).await;
    assert!(c.closed().await, "oversized frame must close");

    let mut c = s.client().await;
    // Metadata v12 whose body is garbage.
    c.send_raw(&[
        0, 0, 0, 14, 0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff,
    ])
    .await;
    assert!(c.closed().await, "malformed body must close");

    let mut c = s.client().await;
    c.send_raw(&[0, 0, 0, 3, 1, 2, 3]).await;
    assert!(c.closed().await, "short header must close");

    // A client that disconnects mid-frame, then the server still serves.
    let mut c = s.client().await;
    c.send_raw(&[0, 0, 0, 100, 0, 18]).await;
    drop(c);
    let mut c = s.client().await;
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(r.error_code, 0);
}

#[tokio::test]
async fn test_metadata_auto_creates_and_produce_fetch_round_trip() {
    let cfg = KafkaConfig {
        auto_create_partitions: 3,
        ..KafkaConfig::default()
    };
    let s = Server::start(cfg).await;
    let mut c = s.client().await;
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name("rt"));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &m).await;
    assert_eq!(r.brokers[0].host.as_str(), "127.0.0.1");
    assert_eq!(r.brokers[0].port, i32::from(s.addr.port()));
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].partitions.len(), 3);

    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("rt", 0, -1, batch_bytes(3, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r), (0, 0));
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            3,
            &produce_req("rt", 0, 1, batch_bytes(2, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r), (0, 3));

    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("rt", 0, 0)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark, p.last_stable_offset),
        (0, 5, 5)
    );
    let got = batch::decode_batches(p.records.as_ref().unwrap()).unwrap();
    let mut want = records(1000, 3);
    want.extend(records(1000, 2));
    for (i, w) in want.iter_mut().enumerate() {
        w.offset = i as i64;
    }
    assert_eq!(got, want);

    let r: FetchResponse = c.call(ApiKey::Fetch, 4, &fetch_req("rt", 6, 0)).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );

    // Corrupt records: CORRUPT_MESSAGE.
    let mut bad = batch_bytes(1, -1, -1).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("rt", 0, -1, Bytes::from(bad)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 2);
    // Unknown partition.
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("rt", 7, -1, batch_bytes(1, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 3);
}

#[tokio::test]
async fn test_unknown_topic_with_auto_create_off() {
    let cfg = KafkaConfig {
        auto_create_topics: false,
        ..KafkaConfig::default()
    };
    let s = Server::start(cfg).await;
    let mut c = s.client().await;
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name("nope"));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    let r: MetadataResponse = c.call(ApiKey::Metadata, 9, &m).await;
    assert_eq!(r.topics[0].error_code, 3);
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("nope", 0, -1, batch_bytes(1, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 3);
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("nope", 0, 5000)).await;
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
}

#[tokio::test]
async fn test_acks_zero_gets_no_response_and_legacy_produce_is_refused() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "a0", 1).await, 0);
    let (_, f1) = c.frame(
        ApiKey::Produce,
        9,
        &produce_req("a0", 0, 0, batch_bytes(2, -1, -1)),
    );
    let (corr2, f2) = c.frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    c.send_raw(&f1).await;
    c.send_raw(&f2).await;
    let (corr, _) = Client::decode::<ApiVersionsResponse>(c.read_frame().await.unwrap(), 3);
    assert_eq!(corr, corr2, "the acks=0 produce must not be answered");
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("a0", 0, 0)).await;
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);

    // A failed acks=0 produce (unknown partition) closes the connection, as in Kafka.
    let mut c2 = s.client().await;
    let (_, f) = c2.frame(
        ApiKey::Produce,
        9,
        &produce_req("a0", 5, 0, batch_bytes(1, -1, -1)),
    );
    c2.send_raw(&f).await;
    assert!(c2.closed().await);

    // Produce v2: acks 1, timeout, one topic "a0" with partition 0 and an empty record set.
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1);
    body.put_i16(2);
    body.put_slice(b"a0");
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(0);
    let mut f = BytesMut::new();
    f.put_i16(0);
    f.put_i16(2);
    f.put_i32(99);
    f.put_i16(-1);
    f.put_slice(&body);
    let mut frame = BytesMut::new();
    frame.put_i32(f.len() as i32);
    frame.put_slice(&f);
    c.send_raw(&frame).await;
    let resp = c.read_frame().await.unwrap();
    // correlation, [topic "a0", [partition 0, error 43, offset -1, time -1]], throttle.
    let mut want = BytesMut::new();
    want.put_i32(99);
    want.put_i32(1);
    want.put_i16(2);
    want.put_slice(b"a0");
    want.put_i32(1);
    want.put_i32(0);
    want.put_i16(43);
    want.put_i64(-1);
    want.put_i64(-1);
    want.put_i32(0);
    assert_eq!(&resp[..], &want[..]);
}

#[tokio::test]
async fn test_idempotent_retry_is_not_stored_twice_and_gaps_are_refused() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "idem", 1).await, 0);
    let r: InitProducerIdResponse = c
        .call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default())
        .await;
    assert_eq!(r.error_code, 0);
    let pid = r.producer_id.0;
    assert!(pid >= 0);
    let b = batch_bytes(3, pid, 0);
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce_req("idem", 0, -1, b.clone()))
        .await;
    assert_eq!(produce_result(&r), (0, 0));
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce_req("idem", 0, -1, b))
        .await;
    assert_eq!(
        produce_result(&r),
        (0, 0),
        "a retry gets its original offset"
    );
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("idem", 0, -1, batch_bytes(1, pid, 7)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("idem", 0, -1, batch_bytes(1, pid, 3)),
        )
        .await;
    assert_eq!(produce_result(&r), (0, 3));
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("idem", 0, 0)).await;
    assert_eq!(r.responses[0].partitions[0].high_watermark, 4);

    let mut txn = InitProducerIdRequest::default();
    txn.transactional_id = Some(TransactionalId(sb("tx")));
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &txn).await;
    assert_eq!(r.error_code, 53, "transactions are refused clearly");
    let mut p = produce_req("idem", 0, -1, batch_bytes(1, -1, -1));
    p.transactional_id = Some(TransactionalId(sb("tx")));
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &p).await;
    assert_eq!(produce_result(&r).0, 53);
}

#[tokio::test]
async fn test_fetch_long_poll_wakes_on_produce_and_times_out_empty() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "lp", 1).await, 0);
    // Nothing there: an empty answer after max_wait.
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("lp", 0, 100)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().unwrap().is_empty());

    let mut waiting = s.client().await;
    let (corr, frame) = waiting.frame(ApiKey::Fetch, 12, &fetch_req("lp", 0, 60_000));
    waiting.send_raw(&frame).await;
    let started = Instant::now();
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("lp", 0, -1, batch_bytes(2, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 0);
    let (got, r) = Client::decode::<FetchResponse>(waiting.read_frame().await.unwrap(), 12);
    assert_eq!(got, corr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the produce, not max_wait"
    );
    let recs =
        batch::decode_batches(r.responses[0].partitions[0].records.as_ref().unwrap()).unwrap();
    assert_eq!(recs.len(), 2);
}

#[tokio::test]
async fn test_pipelined_responses_keep_request_order() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "pipe", 1).await, 0);
    // A slow fetch (long poll that times out) followed by fast requests, all sent at once.
    let (c1, f1) = c.frame(ApiKey::Fetch, 12, &fetch_req("pipe", 0, 300));
    let (c2, f2) = c.frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let (c3, f3) = c.frame(
        ApiKey::Produce,
        9,
        &produce_req("pipe", 0, 1, batch_bytes(1, -1, -1)),
    );
    let (c4, f4) = c.frame(
        ApiKey::Produce,
        9,
        &produce_req("pipe", 0, 1, batch_bytes(1, -1, -1)),
    );
    let mut all = f1.to_vec();
    all.extend_from_slice(&f2);
    all.extend_from_slice(&f3);
    all.extend_from_slice(&f4);
    c.send_raw(&all).await;
    let (g1, _) = Client::decode::<FetchResponse>(c.read_frame().await.unwrap(), 12);
    let (g2, _) = Client::decode::<ApiVersionsResponse>(c.read_frame().await.unwrap(), 3);
    let (g3, p3) = Client::decode::<ProduceResponse>(c.read_frame().await.unwrap(), 9);
    let (g4, p4) = Client::decode::<ProduceResponse>(c.read_frame().await.unwrap(), 9);
    assert_eq!((g1, g2, g3, g4), (c1, c2, c3, c4));
    assert_eq!(produce_result(&p3), (0, 0), "produces run in arrival order");
    assert_eq!(produce_result(&p4), (0, 1));
}

#[tokio::test]
async fn test_list_offsets_earliest_latest_and_by_timestamp() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "lo", 1).await, 0);
    let r: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_req("lo", 0, -1, batch_bytes(4, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 0);
    let ask = |ts: i64| {
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = ts;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = name("lo");
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = BrokerId(-1);
        r.topics = vec![t];
        r
    };
    for (ts, offset, found_ts) in [(-2, 0, -1), (-1, 4, -1), (1002, 2, 1002), (5000, -1, -1)] {
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &ask(ts)).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset, p.timestamp),
            (0, offset, found_ts),
            "ts {ts}"
        );
    }
}

#[tokio::test]
async fn test_admin_apis() {
    let s = Server::start(KafkaConfig::default()).await;
    let mut c = s.client().await;
    assert_eq!(create(&mut c, "adm", 2).await, 0);
    assert_eq!(create(&mut c, "adm", 2).await, 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(
        create(&mut c, "bad/name", 1).await,
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(create(&mut c, "zero", 0).await, 37, "INVALID_PARTITIONS");

    let r: MetadataResponse = c
        .call(ApiKey::Metadata, 1, &MetadataRequest::default())
        .await;
    assert!(r.topics.is_empty(), "empty list on v1 is no topics");
    let mut all = MetadataRequest::default();
    all.topics = None;
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &all).await;
    assert_eq!(r.topics.len(), 1);

    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = sb("adm");
    let mut dc = DescribeConfigsRequest::default();
    dc.resources = vec![res];
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &dc).await;
    assert!(
        r.results[0]
            .configs
            .iter()
            .any(|x| x.name.as_str() == "cleanup.policy")
    );

    let r: DescribeClusterResponse = c
        .call(
            ApiKey::DescribeCluster,
            0,
            &DescribeClusterRequest::default(),
        )
        .await;
    assert_eq!((r.cluster_id.as_str(), r.brokers.len()), ("kelp", 1));

    let mut fc = FindCoordinatorRequest::default();
    fc.key = sb("g");
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &fc).await;
    assert_eq!(
        (r.error_code, r.node_id.0, r.port),
        (0, 1, i32::from(s.addr.port()))
    );
    let mut fc = FindCoordinatorRequest::default();
    fc.coordinator_keys = vec![sb("g1"), sb("g2")];
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &fc).await;
    assert_eq!(r.coordinators.len(), 2);

    let mut dt = DeleteTopicsRequest::default();
    dt.topic_names = vec![name("adm"), name("missing")];
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 5, &dt).await;
    let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, vec![0, 3]);
    let _ = StrBytes::default();
}

/// A connection authenticated over SASL/PLAIN with `password` (write: "w", read: "r").
async fn sasl_client(s: &Server, password: &str) -> Client {
    let mut c = s.client().await;
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = sb("PLAIN");
    let r: SaslHandshakeResponse = c.call(ApiKey::SaslHandshake, 1, &hs).await;
    assert_eq!(r.error_code, 0);
    let mut a = SaslAuthenticateRequest::default();
    a.auth_bytes = Bytes::from(format!("\0app\0{password}"));
    let r: SaslAuthenticateResponse = c.call(ApiKey::SaslAuthenticate, 2, &a).await;
    assert_eq!(r.error_code, 0, "{password}: {:?}", r.error_message);
    c
}

#[tokio::test]
async fn test_a_read_only_sasl_session_consumes_but_every_write_is_refused() {
    use kafka::sasl::{Access, Authenticator};
    let cfg = KafkaConfig {
        sasl: Some(Authenticator::new(|_, p| match p {
            "w" => Some(Access::ReadWrite),
            "r" => Some(Access::ReadOnly),
            _ => None,
        })),
        ..KafkaConfig::default()
    };
    let s = Server::start(cfg).await;
    let mut writer = sasl_client(&s, "w").await;
    assert_eq!(create(&mut writer, "ro", 1).await, 0);
    let r: ProduceResponse = writer
        .call(
            ApiKey::Produce,
            9,
            &produce_req("ro", 0, -1, batch_bytes(2, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r), (0, 0));

    let mut reader = sasl_client(&s, "r").await;
    // Reads: metadata, fetch, list offsets, a group's offset commit and fetch.
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name("ro"));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    let r: MetadataResponse = reader.call(ApiKey::Metadata, 12, &m).await;
    assert_eq!(r.topics[0].error_code, 0);
    let r: FetchResponse = reader.call(ApiKey::Fetch, 12, &fetch_req("ro", 0, 0)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 2));
    let mut op = offset_commit_request::OffsetCommitRequestPartition::default();
    op.partition_index = 0;
    op.committed_offset = 2;
    let mut ot = offset_commit_request::OffsetCommitRequestTopic::default();
    ot.name = name("ro");
    ot.partitions = vec![op];
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(sb("readers"));
    oc.generation_id_or_member_epoch = -1;
    oc.topics = vec![ot];
    let r: OffsetCommitResponse = reader.call(ApiKey::OffsetCommit, 7, &oc).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 0,
        "a reader commits offsets"
    );

    // Writes: produce, topic creation (explicit and by metadata), deletion, producer ids.
    let r: ProduceResponse = reader
        .call(
            ApiKey::Produce,
            9,
            &produce_req("ro", 0, -1, batch_bytes(1, -1, -1)),
        )
        .await;
    assert_eq!(produce_result(&r).0, 29, "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(create(&mut reader, "ro-new", 1).await, 29);
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name("ro-auto"));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    let r: MetadataResponse = reader.call(ApiKey::Metadata, 12, &m).await;
    assert_eq!(r.topics[0].error_code, 3, "no auto-creation for a reader");
    let mut d = DeleteTopicsRequest::default();
    d.topic_names = vec![name("ro")];
    let r: DeleteTopicsResponse = reader.call(ApiKey::DeleteTopics, 4, &d).await;
    assert_eq!(r.responses[0].error_code, 29);
    let r: InitProducerIdResponse = reader
        .call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default())
        .await;
    assert_eq!(r.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");

    // Nothing changed: still two records, the topic still there, nothing created.
    let r: FetchResponse = writer.call(ApiKey::Fetch, 12, &fetch_req("ro", 0, 0)).await;
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);
    let mut all = MetadataRequest::default();
    all.topics = None;
    let r: MetadataResponse = writer.call(ApiKey::Metadata, 12, &all).await;
    let names: Vec<&str> = r
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
        .collect();
    assert_eq!(names, ["ro"]);
}
