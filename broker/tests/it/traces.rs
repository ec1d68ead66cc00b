//! A flush is a root span linked to the publishes it persisted; its trace id lands in the
//! segment entry and in the publish's span.

use std::sync::{Arc, Mutex};

use common::api::broker::Acks;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use crate::helpers::{broker, cfg, key, recs};

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

#[test]
fn test_flush_span_is_a_root_linked_to_publishes_and_its_trace_id_is_stored() {
    let spans = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (b, store) = broker(1, cfg()).await;
            let span = tracing::info_span!("test.publish");
            let link = common::telemetry::span_context(&span).expect("traced");
            let published = b
                .publish(&key(), recs(0, 0, 3), Acks::Durable, Some(link.clone()))
                .instrument(span)
                .await
                .unwrap();
            let segs = store.segments(&key(), 0);
            let tid = segs[0]
                .trace_id
                .clone()
                .expect("segment entry has the flush trace id");
            assert_eq!(segs[0].extended()["trace_id"], tid);
            assert_eq!(
                published.flush_trace_ids,
                vec![Arc::<str>::from(tid.as_str())]
            );
            assert_ne!(
                tid,
                link.trace_id().to_string(),
                "the flush is its own trace"
            );
        });
    });
    let _ = provider.force_flush();
    let spans = spans.0.lock().unwrap();
    let flush = spans
        .iter()
        .find(|s| s.name == "broker.flush")
        .expect("a broker.flush span was exported");
    assert_eq!(
        flush.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "root span"
    );
    assert_eq!(flush.links.len(), 1, "linked to the publish");
    let publish = spans.iter().find(|s| s.name == "test.publish").unwrap();
    assert_eq!(
        flush.links[0].span_context.span_id(),
        publish.span_context.span_id()
    );
    let attrs: Vec<String> = flush
        .attributes
        .iter()
        .map(|kv| kv.key.to_string())
        .collect();
    for a in [
        "topic",
        "partition",
        "offset_min",
        "offset_max",
        "bytes",
        "records",
    ] {
        assert!(
            attrs.iter().any(|k| k == a),
            "flush span lacks {a}: {attrs:?}"
        );
    }
}
