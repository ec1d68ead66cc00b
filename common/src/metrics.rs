//! Prometheus metrics helpers: a shared registry type, an HTTP handler that renders it, and
//! the latency buckets every histogram uses.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A registry shared by a service's metrics and its `/metrics` route.
pub type SharedRegistry = Arc<Registry>;

/// Latency buckets in seconds, from 50 µs to about 13 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 19,
    ))
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Response {
    let mut out = String::new();
    match encode(&mut out, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => {
            crate::http::ApiError::internal(anyhow::anyhow!("encode metrics: {e}")).into_response()
        }
    }
}
