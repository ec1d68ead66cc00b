//! A cluster with every protection on (fid tokens, cluster token, API keys, TLS on every
//! hop), attacked with real requests through each way in: every one is refused with the right
//! status and nothing changes on disk, while the legitimate flows — blobs, filer files,
//! durable publishes, and the SIGKILL-everything seed scenario — keep working.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::volume::WriteOptions;
use common::ids::FileId;
use common::security::{CLUSTER_TOKEN_HEADER, FidKey};
use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn secure_options() -> ClusterOptions {
    ClusterOptions {
        broker: true,
        secure: true,
        ..ClusterOptions::default()
    }
}

/// Every `.dat` and `.idx` file under `dir` with a checksum of its bytes.
fn volume_files(dir: &Path) -> BTreeMap<String, (u64, u32)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "dat" || ext == "idx" {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                (bytes.len() as u64, crc32c::crc32c(&bytes)),
            );
        }
    }
    out
}

/// Status and error code of an answer (code "" when the body is not Kelp's JSON error).
async fn answer(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

fn bearer(token: &str) -> String {
    format!("BEARER {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_secure_cluster_when_intruders_try_each_way_in_should_refuse_every_one_and_change_nothing()
 {
    let cluster = Cluster::start(secure_options()).await.unwrap();
    let secrets = cluster.secrets().clone();
    let volume = cluster.volumes[0].url();
    let master = cluster.master.url();
    let filer = cluster.filer.as_ref().unwrap().url();
    let broker = cluster.broker.as_ref().unwrap().url();
    assert!(volume.starts_with("https://"), "{volume}");

    // The legitimate flow: assign (with the write API key) → write with the assign's token.
    let blobs = cluster.blob_client();
    let a = Bytes::from_static(b"the acknowledged blob");
    let fid = blobs
        .upload(&AssignQuery::default(), a.clone(), &WriteOptions::default())
        .await
        .unwrap()
        .fid;
    let other = blobs
        .upload(
            &AssignQuery::default(),
            Bytes::from_static(b"another blob"),
            &WriteOptions::default(),
        )
        .await
        .unwrap()
        .fid;
    assert_eq!(blobs.download(&fid).await.unwrap(), a);
    let key = secrets.signing_key().unwrap();
    // Minted now, used once it has expired (it lives one second).
    let expiring = key.sign(&fid, Duration::from_secs(1));
    let before = volume_files(cluster.volumes[0].dir());
    assert!(!before.is_empty());

    let anon = secrets.client().unwrap();
    let reader = secrets.client_with_key(&secrets.read_key).unwrap();
    let writer = secrets.client_with_key(&secrets.write_key).unwrap();
    let evil = || Bytes::from_static(b"overwritten by an intruder");

    // 1. A volume write with no token.
    let r = anon
        .post(format!("{volume}/{fid}"))
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(r).await,
        (StatusCode::UNAUTHORIZED, "token_required".into())
    );
    // 2. A token for another fid.
    let r = anon
        .post(format!("{volume}/{fid}"))
        .header(
            "authorization",
            bearer(&key.sign(&other, Duration::from_secs(10))),
        )
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(r).await,
        (StatusCode::FORBIDDEN, "token_for_another_fid".into())
    );
    // 3. A forged signature.
    let forged = FidKey::new(b"not-the-cluster-signing-key")
        .unwrap()
        .sign(&fid, Duration::from_secs(10));
    let r = anon
        .post(format!("{volume}/{fid}"))
        .header("authorization", bearer(&forged))
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(r).await,
        (StatusCode::UNAUTHORIZED, "bad_token".into())
    );
    // 4. A write with the wrong cookie, even with a valid token for that fid.
    let wrong_cookie = FileId::new(fid.volume_id, fid.key, fid.cookie ^ 0x5a5a_5a5a);
    let r = anon
        .post(format!("{volume}/{wrong_cookie}"))
        .header(
            "authorization",
            bearer(&key.sign(&wrong_cookie, Duration::from_secs(10))),
        )
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(r).await,
        (StatusCode::CONFLICT, "cookie_mismatch".into())
    );
    // 5. A delete with no token.
    let r = anon.delete(format!("{volume}/{fid}")).send().await.unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    // 6. A replica write from outside: a valid fid token, no cluster token.
    let r = anon
        .post(format!("{volume}/{fid}?type=replicate"))
        .header(
            "authorization",
            bearer(&key.sign(&fid, Duration::from_secs(10))),
        )
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    // 7. The volume server's admin routes without the cluster token, even with a write key.
    let r = writer
        .post(format!("{volume}/admin/vacuum?garbageThreshold=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    // 8. A fake volume server's heartbeat: no cluster token, then a wrong one.
    let fake = json!({"url": "127.0.0.1:1", "public_url": "127.0.0.1:1", "max_volumes": 100, "volumes": []});
    for token in [None, Some("0".repeat(64))] {
        let mut req = anon.post(format!("{master}/heartbeat")).json(&fake);
        if let Some(t) = token {
            req = req.header(CLUSTER_TOKEN_HEADER, t);
        }
        assert_eq!(
            answer(req.send().await.unwrap()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let status: Value = cluster
        .admin_client()
        .get(format!("{master}/dir/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !status.to_string().contains("127.0.0.1:1\""),
        "the fake node is not in the topology: {status}"
    );
    // 9. An assign without an API key, and with a read key.
    let r = anon
        .post(format!("{master}/dir/assign"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    let r = reader
        .post(format!("{master}/dir/assign"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::FORBIDDEN);
    // 10. The filer's metadata API without the cluster token (a client key is not enough).
    let r = writer
        .get(format!("{filer}/__meta/list?path=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    // 11. Filer writes without a key and with a read key; the read key reads.
    let r = anon
        .put(format!("{filer}/docs/intruder.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    let r = reader
        .put(format!("{filer}/docs/intruder.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::FORBIDDEN);
    let r = reader
        .get(format!("{filer}/docs/intruder.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing was created");
    // 12. A publish without an API key.
    let r = anon
        .post(format!("{broker}/topics/sec/t/publish?acks=durable"))
        .json(&json!({"records": [{"partition": 0, "value": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(r).await.0, StatusCode::UNAUTHORIZED);
    // 13. Plain HTTP to a TLS port: no answer a client could take for one, and the server
    // keeps serving.
    let plain = e2e::http_client();
    let addr = cluster.volumes[0].addr();
    let r = plain
        .post(format!("http://{addr}/{fid}"))
        .body(evil())
        .send()
        .await;
    assert!(
        r.as_ref().map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP was answered with success: {r:?}"
    );
    // 14. The expired token (it lived one second).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = anon
        .post(format!("{volume}/{fid}"))
        .header("authorization", bearer(&expiring))
        .body(evil())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(r).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );

    // Nothing changed on disk, and the blob is what was acknowledged.
    assert_eq!(volume_files(cluster.volumes[0].dir()), before);
    assert_eq!(blobs.download(&fid).await.unwrap(), a);
    // The owner, with a lookup's token, may still delete.
    blobs.delete(&other).await.unwrap();
    assert!(blobs.download(&other).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_secure_cluster_when_every_service_is_sigkilled_should_serve_every_acknowledged_write()
 {
    let mut cluster = Cluster::start(secure_options()).await.unwrap();
    let secrets = cluster.secrets().clone();
    let blobs = cluster.blob_client();
    let filer_client = secrets.client_with_key(&secrets.write_key).unwrap();
    let broker = Broker::with_client(
        cluster.broker().url(),
        secrets.client_with_key(&secrets.write_key).unwrap(),
    );
    broker.create_topic("sec/seed", 2).await;

    let mut written = Vec::new();
    for i in 0..10u32 {
        let data = Bytes::from(format!("blob {i} ").repeat(100 + i as usize));
        let w = blobs
            .upload(
                &AssignQuery::default(),
                data.clone(),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        written.push((w.fid, data));
    }
    let filer = cluster.filer().url();
    for i in 0..5 {
        let r = filer_client
            .put(format!("{filer}/seed/file{i}.txt"))
            .body(format!("file {i}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let mut checker = Checker::default();
    for n in 0..20u32 {
        let recs: Vec<(u32, String)> = (0..5).map(|i| (n % 2, format!("r{n}-{i}"))).collect();
        let offsets = broker.publish("sec/seed", &recs, "durable").await.unwrap();
        checker.ack("sec/seed", &recs, &offsets);
    }

    cluster.kill_all_and_restart().await.unwrap();

    for (fid, data) in &written {
        assert_eq!(&blobs.download(fid).await.unwrap(), data, "{fid}");
    }
    let filer = cluster.filer().url();
    for i in 0..5 {
        let r = filer_client
            .get(format!("{filer}/seed/file{i}.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), format!("file {i}"));
    }
    let broker = Broker::with_client(
        cluster.broker().url(),
        secrets.client_with_key(&secrets.read_key).unwrap(),
    );
    assert_eq!(checker.verify(&broker).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_secure_cluster_when_kafka_clients_connect_should_demand_tls_and_a_key_and_let_a_read_key_only_consume()
 {
    use e2e::kafka::{free_port, kafka_addr, kcat, kcat_output};
    let port = free_port().to_string();
    let mut c = Cluster::start(ClusterOptions {
        broker_args: vec!["--kafka-port".into(), port],
        ..secure_options()
    })
    .await
    .unwrap();
    let s = c.secrets().clone();
    let b = kafka_addr(c.broker());
    let ca = format!("ssl.ca.location={}", s.tls.ca.display());
    let with = |protocol: &str, password: &str| -> Vec<String> {
        let mut v = vec![
            "-b".to_owned(),
            b.clone(),
            "-X".into(),
            format!("security.protocol={protocol}"),
        ];
        if protocol.starts_with("SASL") {
            for kv in [
                "sasl.mechanisms=PLAIN".to_owned(),
                "sasl.username=app".to_owned(),
                format!("sasl.password={password}"),
            ] {
                v.extend(["-X".to_owned(), kv]);
            }
        }
        if protocol.ends_with("SSL") {
            v.extend(["-X".to_owned(), ca.clone()]);
        }
        v
    };
    let args = |base: &[&str], auth: &[String]| -> Vec<String> {
        base.iter()
            .map(|a| (*a).to_owned())
            .chain(auth.iter().cloned())
            .collect()
    };

    // TLS + SASL/PLAIN with the write key: produce (acks=all, idempotent) and consume.
    let input: String = (0..20).map(|i| format!("k{i}:secure-{i}\n")).collect();
    let good = with("SASL_SSL", &s.write_key);
    let produce = args(
        &[
            "-P",
            "-t",
            "sec-kafka",
            "-K:",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
        ],
        &good,
    );
    kcat(
        &produce.iter().map(String::as_str).collect::<Vec<_>>(),
        input.as_bytes(),
    );
    let consume = args(
        &[
            "-C",
            "-t",
            "sec-kafka",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k:%s\n",
        ],
        &good,
    );
    let out = kcat(&consume.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert_eq!(out, input, "kcat over SASL_SSL reads back what it produced");

    // confluent-kafka and kafka-python produce (acks=all, idempotent) and consume in a group
    // over SASL_SSL with the write key.
    e2e::kafka::ensure_python_clients();
    let work = tempfile::tempdir().unwrap();
    let ca_path = s.tls.ca.to_str().unwrap().to_owned();
    for client in ["confluent", "kafka-python"] {
        let topic = format!("sec-{client}");
        let produced = work.path().join(format!("{client}-produced.jsonl"));
        let consumed = work.path().join(format!("{client}-consumed.jsonl"));
        let common = |cmd: &'static str, out: &std::path::Path| -> Vec<String> {
            [
                cmd,
                "--client",
                client,
                "--bootstrap",
                &b,
                "--topic",
                &topic,
                "--count",
                "30",
                "--ca",
                &ca_path,
                "--sasl-password",
                &s.write_key,
                "--group",
                "sec",
                "--idle-ms",
                "5000",
                "--out",
                out.to_str().unwrap(),
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect()
        };
        let r = e2e::kafka::run_clients(
            &common("produce", &produced)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert_eq!(r["acked"], 30, "{client} produce: {r}");
        let r = e2e::kafka::run_clients(
            &common("consume", &consumed)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert_eq!(r["consumed"], 30, "{client} consume: {r}");
        let values = |path: &std::path::Path| -> Vec<serde_json::Value> {
            e2e::kafka::read_jsonl(path)
                .into_iter()
                .map(|r| r["value"].clone())
                .collect()
        };
        assert_eq!(
            values(&consumed),
            values(&produced),
            "{client}: consumed what it produced"
        );
    }

    // The read key consumes: kcat reads the topic, confluent-kafka consumes in a group of its
    // own (joining it and committing offsets), but it cannot produce, and nothing was added.
    let read = with("SASL_SSL", &s.read_key);
    let out = kcat(
        &args(
            &[
                "-C",
                "-t",
                "sec-kafka",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
            &read,
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        b"",
    );
    assert_eq!(out, input, "kcat with the read key reads the topic");
    let consumed = work.path().join("reader-consumed.jsonl");
    let r = e2e::kafka::run_clients(&[
        "consume",
        "--client",
        "confluent",
        "--bootstrap",
        &b,
        "--topic",
        "sec-confluent",
        "--count",
        "30",
        "--ca",
        &ca_path,
        "--sasl-password",
        &s.read_key,
        "--group",
        "sec-reader",
        "--idle-ms",
        "5000",
        "--out",
        consumed.to_str().unwrap(),
    ]);
    assert_eq!(
        r["consumed"], 30,
        "confluent-kafka consumes with the read key: {r}"
    );
    let refused = kcat_output(
        &args(&["-P", "-t", "sec-kafka", "-X", "acks=all"], &read)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        b"not-allowed\n",
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.to_lowercase().contains("authoriz"),
        "kcat -P with the read key: exit {:?}, {stderr}",
        refused.status
    );
    assert_eq!(
        kcat(&consume.iter().map(String::as_str).collect::<Vec<_>>(), b""),
        input,
        "the read key's produce stored nothing"
    );

    // Every other way in gets no metadata: a wrong key, SASL without TLS, TLS without SASL,
    // plain TCP.
    for (what, auth) in [
        ("a wrong key", with("SASL_SSL", "not-a-kelp-key-0123456789")),
        ("SASL without TLS", with("SASL_PLAINTEXT", &s.write_key)),
        ("TLS without SASL", with("SSL", "")),
        ("plain TCP", with("PLAINTEXT", "")),
    ] {
        let list = args(&["-L", "-t", "sec-kafka", "-m", "3"], &auth);
        let out = kcat_output(&list.iter().map(String::as_str).collect::<Vec<_>>(), b"");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && !stdout.contains("sec-kafka"),
            "{what}: kcat -L succeeded: {stdout}"
        );
    }
}
