//! The RocksDB write of `PUT /__meta/entry` is a `rocksdb.write` span whose parent is the
//! server span named after the matched route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    otel_name: Option<String>,
    parent: Option<u64>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<HashMap<u64, Seen>>>);

struct OtelName(Option<String>);

impl tracing::field::Visit for OtelName {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "otel.name" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "otel.name" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = OtelName(None);
        attrs.record(&mut v);
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        self.0.lock().unwrap().insert(
            id.into_u64(),
            Seen {
                name: attrs.metadata().name().to_owned(),
                otel_name: v.0,
                parent,
            },
        );
    }
}

#[test]
fn test_rocksdb_write_span_is_child_of_the_put_entry_server_span() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = crate::filer();
        let r = f
            .send(
                Request::builder()
                    .method(Method::PUT)
                    .uri("/__meta/entry")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"entry":{"full_path":"/t/x"}}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    });
    let seen = capture.0.lock().unwrap().clone();
    let write = seen
        .values()
        .find(|s| s.name == "rocksdb.write")
        .unwrap_or_else(|| panic!("no rocksdb.write span in {seen:?}"));
    assert_eq!(write.otel_name.as_deref(), Some("rocksdb.write"));
    let parent = seen
        .get(&write.parent.expect("rocksdb.write has a parent"))
        .unwrap();
    assert_eq!(parent.name, "http.server");
    assert_eq!(parent.otel_name.as_deref(), Some("PUT /__meta/entry"));
}
