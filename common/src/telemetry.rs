//! Tracing setup and W3C trace-context propagation.
//!
//! [`init`] installs an `EnvFilter` (`RUST_LOG`), a fmt layer (JSON when `LOG_FORMAT=json`), and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and `OTEL_SDK_DISABLED` is not `true`, an OTLP/HTTP
//! exporter behind a batch processor with `service.name` = `kelp-<service>` (or
//! `OTEL_SERVICE_NAME`). Sampling follows the standard `OTEL_TRACES_SAMPLER` variables. When
//! the endpoint is unset no OpenTelemetry layer is installed at all, so nothing is exported and
//! nothing slows down.
//!
//! The exporter trusts, for an `https://` endpoint, the CA named by the standard
//! `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file),
//! else the service's `--tls-ca` (so a collector with a certificate from the cluster's CA is
//! trusted like every other hop), else the system's roots (`webpki-roots`/reqwest's default).
//!
//! Call [`init`] before starting the tokio runtime and [`TelemetryGuard::shutdown`] after it
//! stops: the exporter's blocking HTTP client must not be created or dropped on a runtime thread.

use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flush it with [`TelemetryGuard::shutdown`].
#[must_use = "call shutdown() at exit so pending spans are exported"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes pending spans and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.force_flush() {
                eprintln!("failed to flush spans: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("failed to shut down the span exporter: {e}");
            }
        }
    }
}

/// Whether the standard OTel environment asks for OTLP export.
pub fn otlp_enabled() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .is_ok_and(|v| !v.is_empty());
    endpoint && !disabled
}

/// The CA the OTLP exporter trusts: the standard OTel variables first, then `tls_ca`.
fn otlp_ca(tls_ca: Option<&Path>) -> Option<PathBuf> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ]
    .iter()
    .filter_map(std::env::var_os)
    .find(|v| !v.is_empty())
    .map(PathBuf::from)
    .or_else(|| tls_ca.map(Path::to_path_buf))
}

/// The OTLP/HTTP span exporter, trusting `ca` when given (see the module doc).
fn otlp_exporter(ca: Option<&Path>) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    let builder = match ca {
        Some(ca) => {
            let tls = crate::tls::client_config(ca, None)
                .with_context(|| format!("load the OTLP exporter's CA {}", ca.display()))?;
            let client = reqwest::blocking::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .context("build the OTLP exporter's HTTP client")?;
            builder.with_http_client(client)
        }
        None => builder,
    };
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("build the OTLP span exporter: {e}"))
}

/// Installs the global subscriber for `service` (e.g. `"master"`); `tls_ca` is the process's
/// `--tls-ca`, trusted by the OTLP exporter (see the module doc).
pub fn init(service: &str, tls_ca: Option<&Path>) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The OTLP exporter builds its own reqwest client, which needs a process-wide rustls
    // provider (Kelp builds reqwest without aws-lc): ring, as everywhere else.
    crate::tls::install_default_provider();
    let default_filter = format!(
        "kelp_{service}=info,kelp_common=info,kelp_master=info,kelp_volume=info,kelp_filer=info,kelp_broker=info,kelp_cli=info,warn"
    );
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };

    let provider = if otlp_enabled() {
        let exporter = otlp_exporter(otlp_ca(tls_ca).as_deref())?;
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| format!("kelp-{service}"));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(name).build())
            .build();
        Some(provider)
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(format!("kelp-{service}")))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("install the tracing subscriber: {e}"))?;
    install_panic_hook();
    Ok(TelemetryGuard { provider })
}

/// Logs panics through tracing (so they carry the span and reach the log file) before the
/// default hook prints them.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panicked");
        default(info);
    }));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Makes the W3C context in `headers` (if any) the parent of `span`.
pub fn set_parent_from_headers(span: &Span, headers: &HeaderMap) {
    if headers.contains_key("traceparent") {
        let cx = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        let _ = span.set_parent(cx);
    }
}

/// Writes the current span's W3C context (`traceparent`) into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(headers))
        });
    }
}

/// The trace id of `span` as 32 hex digits, when it is being traced.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span context of `span`, to link other spans to it.
pub fn span_context(span: &Span) -> Option<opentelemetry::trace::SpanContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Adds a link from `span` to another span's context (e.g. a flush to the publishes it persisted).
pub fn add_link(span: &Span, other: opentelemetry::trace::SpanContext) {
    span.add_link(other);
}
