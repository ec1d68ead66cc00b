//! HTTP plumbing every service shares: the JSON error type, extractors whose rejections use
//! that error body, the one `Range` parser and multipart file part, the layer stack (trace context, request ids, spans, timeouts) and the serve
//! loop with graceful shutdown, and the [`openapi`] helpers that serve and check each service's
//! OpenAPI document.

mod error;
mod extract;
pub mod multipart;
pub mod openapi;
pub mod range;
mod server;

pub use error::{ApiError, ErrorBody};
pub use extract::{Json, Path, Query};
pub use server::{
    ServeConfig, ServeOptions, fallback_not_found, healthz, method_not_allowed, serve, serve_with,
    with_layers, write_addrs, write_addrs_file,
};
