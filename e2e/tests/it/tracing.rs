//! Traces as an operator sees them: the services export real OTLP to a receiver run by the
//! test, and the spans of one request form one trace across processes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::volume::WriteOptions;
use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::{Cluster, ClusterOptions};

/// Env that points every service at the receiver, with a short batch delay.
pub fn otel_env(rx: &OtlpReceiver) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), rx.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
    ]
}

/// Waits until `pred` holds for the received spans.
pub async fn wait_spans(
    rx: &OtlpReceiver,
    what: &str,
    pred: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = rx.spans();
        if pred(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; got {} spans: {:#?}",
            spans.len(),
            spans
                .iter()
                .filter(|s| !s.name.contains("heartbeat") && !s.name.contains("readyz"))
                .map(|s| format!(
                    "{} {} kind={} parent={}",
                    s.service, s.name, s.kind, s.parent_span_id
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The child of `parent` named `name` within `spans`.
pub fn child<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id && s.name == name
    })
}

#[tokio::test]
async fn given_otlp_endpoint_when_a_replicated_write_is_made_should_export_one_trace_across_volume_servers()
 {
    let rx = OtlpReceiver::start().await.unwrap();
    let c = Cluster::start(ClusterOptions {
        volumes: 2,
        env: otel_env(&rx),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = c.blob_client();
    let q = AssignQuery {
        replication: Some("001".into()),
        ..Default::default()
    };
    client
        .upload(&q, Bytes::from_static(b"traced"), &WriteOptions::default())
        .await
        .unwrap();
    // The primary's server span → its client span to the replica → the replica's server span,
    // each server span with its needle append and fsync inside.
    let spans = wait_spans(&rx, "a replicated write", |spans| {
        spans.iter().filter(|s| s.name == "volume.fsync").count() >= 2
            && spans.iter().any(|s| s.name == "POST /{fid}" && s.kind == 3)
    })
    .await;
    let client_span = spans
        .iter()
        .find(|s| s.name == "POST /{fid}" && s.kind == 3 && s.service == "kelp-volume")
        .unwrap();
    let primary = spans
        .iter()
        .find(|s| s.span_id == client_span.parent_span_id)
        .expect("client span has a parent");
    assert_eq!((primary.name.as_str(), primary.kind), ("POST /{fid}", 2));
    let replica = spans
        .iter()
        .find(|s| s.parent_span_id == client_span.span_id)
        .expect("replica's server span is the child of the primary's client span");
    assert_eq!(replica.trace_id, primary.trace_id);
    assert_eq!(
        (
            replica.name.as_str(),
            replica.kind,
            replica.service.as_str()
        ),
        ("POST /{fid}", 2, "kelp-volume")
    );
    for server in [primary, replica] {
        assert!(
            child(&spans, server, "needle.append").is_some(),
            "no needle.append under {server:?}"
        );
        let fsync =
            child(&spans, server, "volume.fsync").expect("volume.fsync inside the server span");
        assert!(fsync.start_ns >= server.start_ns && fsync.end_ns <= server.end_ns);
    }
    assert!(
        !primary.attributes.values().any(|v| v.contains("traced")),
        "payload leaked into attributes"
    );
    drop(c);
}

#[tokio::test]
async fn given_otlp_endpoint_when_a_durable_publish_is_flushed_should_export_one_trace_across_all_four_services()
 {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut c = Cluster::start(ClusterOptions {
        broker: true,
        env: otel_env(&rx),
        ..Default::default()
    })
    .await
    .unwrap();
    let broker = e2e::broker::Broker::new(c.broker().url());
    broker.create_topic("trace/t", 1).await;
    let offsets = broker
        .publish("trace/t", &[(0, "traced record".into())], "durable")
        .await
        .unwrap();
    assert_eq!(offsets, vec![0]);

    let spans = wait_spans(
        &rx,
        "a flush trace with spans of all four services",
        |spans| {
            let Some(flush) = spans.iter().find(|s| s.name == "broker.flush") else {
                return false;
            };
            let services: std::collections::HashSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == flush.trace_id)
                .map(|s| s.service.as_str())
                .collect();
            services.len() == 4
                && spans
                    .iter()
                    .any(|s| s.name == "rocksdb.write" && s.trace_id == flush.trace_id)
        },
    )
    .await;
    let flush = spans.iter().find(|s| s.name == "broker.flush").unwrap();
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == flush.trace_id)
        .collect();
    let tree = render_tree(&trace, flush, 0);
    println!("flush trace {}:\n{tree}", flush.trace_id);
    assert!(
        flush.parent_span_id.is_empty(),
        "broker.flush is a root span"
    );
    for attr in [
        "topic",
        "partition",
        "offset_min",
        "offset_max",
        "records",
        "bytes",
    ] {
        assert!(
            flush.attributes.contains_key(attr),
            "broker.flush lacks {attr}: {:?}",
            flush.attributes
        );
    }

    // Each hop: the broker's client span is a child of the flush, the server span a child of it.
    let hop = |client_name: &str, service: &str| {
        let client = trace
            .iter()
            .find(|s| {
                s.name == client_name
                    && s.kind == 3
                    && s.service == "kelp-broker"
                    && is_descendant(&trace, s, flush)
            })
            .unwrap_or_else(|| panic!("no client span {client_name} under the flush:\n{tree}"));
        let server = trace
            .iter()
            .find(|s| s.parent_span_id == client.span_id && s.kind == 2)
            .unwrap_or_else(|| panic!("no server span under {client_name}:\n{tree}"));
        assert_eq!(server.service, service);
        assert_eq!(server.name, client_name, "server span named by its route");
        *server
    };
    hop("POST /dir/assign", "kelp-master");
    let volume = hop("POST /{fid}", "kelp-volume");
    let filer = hop("PUT /__meta/entry", "kelp-filer");
    let fsync = child(&spans, volume, "volume.fsync")
        .unwrap_or_else(|| panic!("no volume.fsync in the volume write:\n{tree}"));
    assert!(fsync.start_ns >= volume.start_ns && fsync.end_ns <= volume.end_ns);
    let rocks = trace
        .iter()
        .find(|s| s.name == "rocksdb.write" && is_descendant(&trace, s, filer))
        .unwrap_or_else(|| panic!("no rocksdb.write in the filer commit:\n{tree}"));
    assert!(rocks.start_ns >= filer.start_ns && rocks.end_ns <= filer.end_ns);

    // Log lines written inside a traced request carry its trace id: the master logged the
    // volume it grew for this first flush.
    let master_log = c.master.tail_log(400);
    assert!(
        master_log
            .lines()
            .any(|l| l.contains("volume grown") && l.contains(&flush.trace_id)),
        "no master log line with trace id {}:\n{master_log}",
        flush.trace_id
    );

    // The flush links to the publish request it made durable.
    let publish = spans
        .iter()
        .find(|s| s.service == "kelp-broker" && s.kind == 2 && s.name.contains("/publish"))
        .expect("publish server span");
    assert_eq!(
        publish.attributes.get("flush_trace_id"),
        Some(&flush.trace_id),
        "the durable publish's span records the trace id of the flush that answered it"
    );
    assert!(
        flush.links.iter().any(|(t, _)| *t == publish.trace_id),
        "flush links {:?} do not include the publish trace {}",
        flush.links,
        publish.trace_id
    );
    // The segment entry records the flush's trace id.
    let filer_client = common::client::filer::FilerClient::new(
        common::client::HttpClient::new(Duration::from_secs(10)),
        &c.filer().addr().to_string(),
    );
    let list = filer_client
        .list(&common::api::filer::ListQuery {
            dir: "/topics/trace/t/p0000".into(),
            start: None,
            inclusive: false,
            limit: Some(10),
            reverse: false,
        })
        .await
        .unwrap();
    let seg = list
        .entries
        .iter()
        .find(|e| e.full_path.ends_with(".seg"))
        .expect("a segment entry");
    assert_eq!(seg.extended.get("trace_id"), Some(&flush.trace_id));

    // `kelp topic locate` goes from the offset to the segment, its fid, the volume server and
    // the flush's trace id.
    let out = std::process::Command::new(e2e::bin_dir().join("kelp"))
        .args(["topic", "locate", "trace/t", "0", "0"])
        .args(["--broker", &c.broker().addr().to_string()])
        .args(["--filer", &c.filer().addr().to_string()])
        .args(["--master", &c.master.addr().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "locate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&seg.full_path), "{text}");
    assert!(text.contains(&seg.chunks[0].fid), "{text}");
    assert!(text.contains(&c.volumes[0].addr().to_string()), "{text}");
    assert!(text.contains(&flush.trace_id), "{text}");
}

fn is_descendant(trace: &[&ReceivedSpan], s: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut cur = s;
    for _ in 0..64 {
        if cur.parent_span_id == ancestor.span_id {
            return true;
        }
        match trace.iter().find(|p| p.span_id == cur.parent_span_id) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

/// The span tree under `root`, one span a line, with service, kind and duration.
pub fn render_tree(trace: &[&ReceivedSpan], root: &ReceivedSpan, depth: usize) -> String {
    let kind = match root.kind {
        2 => "server",
        3 => "client",
        _ => "internal",
    };
    let mut out = format!(
        "{}{} [{}, {kind}] {:.2} ms\n",
        "  ".repeat(depth),
        root.name,
        root.service,
        root.end_ns.saturating_sub(root.start_ns) as f64 / 1e6
    );
    let mut children: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    children.sort_by_key(|s| s.start_ns);
    for c in children {
        out.push_str(&render_tree(trace, c, depth + 1));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_otlp_endpoint_when_a_kafka_produce_is_flushed_should_link_the_flush_to_it() {
    let rx = OtlpReceiver::start().await.unwrap();
    let port = e2e::kafka::free_port().to_string();
    let c = Cluster::start(ClusterOptions {
        env: otel_env(&rx),
        ..ClusterOptions::with_broker(&["--kafka-port", &port])
    })
    .await
    .unwrap();
    let b = e2e::kafka::kafka_addr(c.broker.as_ref().expect("broker"));
    e2e::kafka::kcat(
        &["-P", "-b", &b, "-t", "traced", "-X", "acks=all"],
        b"one\ntwo\n",
    );
    let spans = wait_spans(&rx, "a kafka.produce span linked from a flush", |spans| {
        spans.iter().any(|p| {
            p.name == "kafka.produce"
                && spans.iter().any(|f| {
                    f.name == "broker.flush" && f.links.iter().any(|(t, _)| *t == p.trace_id)
                })
        })
    })
    .await;
    let produce = spans
        .iter()
        .find(|s| s.name == "kafka.produce")
        .expect("kafka.produce span");
    assert_eq!(produce.service, "kelp-broker");
    assert_eq!(
        produce.attributes.get("topic").map(String::as_str),
        Some("traced")
    );
    let flush = spans
        .iter()
        .find(|f| f.name == "broker.flush" && f.links.iter().any(|(t, _)| *t == produce.trace_id))
        .expect("the flush that made the produce durable");
    assert_eq!(
        flush.attributes.get("topic").map(String::as_str),
        Some("kafka/traced")
    );
}

#[tokio::test]
async fn given_a_secure_cluster_when_its_collector_has_a_certificate_from_the_cluster_ca_should_export_over_https()
 {
    // The collector's address is handed out before the cluster (and its CA) exists; it
    // serves HTTPS with the cluster's own certificate once the cluster is up. The services
    // have no OTEL_EXPORTER_OTLP_CERTIFICATE: they trust the collector through --tls-ca
    // (KELP_TLS_CA) alone, and without that no span could arrive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let c = Cluster::start(ClusterOptions {
        secure: true,
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let tls = &c.secrets().tls;
    let rx = OtlpReceiver::start_on(listener, Some((&tls.cert, &tls.key)))
        .await
        .unwrap();
    assert!(rx.endpoint().starts_with("https://"));
    c.blob_client()
        .upload(
            &AssignQuery::default(),
            Bytes::from_static(b"traced over https"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let spans = wait_spans(&rx, "spans of a blob write, exported over https", |spans| {
        spans
            .iter()
            .any(|s| s.service == "kelp-volume" && s.name == "volume.fsync")
            && spans.iter().any(|s| s.service == "kelp-master")
    })
    .await;
    assert!(spans.iter().all(|s| s.service.starts_with("kelp-")));
    drop(c);
}
