//! The broker's router: routes, shared layers and fallbacks.

mod extract;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::http::{ServeConfig, healthz, with_layers};

pub use extract::Path;

use crate::service::Broker;

/// The state every handler gets.
pub type AppState = Arc<Broker>;

/// Slack added to the largest record bytes for JSON quoting and base64.
const BODY_SLACK: usize = 1 << 20;

/// The largest publish body read: JSON with base64 values is about 4/3 of the raw bytes.
pub fn body_limit(broker: &Broker) -> usize {
    (broker.cfg.max_batch_bytes as usize)
        .saturating_mul(2)
        .saturating_add(BODY_SLACK)
}

/// Every route of the broker, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    let timeout =
        (state.cfg.durable_timeout() + Duration::from_secs(30)).max(Duration::from_secs(120));
    let cfg = ServeConfig {
        body_limit: body_limit(&state),
        request_timeout: timeout,
    };
    let api = Router::new()
        .route("/topics", get(routes::topics::list))
        .route(
            "/topics/{ns}/{topic}",
            post(routes::topics::create).get(routes::topics::get),
        )
        .route(
            "/topics/{ns}/{topic}/publish",
            post(routes::publish::publish),
        )
        .route(
            "/topics/{ns}/{topic}/partitions/{partition}/records",
            get(routes::records::fetch),
        )
        .route(
            "/groups/{group}/offsets",
            get(routes::groups::get).put(routes::groups::commit),
        )
        .route("/admin/flush", post(routes::admin::flush))
        .route("/healthz", get(healthz))
        .route("/readyz", get(routes::admin::readyz))
        .route("/metrics", get(routes::admin::metrics))
        .with_state(state);
    with_layers(api, cfg)
}
