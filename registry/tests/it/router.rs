//! The registry's REST API through its real router, over an in-memory log.

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Reg, assert_error, avro_record};

#[tokio::test]
async fn test_register_same_schema_same_id_and_versions() {
    let r = Reg::new().await;
    let v1 = avro_record("R", &["a"], &[]);
    let id1 = r.register_ok("s", &v1, None).await;
    // The same schema, spaced differently: same id, no new version.
    let spaced = v1.replace(',', " , ");
    assert_eq!(r.register_ok("s", &spaced, None).await, id1);
    // The same schema under another subject: same id, version 1 there.
    assert_eq!(r.register_ok("t", &v1, Some("AVRO")).await, id1);
    let v2 = avro_record("R", &["a"], &["b"]);
    let id2 = r.register_ok("s", &v2, None).await;
    assert_eq!(id2, id1 + 1);
    let (s, b) = r.call(Method::GET, "/subjects/s/versions", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!([1, 2])));
    let (s, b) = r
        .call(Method::GET, "/subjects/s/versions/latest", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["version"].as_u64(), b["id"].as_u64()),
        (Some(2), Some(id2))
    );
    assert!(
        b.get("schemaType").is_none(),
        "Avro leaves schemaType out: {b}"
    );
    let (s, b) = r
        .call(Method::GET, &format!("/schemas/ids/{id1}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["schema"].as_str(), Some(v1.as_str()));
    let (_, b) = r
        .call(Method::GET, &format!("/schemas/ids/{id1}/versions"), None)
        .await;
    assert_eq!(
        b,
        json!([{"subject":"s","version":1},{"subject":"t","version":1}])
    );
    let (_, b) = r.call(Method::GET, "/subjects", None).await;
    assert_eq!(b, json!(["s", "t"]));
    let (_, b) = r
        .call(Method::GET, "/subjects/s/versions/1/schema", None)
        .await;
    assert_eq!(b["type"], "record");
    let (_, b) = r.call(Method::GET, "/schemas/types", None).await;
    assert_eq!(b, json!(["JSON", "PROTOBUF", "AVRO"]));
    // Lookup.
    let (s, b) = r
        .call(Method::POST, "/subjects/s", Some(json!({"schema": spaced})))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["version"].as_u64(), b["id"].as_u64()),
        (Some(1), Some(id1))
    );
    let other = avro_record("Other", &["x"], &[]);
    let (s, b) = r
        .call(Method::POST, "/subjects/s", Some(json!({"schema": other})))
        .await;
    assert_error(s, &b, 404, 40403);
    let (s, b) = r
        .call(
            Method::POST,
            "/subjects/nope",
            Some(json!({"schema": other})),
        )
        .await;
    assert_error(s, &b, 404, 40401);
}

#[tokio::test]
async fn test_compatibility_levels_and_409() {
    let r = Reg::new().await;
    r.register_ok("s", &avro_record("R", &["a"], &[]), None)
        .await;
    // A new required field breaks BACKWARD (the default).
    let breaking = avro_record("R", &["a", "b"], &[]);
    let (s, b) = r.register("s", &breaking, None).await;
    assert_error(s, &b, 409, 409);
    let (s, b) = r
        .call(
            Method::POST,
            "/compatibility/subjects/s/versions/latest?verbose=true",
            Some(json!({"schema": breaking})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["is_compatible"], false);
    assert!(!b["messages"].as_array().unwrap().is_empty(), "{b}");
    // Under NONE for this subject it is accepted.
    let (s, b) = r
        .call(
            Method::PUT,
            "/config/s",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"compatibility": "NONE"})));
    let (_, b) = r.call(Method::GET, "/config/s", None).await;
    assert_eq!(b, json!({"compatibilityLevel": "NONE"}));
    r.register_ok("s", &breaking, None).await;
    // Global config and its reset; bad levels are 42203.
    let (s, _) = r
        .call(
            Method::PUT,
            "/config",
            Some(json!({"compatibility": "full_transitive"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = r.call(Method::GET, "/config", None).await;
    assert_eq!(b, json!({"compatibilityLevel": "FULL_TRANSITIVE"}));
    let (s, b) = r
        .call(
            Method::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
        )
        .await;
    assert_error(s, &b, 422, 42203);
    let (s, b) = r.call(Method::DELETE, "/config", None).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"compatibilityLevel": "FULL_TRANSITIVE"})
        )
    );
    let (_, b) = r.call(Method::GET, "/config", None).await;
    assert_eq!(b, json!({"compatibilityLevel": "BACKWARD"}));
    let (s, b) = r.call(Method::GET, "/config/other", None).await;
    assert_error(s, &b, 404, 40408);
    let (s, b) = r
        .call(Method::GET, "/config/other?defaultToGlobal=true", None)
        .await;
    assert_eq!(
        (s, b),
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );
}

#[tokio::test]
async fn test_json_and_protobuf_schemas() {
    let r = Reg::new().await;
    let j1 = r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#;
    let id = r.register_ok("j", j1, Some("JSON")).await;
    let (_, b) = r
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(b["schemaType"], "JSON");
    let j_bad = r#"{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}"#;
    let (s, b) = r.register("j", j_bad, Some("JSON")).await;
    assert_error(s, &b, 409, 409);
    let p1 = "syntax = \"proto3\";\npackage demo;\nmessage M { int32 a = 1; }\n";
    let p2 = "syntax = \"proto3\";\npackage demo;\nmessage M { int32 a = 1; string b = 2; }\n";
    let pid = r.register_ok("p", p1, Some("PROTOBUF")).await;
    let pid2 = r.register_ok("p", p2, Some("PROTOBUF")).await;
    assert!(pid2 > pid);
    let p_bad = "syntax = \"proto3\";\npackage demo;\nmessage M { string a = 1; }\n";
    let (s, b) = r.register("p", p_bad, Some("PROTOBUF")).await;
    assert_error(s, &b, 409, 409);
    let (s, b) = r.register("p", "message {", Some("PROTOBUF")).await;
    assert_error(s, &b, 422, 42201);
    // A reference: a protobuf file importing another subject's version.
    let dep = "syntax = \"proto3\";\npackage common;\nmessage Money { int64 cents = 1; }\n";
    r.register_ok("money", dep, Some("PROTOBUF")).await;
    let with_ref = json!({
        "schema": "syntax = \"proto3\";\nimport \"money.proto\";\nmessage Order { common.Money total = 1; }\n",
        "schemaType": "PROTOBUF",
        "references": [{"name": "money.proto", "subject": "money", "version": 1}],
    });
    let (s, b) = r
        .call(Method::POST, "/subjects/order/versions", Some(with_ref))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = r
        .call(Method::GET, "/subjects/order/versions/1", None)
        .await;
    assert_eq!(b["references"][0]["subject"], "money");
    let (_, b) = r
        .call(Method::GET, "/subjects/money/versions/1/referencedby", None)
        .await;
    assert_eq!(b.as_array().map(Vec::len), Some(1));
    // A referenced version cannot be deleted.
    let (s, b) = r
        .call(Method::DELETE, "/subjects/money/versions/1", None)
        .await;
    assert_error(s, &b, 422, 42206);
    let missing_ref = json!({
        "schema": "syntax = \"proto3\";\nimport \"x.proto\";\nmessage O { X x = 1; }\n",
        "schemaType": "PROTOBUF",
        "references": [{"name": "x.proto", "subject": "nope", "version": 1}],
    });
    let (s, b) = r
        .call(Method::POST, "/subjects/o2/versions", Some(missing_ref))
        .await;
    assert_error(s, &b, 422, 42201);
}

#[tokio::test]
async fn test_deletes_follow_confluents_rules() {
    let r = Reg::new().await;
    let v1 = avro_record("R", &["a"], &[]);
    let id1 = r.register_ok("s", &v1, None).await;
    r.register_ok("s", &avro_record("R", &["a"], &["b"]), None)
        .await;
    // Permanent before soft is refused.
    let (s, b) = r
        .call(
            Method::DELETE,
            "/subjects/s/versions/1?permanent=true",
            None,
        )
        .await;
    assert_error(s, &b, 404, 40407);
    let (s, b) = r
        .call(Method::DELETE, "/subjects/s?permanent=true", None)
        .await;
    assert_error(s, &b, 404, 40405);
    let (s, b) = r.call(Method::DELETE, "/subjects/s/versions/1", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!(1)));
    let (s, b) = r.call(Method::DELETE, "/subjects/s/versions/1", None).await;
    assert_error(s, &b, 404, 40406);
    let (_, b) = r.call(Method::GET, "/subjects/s/versions", None).await;
    assert_eq!(b, json!([2]));
    let (_, b) = r
        .call(Method::GET, "/subjects/s/versions?deleted=true", None)
        .await;
    assert_eq!(b, json!([1, 2]));
    let (s, b) = r.call(Method::GET, "/subjects/s/versions/1", None).await;
    assert_error(s, &b, 404, 40402);
    let (s, _) = r
        .call(Method::GET, "/subjects/s/versions/1?deleted=true", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = r.call(Method::DELETE, "/subjects/s", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!([2])));
    let (s, b) = r.call(Method::DELETE, "/subjects/s", None).await;
    assert_error(s, &b, 404, 40404);
    let (s, b) = r.call(Method::GET, "/subjects/s/versions", None).await;
    assert_error(s, &b, 404, 40401);
    let (_, b) = r.call(Method::GET, "/subjects?deleted=true", None).await;
    assert_eq!(b, json!(["s"]));
    let (s, b) = r
        .call(Method::DELETE, "/subjects/s?permanent=true", None)
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!([1, 2])));
    let (_, b) = r.call(Method::GET, "/subjects?deleted=true", None).await;
    assert_eq!(b, json!([]));
    // The id still resolves, and is never handed out again: re-registering the same schema
    // gets its old id back, a new schema the next one.
    let (s, _) = r
        .call(Method::GET, &format!("/schemas/ids/{id1}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r.register_ok("s", &v1, None).await, id1);
    let id3 = r
        .register_ok("u", &avro_record("U", &["z"], &[]), None)
        .await;
    assert_eq!(id3, id1 + 2);
}

#[tokio::test]
async fn test_index_is_rebuilt_from_the_log() {
    let r = Reg::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            r.register_ok(
                &format!("s{i}"),
                &avro_record(&format!("R{i}"), &["a"], &[]),
                None,
            )
            .await,
        );
    }
    r.call(Method::DELETE, "/subjects/s0", None).await;
    r.call(
        Method::PUT,
        "/config",
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    // Confluent's key layout is what is on the log.
    let records = r.log.records();
    assert_eq!(
        records[0].0,
        r#"{"keytype":"SCHEMA","subject":"s0","version":1,"magic":1}"#
    );
    assert!(records.iter().any(|(k, _)| k.contains("DELETE_SUBJECT")));
    let again = Reg::over(r.log.clone()).await;
    for (i, id) in ids.iter().enumerate() {
        let (s, b) = again
            .call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "schema {i}");
        assert!(b["schema"].as_str().unwrap().contains(&format!("R{i}")));
    }
    let (_, b) = again.call(Method::GET, "/subjects", None).await;
    assert_eq!(b, json!(["s1", "s2", "s3", "s4"]));
    let (_, b) = again.call(Method::GET, "/config", None).await;
    assert_eq!(b["compatibilityLevel"], "FULL");
    // The next id continues after the largest in the log.
    let next = again
        .register_ok("n", &avro_record("N", &["a"], &[]), None)
        .await;
    assert_eq!(next, ids.iter().max().unwrap() + 1);
}

#[tokio::test]
async fn test_lost_answer_never_reuses_an_id() {
    let r = Reg::new().await;
    let a = avro_record("A", &["a"], &[]);
    let id_a = r.register_ok("s", &a, None).await;
    // The write of B lands in the log but its answer is lost: the client sees a 503.
    r.log.lose_next_answer.store(true, Ordering::SeqCst);
    let b_schema = avro_record("B", &["b"], &[]);
    let (s, body) = r.register("b", &b_schema, None).await;
    assert_error(s, &body, 503, 50001);
    // The next write first catches up with the log: C gets a fresh id, and B's retry finds the
    // version that did land, with its id.
    let id_c = r
        .register_ok("c", &avro_record("C", &["c"], &[]), None)
        .await;
    assert_eq!(id_c, id_a + 2);
    assert_eq!(r.register_ok("b", &b_schema, None).await, id_a + 1);
    let (_, v) = r.call(Method::GET, "/subjects/b/versions", None).await;
    assert_eq!(v, json!([1]));
}

#[tokio::test]
async fn test_a_write_on_top_of_records_it_has_not_seen_is_refused() {
    let r = Reg::new().await;
    let id_a = r
        .register_ok("s", &avro_record("A", &["a"], &[]), None)
        .await;
    // Another instance (a writer whose lease this one took over, still running) appends a
    // schema with the next id right before this one writes: this write must not land on
    // top of it with the same id.
    let (other_key, other_value) = (
        json!({"keytype": "SCHEMA", "subject": "other", "version": 1, "magic": 1}).to_string(),
        json!({"subject": "other", "version": 1, "id": id_a + 1,
               "schema": avro_record("O", &["o"], &[]), "deleted": false})
        .to_string(),
    );
    *r.log.interloper.lock().unwrap() = Some((other_key, other_value));
    let before = r.log.records().len();
    let b_schema = avro_record("B", &["b"], &[]);
    let (s, body) = r.register("b", &b_schema, None).await;
    assert_error(s, &body, 503, 50001);
    assert_eq!(
        r.log.records().len(),
        before + 1,
        "only the other writer's record landed"
    );
    // The retry sees the other writer's schema and takes the next id.
    let id_b = r.register_ok("b", &b_schema, None).await;
    assert_eq!(id_b, id_a + 2);
    let (_, o) = r
        .call(Method::GET, &format!("/schemas/ids/{}", id_a + 1), None)
        .await;
    assert!(o["schema"].as_str().unwrap().contains("\"O\""), "{o}");
}

#[tokio::test]
async fn test_store_down_is_a_503_and_readonly_mode_refuses_writes() {
    let r = Reg::new().await;
    r.log.down.store(true, Ordering::SeqCst);
    let (s, b) = r.register("s", "\"int\"", None).await;
    assert_error(s, &b, 503, 50001);
    r.log.down.store(false, Ordering::SeqCst);
    let (s, b) = r
        .call(Method::PUT, "/mode", Some(json!({"mode": "READONLY"})))
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"mode": "READONLY"})));
    let (s, b) = r.register("s", "\"int\"", None).await;
    assert_error(s, &b, 422, 42205);
    let (s, b) = r
        .call(Method::PUT, "/mode", Some(json!({"mode": "SIDEWAYS"})))
        .await;
    assert_error(s, &b, 422, 42204);
    let (_, b) = r.call(Method::GET, "/mode", None).await;
    assert_eq!(b, json!({"mode": "READONLY"}));
}

#[tokio::test]
async fn test_bad_input_gets_confluent_error_bodies() {
    let r = Reg::new().await;
    // Invalid schemas of every type.
    for (schema, t) in [
        ("{\"type\":\"nope\"}", None),
        ("not json", None),
        ("", None),
        ("[1]", Some("JSON")),
        ("message {", Some("PROTOBUF")),
    ] {
        let (s, b) = r.register("s", schema, t).await;
        assert_error(s, &b, 422, 42201);
    }
    let (s, b) = r.register("s", "\"int\"", Some("XML")).await;
    assert_error(s, &b, 422, 42201);
    // Unknown subject, version, id; bad version strings.
    let (s, b) = r.call(Method::GET, "/subjects/none/versions", None).await;
    assert_error(s, &b, 404, 40401);
    r.register_ok("s", "\"int\"", None).await;
    let (s, b) = r.call(Method::GET, "/subjects/s/versions/7", None).await;
    assert_error(s, &b, 404, 40402);
    for v in ["0", "-2", "x", "99999999999"] {
        let (s, b) = r
            .call(Method::GET, &format!("/subjects/s/versions/{v}"), None)
            .await;
        assert_error(s, &b, 422, 42202);
    }
    for id in ["999", "abc", "-1"] {
        let (s, b) = r
            .call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await;
        assert_error(s, &b, 404, 40403);
    }
    // Wrong content type, malformed and mis-shaped JSON, empty and huge bodies.
    let (s, b) = r
        .raw(
            Method::POST,
            "/subjects/s/versions",
            Some("text/plain"),
            Some(b"{\"schema\":\"\\\"int\\\"\"}".to_vec()),
        )
        .await;
    assert_error(s, &b, 415, 415);
    for ct in [
        "application/json",
        "application/vnd.schemaregistry+json",
        "application/vnd.schemaregistry.v1+json; charset=utf-8",
    ] {
        let (s, b) = r
            .raw(
                Method::POST,
                "/subjects/s/versions",
                Some(ct),
                Some(b"{\"schema\":\"\\\"int\\\"\"}".to_vec()),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{ct}: {b}");
    }
    let (s, b) = r
        .raw(
            Method::POST,
            "/subjects/s/versions",
            Some("application/json"),
            Some(b"{".to_vec()),
        )
        .await;
    assert_error(s, &b, 400, 400);
    let (s, b) = r
        .raw(
            Method::POST,
            "/subjects/s/versions",
            Some("application/json"),
            Some(b"{\"schema\":1}".to_vec()),
        )
        .await;
    assert_error(s, &b, 422, 422);
    let (s, b) = r
        .raw(Method::POST, "/subjects/s/versions", None, None)
        .await;
    assert_error(s, &b, 422, 422);
    let huge = json!({"schema": "x".repeat(200 << 10)})
        .to_string()
        .into_bytes();
    let (s, b) = r
        .raw(
            Method::POST,
            "/subjects/s/versions",
            Some("application/json"),
            Some(huge),
        )
        .await;
    assert_error(s, &b, 413, 413);
    // The shared layers' answers get Confluent's body too.
    let (s, b) = r.call(Method::GET, "/no/such/route", None).await;
    assert_error(s, &b, 404, 404);
    let (s, b) = r.call(Method::PATCH, "/subjects", None).await;
    assert_error(s, &b, 405, 405);
    // A subject with control characters is refused.
    let (s, b) = r.register("a%01b", "\"int\"", None).await;
    assert_error(s, &b, 422, 42208);
}
