//! OpenAPI 3 documents of the services' HTTP APIs.
//!
//! Each service keeps its document as `openapi.json` beside its router, serves it at
//! [`PATH`] with [`route`], and checks it against the router in a unit test with
//! [`check_router`]: the document must describe exactly the routes the router serves, so a
//! route added to one and not the other fails the build's tests. `scripts/api-fuzz.sh` then
//! runs a property-based fuzzer (schemathesis) driven by the served documents against the real
//! binaries.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::routing::{MethodRouter, get};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::ErrorBody;

/// Where every service serves its document.
pub const PATH: &str = "/openapi.json";

/// The operation keys of an OpenAPI path item.
const DOC_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The methods [`check_router`] probes on every path.
const PROBE_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

/// A `GET` (and so `HEAD`) route serving `doc` as `application/json`.
pub fn route<S: Clone + Send + Sync + 'static>(doc: &'static str) -> MethodRouter<S> {
    get(move || async move {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            doc,
        )
    })
}

/// An axum path (`/{fid}`, `/{*path}`) written as an OpenAPI path template (`/{fid}`,
/// `/{path}`): a wildcard is one parameter whose value may contain `/`.
pub fn template(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// Parses `doc` and checks that it is an OpenAPI 3 document whose local `$ref`s resolve and
/// whose path templates declare their parameters. Returns its operations as
/// `(METHOD, path template)`.
pub fn operations(doc: &str) -> Result<BTreeSet<(Method, String)>, String> {
    let v: Value = serde_json::from_str(doc).map_err(|e| format!("not JSON: {e}"))?;
    if !v["openapi"].as_str().is_some_and(|s| s.starts_with("3.")) {
        return Err("`openapi` is not a 3.x version".to_owned());
    }
    let mut broken = Vec::new();
    check_refs(&v, &v, &mut broken);
    if !broken.is_empty() {
        return Err(format!("unresolved $refs: {broken:?}"));
    }
    let paths = v["paths"]
        .as_object()
        .ok_or("the document has no `paths` object")?;
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .ok_or_else(|| format!("path item {path} is not an object"))?;
        let shared = item.get("parameters");
        for (key, op) in item {
            if !DOC_METHODS.contains(&key.as_str()) {
                continue;
            }
            for name in template_params(path) {
                let declared = [shared, op.get("parameters")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_array)
                    .flatten()
                    .map(|p| resolve(&v, p))
                    .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true);
                if !declared {
                    return Err(format!(
                        "{key} {path} does not declare the required path parameter {name:?}"
                    ));
                }
            }
            let method = Method::from_bytes(key.to_ascii_uppercase().as_bytes())
                .map_err(|e| format!("bad method {key}: {e}"))?;
            ops.insert((method, path.clone()));
        }
    }
    Ok(ops)
}

/// The `{name}`s of a path template.
fn template_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name))
        .collect()
}

/// Follows a local `$ref` (one level, as parameters use them).
fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .unwrap_or(&Value::Null),
        None => v,
    }
}

fn check_refs(root: &Value, v: &Value, broken: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && r.strip_prefix('#').and_then(|p| root.pointer(p)).is_none()
            {
                broken.push(r.clone());
            }
            map.values().for_each(|c| check_refs(root, c, broken));
        }
        Value::Array(items) => items.iter().for_each(|c| check_refs(root, c, broken)),
        _ => {}
    }
}

/// Checks that `router` serves exactly the operations of `doc`.
///
/// - `paths` are the paths the router registers (in axum syntax); as templates they must be
///   exactly the document's paths.
/// - Each path is then sent `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH` and `OPTIONS`
///   with an empty body, its parameters filled in from `samples` (`(name, value)`). A method
///   counts as served unless the router's fallbacks answer: a 405, or a 404 with code
///   `no_route`. It must be served exactly when the document lists it; `HEAD` is served
///   wherever `GET` is (axum answers it with the `GET` handler), so it is expected wherever the
///   document lists `GET` or `HEAD`.
///
/// The probes run the real handlers, so `router` should sit on throwaway state. Returns every
/// mismatch found.
pub async fn check_router(
    doc: &str,
    router: &Router,
    paths: &[&str],
    samples: &[(&str, &str)],
) -> Result<(), Vec<String>> {
    let ops = operations(doc).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let doc_paths: BTreeSet<&str> = ops.iter().map(|(_, p)| p.as_str()).collect();
    let routed: BTreeSet<String> = paths.iter().map(|p| template(p)).collect();
    for p in &routed {
        if !doc_paths.contains(p.as_str()) {
            errors.push(format!("route {p} is not in the OpenAPI document"));
        }
    }
    for p in &doc_paths {
        if !routed.contains(*p) {
            errors.push(format!("documented path {p} is not routed"));
        }
    }
    for p in &routed {
        let mut uri = p.clone();
        for name in template_params(p) {
            match samples.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => uri = uri.replace(&format!("{{{name}}}"), value),
                None => errors.push(format!("no sample value for parameter {name} of {p}")),
            }
        }
        let documented = |m: &Method| ops.contains(&(m.clone(), p.clone()));
        for method in PROBE_METHODS {
            let expected =
                documented(&method) || (method == Method::HEAD && documented(&Method::GET));
            let served = match probe(router, method.clone(), &uri).await {
                Ok(served) => served,
                Err(e) => {
                    errors.push(format!("{method} {uri}: {e}"));
                    continue;
                }
            };
            match (expected, served) {
                (true, false) => errors.push(format!(
                    "{method} {p} is documented but the router does not serve it"
                )),
                (false, true) => errors.push(format!(
                    "{method} {p} is served but not in the OpenAPI document"
                )),
                _ => {}
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether `method uri` reaches a handler rather than a fallback.
async fn probe(router: &Router, method: Method, uri: &str) -> Result<bool, String> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .map_err(|e| format!("build request: {e}"))?;
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| format!("router failed: {e}"))?;
    let status = resp.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Ok(false);
    }
    if status != StatusCode::NOT_FOUND {
        return Ok(true);
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .to_bytes();
    Ok(serde_json::from_slice::<ErrorBody>(&body).map_or(true, |b| b.code != "no_route"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"{
      "openapi": "3.0.3",
      "info": {"title": "t", "version": "1"},
      "paths": {
        "/a": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/{id}": {
          "parameters": [{"$ref": "#/components/parameters/Id"}],
          "put": {"responses": {"200": {"description": "ok"}}}
        }
      },
      "components": {"parameters": {"Id": {"name": "id", "in": "path", "required": true,
        "schema": {"type": "string"}}}}
    }"##;

    fn app() -> Router {
        let routes = Router::new()
            .route("/a", get(|| async { "a" }))
            .route("/{*id}", axum::routing::put(|| async { "id" }));
        super::super::with_layers(routes, super::super::ServeConfig::default())
    }

    #[test]
    fn test_operations_lists_methods_and_checks_refs() {
        let ops = operations(DOC).unwrap();
        assert_eq!(
            ops.into_iter().collect::<Vec<_>>(),
            vec![
                (Method::GET, "/a".to_owned()),
                (Method::PUT, "/{id}".to_owned())
            ]
        );
        let broken = DOC.replace("#/components/parameters/Id", "#/components/parameters/X");
        assert!(operations(&broken).unwrap_err().contains("$ref"));
        assert!(operations("{").is_err());
        let undeclared = DOC.replace("\"name\": \"id\"", "\"name\": \"other\"");
        assert!(operations(&undeclared).unwrap_err().contains("id"));
    }

    #[tokio::test]
    async fn test_check_router_accepts_a_matching_document() {
        check_router(DOC, &app(), &["/a", "/{*id}"], &[("id", "x")])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn test_check_router_reports_undocumented_and_unserved_routes() {
        // A path routed but not documented.
        let errors = check_router(DOC, &app(), &["/a", "/{*id}", "/b"], &[("id", "x")])
            .await
            .unwrap_err();
        assert!(errors.iter().any(|e| e.contains("/b")), "{errors:?}");
        // A method documented but not served, and one served but not documented.
        let doc = DOC.replace("\"put\"", "\"post\"");
        let errors = check_router(&doc, &app(), &["/a", "/{*id}"], &[("id", "x")])
            .await
            .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("POST /{id} is documented")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("PUT /{id} is served")),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn test_route_serves_the_document_as_json() {
        let app: Router = Router::new().route(PATH, route(DOC));
        let resp = app
            .oneshot(Request::get(PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], DOC.as_bytes());
    }
}
