//! The schema registry (`kelp-registry`) on a real cluster: schemas survive a SIGKILL of every
//! service (the incident's check: 10 of 10 verify by id and by subject/version),
//! confluent-kafka's Python client registers, serializes and deserializes through it, and bad
//! input gets Confluent's error bodies, never a 500.

use std::path::Path;
use std::time::Duration;

use e2e::server::KelpServer;
use e2e::{Cluster, ClusterOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";

/// A cluster with a registry. The broker's Kafka listener (where the broker has one) is off, so
/// these tests can run side by side.
fn options() -> ClusterOptions {
    ClusterOptions {
        env: vec![("KELP_KAFKA_PORT".to_owned(), "0".to_owned())],
        ..ClusterOptions::with_registry()
    }
}

/// A raw-HTTP client of the registry.
struct Registry {
    http: reqwest::Client,
    base: String,
}

impl Registry {
    fn new(url: String) -> Self {
        Self {
            http: e2e::http_client_builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: url,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", CT).body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn register(&self, subject: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(body),
        )
        .await
    }
}

/// One registered schema: where it was registered and what it must read back as.
struct Registered {
    subject: &'static str,
    version: u64,
    id: u64,
    schema: String,
    schema_type: &'static str,
}

fn avro(name: &str, fields: Value) -> String {
    json!({"type": "record", "name": name, "namespace": "kelp.e2e", "fields": fields}).to_string()
}

/// The 10 schemas of the incident's check, in registration order: `(subject, type, schema,
/// references)`. Versions 2 of `orders-value` and `events-json` are compatible evolutions.
fn ten_schemas() -> Vec<(&'static str, &'static str, String, Value)> {
    let money = "syntax = \"proto3\";\npackage kelp.e2e;\nmessage Money {\n  int64 units = 1;\n  string currency = 2;\n}\n";
    vec![
        ("orders-value", "AVRO", avro("Order", json!([{"name": "id", "type": "long"}])), json!([])),
        (
            "orders-value",
            "AVRO",
            avro("Order", json!([{"name": "id", "type": "long"}, {"name": "note", "type": "string", "default": ""}])),
            json!([]),
        ),
        ("users-value", "AVRO", avro("User", json!([{"name": "name", "type": "string"}])), json!([])),
        (
            "payments-value",
            "AVRO",
            avro("Payment", json!([{"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CARD", "CASH"]}}])),
            json!([]),
        ),
        (
            "events-json",
            "JSON",
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}).to_string(),
            json!([]),
        ),
        (
            "events-json",
            "JSON",
            json!({"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}).to_string(),
            json!([]),
        ),
        (
            "metrics-json",
            "JSON",
            json!({"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "number"}}}).to_string(),
            json!([]),
        ),
        ("money-proto", "PROTOBUF", money.to_owned(), json!([])),
        (
            "invoice-proto",
            "PROTOBUF",
            "syntax = \"proto3\";\npackage kelp.e2e;\nimport \"money.proto\";\nmessage Invoice {\n  string number = 1;\n  Money total = 2;\n}\n".to_owned(),
            json!([{"name": "money.proto", "subject": "money-proto", "version": 1}]),
        ),
        (
            "shipments-proto",
            "PROTOBUF",
            "syntax = \"proto3\";\npackage kelp.e2e.ship;\nmessage Shipment {\n  string id = 1;\n  repeated string parcels = 2;\n}\n".to_owned(),
            json!([]),
        ),
    ]
}

/// How many of `regs` read back exactly, by id and by subject/version.
async fn verified(reg: &Registry, regs: &[Registered]) -> usize {
    let mut ok = 0;
    for r in regs {
        let (s1, by_id) = reg.get(&format!("/schemas/ids/{}", r.id)).await;
        let (s2, by_version) = reg
            .get(&format!("/subjects/{}/versions/{}", r.subject, r.version))
            .await;
        let type_of = |v: &Value| v["schemaType"].as_str().unwrap_or("AVRO").to_owned();
        let good = s1 == StatusCode::OK
            && s2 == StatusCode::OK
            && by_id["schema"].as_str() == Some(r.schema.as_str())
            && type_of(&by_id) == r.schema_type
            && by_version["id"].as_u64() == Some(r.id)
            && by_version["schema"].as_str() == Some(r.schema.as_str())
            && type_of(&by_version) == r.schema_type;
        if good {
            ok += 1;
        } else {
            eprintln!(
                "{}/{} (id {}) did not verify: {by_id} {by_version}",
                r.subject, r.version, r.id
            );
        }
    }
    ok
}

#[tokio::test]
async fn given_ten_registered_schemas_when_every_service_is_sigkilled_and_restarted_should_verify_ten_of_ten()
 {
    let mut cluster = Cluster::start(options()).await.unwrap();
    let reg = Registry::new(cluster.registry().url());
    let mut regs = Vec::new();
    let mut versions: std::collections::HashMap<&str, u64> = Default::default();
    for (subject, schema_type, schema, references) in ten_schemas() {
        let (s, b) = reg
            .register(
                subject,
                json!({"schema": schema, "schemaType": schema_type, "references": references}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{subject}: {b}");
        let version = versions.entry(subject).or_default();
        *version += 1;
        regs.push(Registered {
            subject,
            version: *version,
            id: b["id"].as_u64().unwrap(),
            schema,
            schema_type,
        });
    }
    // One incompatible evolution is refused: a new field without a default breaks BACKWARD.
    let bad = avro(
        "Order",
        json!([{"name": "id", "type": "long"}, {"name": "amount", "type": "double"}]),
    );
    let (s, b) = reg.register("orders-value", json!({"schema": bad})).await;
    assert_eq!(
        (s, b["error_code"].as_u64()),
        (StatusCode::CONFLICT, Some(409)),
        "{b}"
    );
    let ids: std::collections::BTreeSet<u64> = regs.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 10, "ten different schemas, ten ids");
    assert_eq!(verified(&reg, &regs).await, 10);

    cluster.kill_all_and_restart().await.unwrap();

    let reg = Registry::new(cluster.registry().url());
    let ok = verified(&reg, &regs).await;
    eprintln!("schemas verified after SIGKILL of every service: {ok}/10");
    assert_eq!(ok, 10, "{ok}/10 schemas verified after the restart");
    // The rejected evolution is still rejected, and the next id continues past the largest.
    let (s, _) = reg.register("orders-value", json!({"schema": bad})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, b) = reg
        .register(
            "after-value",
            json!({"schema": avro("After", json!([{"name": "x", "type": "int"}]))}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"].as_u64(), Some(ids.iter().max().unwrap() + 1));
    // The records are on the broker topic, in Confluent's key layout.
    let broker = cluster.broker().url();
    let recs: Value = e2e::get(format!(
        "{broker}/topics/registry/_schemas/partitions/0/records?offset=0&limit=100"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let first_key: Value =
        serde_json::from_str(recs["records"][0]["key"].as_str().unwrap()).unwrap();
    assert_eq!(
        first_key,
        json!({"keytype": "SCHEMA", "subject": "orders-value", "version": 1, "magic": 1})
    );
    assert_eq!(recs["durable_offset"].as_u64(), Some(11));
}

fn python_client(script: &Path, url: &str, mode: &str, state: &Path, kafka: &str) -> Value {
    let out = std::process::Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .arg(script)
        .arg(url)
        .arg(mode)
        .arg(state)
        .env("KELP_KAFKA_BOOTSTRAP", kafka)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "registry_client.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary line")
}

#[tokio::test]
async fn given_confluents_python_client_when_it_produces_avro_through_kafka_should_consume_and_deserialize_after_a_sigkill_restart()
 {
    // The broker's Kafka listener on a free port (the same one again after the restart).
    let kafka_port = e2e::kafka::free_port().to_string();
    let mut cluster = Cluster::start(ClusterOptions {
        broker_args: vec!["--kafka-port".into(), kafka_port],
        ..ClusterOptions::with_registry()
    })
    .await
    .unwrap();
    let kafka = e2e::kafka::kafka_addr(cluster.broker());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry_client.py");
    let state = cluster.root().join("python-client.json");
    let url = cluster.registry().url();
    let summary = python_client(&script, &url, "register", &state, &kafka);
    assert_eq!(summary["registered"], 3, "{summary}");
    assert_eq!(summary["serialized"], 6, "{summary}");
    assert_eq!(summary["kafka"], true, "{summary}");

    cluster.kill_all_and_restart().await.unwrap();

    let url = cluster.registry().url();
    let kafka = e2e::kafka::kafka_addr(cluster.broker());
    let summary = python_client(&script, &url, "verify", &state, &kafka);
    eprintln!("python client after SIGKILL restart: {summary}");
    assert_eq!(summary["verified"], 3, "{summary}");
    assert_eq!(summary["of"], 3, "{summary}");
    // 5 records produced through Kafka and consumed back, plus one kept locally.
    assert_eq!(summary["deserialized"], 6, "{summary}");
    assert_eq!(summary["kafka"], true, "{summary}");
}

#[tokio::test]
async fn given_bad_input_when_sent_to_the_registry_should_answer_confluent_errors_never_500() {
    let mut cluster = Cluster::start(options()).await.unwrap();
    let reg = Registry::new(cluster.registry().url());
    let (s, _) = reg.register("s", json!({"schema": "\"string\""})).await;
    assert_eq!(s, StatusCode::OK);
    let code = |b: &Value| b["error_code"].as_u64();
    let cases: Vec<(StatusCode, Value, u16, u64)> = vec![
        {
            let (s, b) = reg
                .register("s", json!({"schema": "{\"type\": \"recrd\"}"}))
                .await;
            (s, b, 422, 42201)
        },
        {
            let (s, b) = reg
                .register(
                    "s",
                    json!({"schema": "message {", "schemaType": "PROTOBUF"}),
                )
                .await;
            (s, b, 422, 42201)
        },
        {
            let (s, b) = reg
                .register("s", json!({"schema": "[]", "schemaType": "JSON"}))
                .await;
            (s, b, 422, 42201)
        },
        {
            let (s, b) = reg.get("/subjects/unknown/versions/1").await;
            (s, b, 404, 40401)
        },
        {
            let (s, b) = reg.get("/subjects/s/versions/9").await;
            (s, b, 404, 40402)
        },
        {
            let (s, b) = reg.get("/subjects/s/versions/nine").await;
            (s, b, 422, 42202)
        },
        {
            let (s, b) = reg.get("/schemas/ids/424242").await;
            (s, b, 404, 40403)
        },
    ];
    for (s, b, want, want_code) in cases {
        assert_eq!((s.as_u16(), code(&b)), (want, Some(want_code)), "{b}");
        assert!(b["message"].is_string(), "{b}");
    }
    // Wrong content type, malformed JSON, a huge body (the default limit is 1 MiB).
    let url = format!("{}/subjects/s/versions", cluster.registry().url());
    let http = e2e::http_client();
    let raw = |ct: &'static str, body: Vec<u8>| {
        http.post(&url).header("content-type", ct).body(body).send()
    };
    let r = raw("text/plain", b"{\"schema\":\"\\\"int\\\"\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(code(&r.json().await.unwrap()), Some(415));
    let r = raw("application/json", b"{\"schema\":".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.json().await.unwrap()), Some(400));
    let huge = json!({"schema": "x".repeat(2 << 20)})
        .to_string()
        .into_bytes();
    let r = raw("application/vnd.schemaregistry+json", huge)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&r.json().await.unwrap()), Some(413));
    // The registry is still serving, and nothing above was a 5xx or a panic.
    let (s, b) = reg.get("/subjects").await;
    assert_eq!((s, b), (StatusCode::OK, json!(["s"])));
    assert!(cluster.registry().panics().is_empty());
}

/// The registry's URL once `kelp server` wrote its address and it is ready.
async fn server_registry(dir: &Path) -> String {
    KelpServer::ready_url(dir, "registry").await
}

#[tokio::test]
async fn given_kelp_server_when_stopped_with_sigterm_and_restarted_should_keep_the_registrys_schemas()
 {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = KelpServer::start(tmp.path());
    let reg = Registry::new(server_registry(tmp.path()).await);
    let schema = avro("Quick", json!([{"name": "a", "type": "int"}]));
    let (s, b) = reg.register("quick-value", json!({"schema": schema})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_u64().unwrap();
    // SIGTERM: the registry stops, then the broker, then the rest; the exit is clean.
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kelp server ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "kelp server exited with {status}");
    drop(server);
    let _server = KelpServer::start(tmp.path());
    let reg = Registry::new(server_registry(tmp.path()).await);
    let (s, b) = reg.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["schema"].as_str(), Some(schema.as_str()));
}

/// A registry process contending for the writer lease in the cluster's filer.
fn contender(cluster: &mut Cluster, name: &str) -> e2e::ServiceHandle {
    let broker = cluster.broker().addr().to_string();
    let filer = cluster.filer().addr().to_string();
    e2e::ServiceHandle::new(
        cluster.root(),
        name,
        "kelp-registry",
        vec![
            "--broker".into(),
            broker,
            "--filer".into(),
            filer,
            "--lease-ttl-ms".into(),
            "1500".into(),
        ],
    )
}

/// Waits until the registry at `url` reports `role` in `/readyz`; returns the writer it names.
async fn wait_role(url: &str, role: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = e2e::get(format!("{url}/readyz")).await
            && let Ok(v) = r.json::<Value>().await
            && v["role"] == role
            && let Some(w) = v["writer"].as_str()
        {
            return w.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never became {role}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn given_two_registries_when_the_writer_is_sigkilled_should_fail_over_and_never_reuse_an_id()
{
    let mut cluster = Cluster::start(ClusterOptions {
        env: vec![("KELP_KAFKA_PORT".to_owned(), "0".to_owned())],
        ..ClusterOptions::with_broker(&[])
    })
    .await
    .unwrap();
    let mut a = contender(&mut cluster, "registry-a");
    a.start().await.unwrap();
    assert_eq!(wait_role(&a.url(), "writer").await, a.url());
    let mut b = contender(&mut cluster, "registry-b");
    b.start().await.unwrap();
    assert_eq!(wait_role(&b.url(), "follower").await, a.url());

    // Writes through either instance; the follower forwards its writes to the writer.
    let mut regs: Vec<(String, String, u64)> = Vec::new();
    for i in 0..6 {
        let via = if i % 2 == 0 { &b } else { &a };
        let subject = format!("ha-{i}-value");
        let schema = avro(&format!("Ha{i}"), json!([{"name": "a", "type": "int"}]));
        let (s, body) = Registry::new(via.url())
            .register(&subject, json!({"schema": schema}))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        regs.push((subject, schema, body["id"].as_u64().unwrap()));
    }
    // The writer's answer comes back through the follower, errors included.
    let bad = avro(
        "Ha0",
        json!([{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]),
    );
    let (s, body) = Registry::new(b.url())
        .register("ha-0-value", json!({"schema": bad}))
        .await;
    assert_eq!(
        (s, body["error_code"].as_u64()),
        (StatusCode::CONFLICT, Some(409))
    );

    // SIGKILL the writer: the follower takes the lease over once it expires.
    a.kill();
    assert_eq!(wait_role(&b.url(), "writer").await, b.url());
    let after = avro("AfterFailover", json!([{"name": "x", "type": "int"}]));
    let (s, body) = Registry::new(b.url())
        .register("failover-value", json!({"schema": after}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let max = regs.iter().map(|r| r.2).max().unwrap();
    assert_eq!(
        body["id"].as_u64(),
        Some(max + 1),
        "ids continue, never reused"
    );
    regs.push(("failover-value".into(), after, max + 1));

    // The old writer comes back as a follower, and forwards to the new writer.
    a.start().await.unwrap();
    assert_eq!(wait_role(&a.url(), "follower").await, b.url());
    let back = avro("Back", json!([{"name": "y", "type": "int"}]));
    let (s, body) = Registry::new(a.url())
        .register("back-value", json!({"schema": back}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    regs.push(("back-value".into(), back, body["id"].as_u64().unwrap()));

    // A graceful stop hands the lease over at once.
    assert!(
        b.stop(Duration::from_secs(20)).await,
        "registry-b did not exit cleanly"
    );
    assert_eq!(wait_role(&a.url(), "writer").await, a.url());
    b.start().await.unwrap();
    wait_role(&b.url(), "follower").await;

    let ids: std::collections::BTreeSet<u64> = regs.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), regs.len(), "every schema got its own id");
    for inst in [&a, &b] {
        let reg = Registry::new(inst.url());
        let mut ok = 0;
        for (subject, schema, id) in &regs {
            let (s1, by_id) = reg.get(&format!("/schemas/ids/{id}")).await;
            let (s2, by_v) = reg.get(&format!("/subjects/{subject}/versions/1")).await;
            if s1 == StatusCode::OK
                && s2 == StatusCode::OK
                && by_id["schema"].as_str() == Some(schema.as_str())
                && by_v["id"].as_u64() == Some(*id)
            {
                ok += 1;
            }
        }
        eprintln!("{}: {ok}/{} schemas verified", inst.name(), regs.len());
        assert_eq!(ok, regs.len());
    }
}
