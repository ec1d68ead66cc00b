//! The broker's router: `/topics` (create, list, describe, publish, fetch records),
//! `/groups/{group}/offsets`, `/admin/flush`, `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json`, their OpenAPI document (`openapi.json` beside this file), and the shared
//! layers and fallbacks. [`error`] maps the domain's errors to statuses and codes.
//!
//! Who may call what (`Access`, one route layer per group in [`router`]): topics, publishes,
//! fetches and consumer-group offsets are client routes (the CLI's `pub`/`sub`, applications)
//! and, with `--api-keys-file`, need a key: `GET` a read key, anything else (create, publish,
//! commit an offset) a write key; 401 without a valid one, 403 for a read key writing.
//! `/admin/flush` is an operator route (the CLI's bench, the e2e suites) and, with
//! `--cluster-token-file`, needs the cluster token. The cluster token passes every client
//! check; health, readiness, metrics and the OpenAPI document stay open. The Kafka listener
//! has its own guard (TLS and SASL/PLAIN with a write key: `kafka::sasl`).

pub mod error;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, post};
use common::http::{ServeConfig, healthz, openapi, with_layers};
use common::security::{Security, require_client, require_cluster};

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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: probes, scrapers, the API document.
    Open,
    /// Clients: an API key of the method's scope (or the cluster token), when keys are set.
    Client,
    /// Kelp services and operators: the cluster token, when one is set.
    Cluster,
}

/// Every route the broker serves, by path, with who may call it. [`router`] registers exactly
/// these, and the OpenAPI test checks them against [`OPENAPI`].
fn routes() -> Vec<(&'static str, Access, MethodRouter<AppState>)> {
    vec![
        ("/topics", Access::Client, get(routes::topics::list)),
        (
            "/topics/{ns}/{topic}",
            Access::Client,
            post(routes::topics::create).get(routes::topics::get),
        ),
        (
            "/topics/{ns}/{topic}/publish",
            Access::Client,
            post(routes::publish::publish),
        ),
        (
            "/topics/{ns}/{topic}/partitions/{partition}/records",
            Access::Client,
            get(routes::records::fetch),
        ),
        (
            "/groups/{group}/offsets",
            Access::Client,
            get(routes::groups::get).put(routes::groups::commit),
        ),
        ("/admin/flush", Access::Cluster, post(routes::admin::flush)),
        ("/healthz", Access::Open, get(healthz)),
        ("/readyz", Access::Open, get(routes::admin::readyz)),
        ("/metrics", Access::Open, get(routes::admin::metrics)),
        (openapi::PATH, Access::Open, openapi::route(OPENAPI)),
    ]
}

/// Middleware: a standby answers a client route with a 307 to the same path and query on the
/// active broker (the method and body are kept); an active broker serves it.
async fn to_active(
    State((broker, tls)): State<(AppState, bool)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(active) = broker.standby_of() else {
        return next.run(req).await;
    };
    let scheme = if tls { "https" } else { "http" };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{scheme}://{active}{path}");
    match axum::http::HeaderValue::from_str(&location) {
        Ok(v) => (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, v)],
            axum::Json(serde_json::json!({
                "error": format!("this broker is a standby; the active broker is {active}"),
                "code": "standby",
                "active": active,
            })),
        )
            .into_response(),
        Err(e) => common::http::ApiError::internal(e).into_response(),
    }
}

/// A domain error as the answer to the request at `uri`: [`Error::NotOwner`] naming the
/// partition's owner becomes a 307 to the same path and query there (method and body kept),
/// marked `redirected=true`; a request that already carries the mark (its query's
/// `redirected`) gets 503 `not_owner` with `Retry-After` instead (at most one hop: while two brokers' member views differ they
/// could otherwise bounce it between them); everything else maps as usual (`error`).
///
/// [`Error::NotOwner`]: crate::service::Error::NotOwner
pub fn to_owner(
    e: crate::service::Error,
    uri: &axum::http::Uri,
    redirected: bool,
) -> common::http::ApiError {
    match e {
        crate::service::Error::NotOwner {
            owner: Some(ref owner),
            ..
        } if !redirected => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let sep = if uri.query().is_some() { '&' } else { '?' };
            common::http::ApiError::Redirect {
                code: "not_owner",
                location: format!("{}{path}{sep}redirected=true", owner.trim_end_matches('/')),
                message: e.to_string(),
            }
        }
        e => e.into(),
    }
}

/// Every route of the broker, guarded with `security` (`Access`) and wrapped in the shared
/// layers.
pub fn router(state: AppState, security: Arc<Security>) -> Router {
    let timeout =
        (state.cfg.durable_timeout() + Duration::from_secs(30)).max(Duration::from_secs(120));
    let cfg = ServeConfig {
        body_limit: body_limit(&state),
        request_timeout: timeout,
    };
    let (open, client, cluster) = routes().into_iter().fold(
        (Router::new(), Router::new(), Router::new()),
        |(open, client, cluster), (path, access, handlers)| match access {
            Access::Open => (open.route(path, handlers), client, cluster),
            Access::Client => (open, client.route(path, handlers), cluster),
            Access::Cluster => (open, client, cluster.route(path, handlers)),
        },
    );
    // The standby redirect runs after the access check (the outer layer).
    let client = client.route_layer(from_fn_with_state(
        (state.clone(), security.serves_tls()),
        to_active,
    ));
    let api = open
        .merge(client.route_layer(from_fn_with_state(security.clone(), require_client)))
        .merge(cluster.route_layer(from_fn_with_state(security, require_cluster)))
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
        let app = router(broker, Arc::default());
        let paths: Vec<&str> = routes().into_iter().map(|(p, _, _)| p).collect();
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
