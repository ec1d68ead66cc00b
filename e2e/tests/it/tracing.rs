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
