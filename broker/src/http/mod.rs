//! The broker's router: `/topics` (create, list, describe, publish, fetch records),
//! `/groups/{group}/offsets`, `/admin/flush`, `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json`, their OpenAPI document (`openapi.json` beside this file), and the shared
//! layers and fallbacks. [`error`] maps the domain's errors to statuses and codes.

pub mod error;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use common::http::{ServeConfig, healthz, openapi, with_layers};

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

/// The OpenAPI document of [`router`], kept beside it (checked by `test_openapi_matches_router`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the broker serves, by path. [`router`] registers exactly these, and the
/// OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/topics", get(routes::topics::list)),
        (
            "/topics/{ns}/{topic}",
            post(routes::topics::create).get(routes::topics::get),
        ),
        (
            "/topics/{ns}/{topic}/publish",
            post(routes::publish::publish),
        ),
        (
            "/topics/{ns}/{topic}/partitions/{partition}/records",
            get(routes::records::fetch),
        ),
        (
            "/groups/{group}/offsets",
            get(routes::groups::get).put(routes::groups::commit),
        ),
        ("/admin/flush", post(routes::admin::flush)),
        ("/healthz", get(healthz)),
        ("/readyz", get(routes::admin::readyz)),
        ("/metrics", get(routes::admin::metrics)),
        (openapi::PATH, openapi::route(OPENAPI)),
    ]
}

/// Every route of the broker, wrapped in the shared layers.
pub fn router(state: AppState) -> Router {
    let timeout =
        (state.cfg.durable_timeout() + Duration::from_secs(30)).max(Duration::from_secs(120));
    let cfg = ServeConfig {
        body_limit: body_limit(&state),
        request_timeout: timeout,
    };
    let api = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .with_state(state);
    with_layers(api, cfg)
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::Config;
    use crate::store::TopicKey;
    use crate::store::mem::MemStore;

    #[tokio::test]
    async fn test_openapi_matches_router() {
        // A loaded broker over an in-memory store, with the probed topic: the probes run the
        // real handlers (with empty bodies, so nothing is published).
        let cfg = Config {
            durable_timeout_ms: 2_000,
            ..Config::default()
        };
        let broker = Broker::new(cfg, Arc::new(MemStore::new()), CancellationToken::new());
        broker.clone().load_all().await;
        broker
            .create_topic(TopicKey::new("ns", "t"), 1)
            .await
            .unwrap();
        let app = router(broker);
        let paths: Vec<&str> = routes().into_iter().map(|(p, _)| p).collect();
        let samples = [
            ("ns", "ns"),
            ("topic", "t"),
            ("partition", "0"),
            ("group", "g"),
        ];
        if let Err(errors) = openapi::check_router(OPENAPI, &app, &paths, &samples).await {
            panic!("broker/src/http/openapi.json and the router disagree:\n{errors:#?}");
        }
    }
}
