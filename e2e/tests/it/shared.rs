//! Two real brokers sharing partitions (`--ownership shared`, member leases of TTL 2 s on one
//! filer) under durable publishes to every partition of a 16-partition topic, sent to either
//! broker (a request for a partition the other owns is redirected there). One broker is
//! SIGKILLed, restarted, SIGTERMed, and SIGSTOPped past its TTL; each time the other takes
//! its partitions over and publishes resume (the time is measured and printed), the
//! restarted or resumed one gets its share back, and at the end every acknowledged record
//! reads back once, at its offset, byte-identical.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::{Cluster, ClusterOptions};

use crate::ha::{eventually, signal};

const TOPIC: &str = "ha/shared";
const PARTITIONS: u32 = 16;

/// Acknowledged batches per partition.
type Acked = Arc<Mutex<Vec<u64>>>;

/// Publishes batches of four records durably to one partition after another until `stop`,
/// alternating between `brokers` (a request for a partition the other owns is redirected
/// there); a broker that failed is skipped for two seconds (a paused one holds requests
/// until the client's timeout). Counts acknowledged batches per partition in `acked`.
fn spawn_publisher(
    brokers: Vec<Broker>,
    checker: Arc<Mutex<Checker>>,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut skip = vec![Instant::now(); brokers.len()];
        while !stop.load(Ordering::Relaxed) {
            let p = (n % u64::from(PARTITIONS)) as u32;
            let recs: Vec<(u32, String)> = (0..4).map(|i| (p, format!("n{n}-i{i}"))).collect();
            let first = (n / u64::from(PARTITIONS)) as usize % brokers.len();
            let i = (0..brokers.len())
                .map(|k| (first + k) % brokers.len())
                .find(|i| skip[*i] <= Instant::now())
                .unwrap_or(first);
            match brokers[i].publish(TOPIC, &recs, "durable").await {
                Ok(offsets) => {
                    checker.lock().unwrap().ack(TOPIC, &recs, &offsets);
                    acked.lock().unwrap()[p as usize] += 1;
                }
                Err(e) => {
                    if e.status == 0 {
                        skip[i] = Instant::now() + Duration::from_secs(2);
                    }
                    checker.lock().unwrap().rejected += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            n += 1;
        }
    })
}

/// How long until every partition has another batch acknowledged (whoever owns it now).
async fn resumed(acked: &Acked) -> Duration {
    let start = Instant::now();
    let from = acked.lock().unwrap().clone();
    loop {
        let now = acked.lock().unwrap().clone();
        if now.iter().zip(&from).all(|(n, f)| n > f) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "publishes did not resume: acknowledged batches per partition {from:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many partitions the broker at `broker` redirects elsewhere (it does not own them): a
/// fetch of each through a client that does not follow redirects.
async fn redirected(broker: &str) -> usize {
    let http = e2e::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut n = 0;
    for p in 0..PARTITIONS {
        let r = http
            .get(format!(
                "{broker}/topics/{TOPIC}/partitions/{p}/records?offset=0&limit=1"
            ))
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::TEMPORARY_REDIRECT {
            let to = r.headers()["location"].to_str().unwrap().to_owned();
            assert!(to.contains("/partitions/"), "{to}");
            assert!(to.ends_with("&redirected=true"), "the hop is marked: {to}");
            // A request some broker already redirected here is not sent on again: 503 (or
            // served, if this broker took the partition in between), never a second 307.
            let again = http
                .get(format!(
                    "{broker}/topics/{TOPIC}/partitions/{p}/records?offset=0&limit=1&redirected=true"
                ))
                .send()
                .await
                .unwrap();
            match again.status() {
                reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(again.headers().contains_key("retry-after"));
                    let body: serde_json::Value = again.json().await.unwrap();
                    assert_eq!(body["code"], "not_owner", "{body}");
                }
                s => assert_eq!(s, reqwest::StatusCode::OK, "a marked request"),
            }
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_brokers_sharing_partitions_when_one_dies_pauses_or_leaves_should_move_them_and_lose_nothing()
 {
    // Shared ownership is the default with a lease.
    let shared = ["--lease-ttl-secs", "2", "--kafka-port", "0"];
    let mut c = Cluster::start(ClusterOptions::with_broker(&shared))
        .await
        .unwrap();
    let mut second = c.start_broker("broker2", &shared).await.unwrap();
    let urls = [c.broker().url(), second.url()];
    let brokers = [Broker::new(urls[0].clone()), Broker::new(urls[1].clone())];
    // The publisher gives up on a broker after 2 s (a paused one holds its requests).
    let http = e2e::http_client_builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let publishers = [
        Broker::with_client(urls[0].clone(), http.clone()),
        Broker::with_client(urls[1].clone(), http),
    ];
    brokers[1].create_topic(TOPIC, PARTITIONS).await;

    // Both serve a share: each redirects the partitions the other owns.
    let split = eventually("both brokers own partitions", || async {
        let (a, b) = (redirected(&urls[0]).await, redirected(&urls[1]).await);
        if a > 0 && b > 0 && a + b == PARTITIONS as usize {
            Ok((PARTITIONS as usize - a, PARTITIONS as usize - b))
        } else {
            Err(format!("first redirects {a}, second {b}"))
        }
    })
    .await;
    eprintln!("shared brokers: partitions split {split:?}");

    let checker = Arc::new(Mutex::new(Checker::default()));
    let acked: Acked = Arc::new(Mutex::new(vec![0; PARTITIONS as usize]));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(
        publishers.to_vec(),
        checker.clone(),
        acked.clone(),
        stop.clone(),
    );
    resumed(&acked).await;

    // SIGKILL the second: the first takes its partitions once its member lease lapses.
    second.kill();
    eprintln!(
        "shared brokers: writes to every partition resumed {:?} after a SIGKILL",
        resumed(&acked).await
    );
    second.start().await.unwrap();
    eventually("the restarted broker gets its share back", || async {
        match redirected(&urls[1]).await {
            n if n < PARTITIONS as usize => Ok(()),
            n => Err(n),
        }
    })
    .await;
    resumed(&acked).await;

    // SIGTERM the first: it flushes and gives its lease up; the second takes over at once.
    let start = Instant::now();
    assert!(c.broker().stop(Duration::from_secs(20)).await);
    eprintln!(
        "shared brokers: writes to every partition resumed {:?} after a SIGTERM",
        start.elapsed() + resumed(&acked).await
    );
    c.broker().start().await.unwrap();
    resumed(&acked).await;

    // SIGSTOP the second past its TTL: the first takes its partitions (fencing it); resumed,
    // the second finds its commits refused and its lease lapsed, gives up what it held, and
    // rejoins.
    second
        .expect_errors("another broker took the partition over")
        .expect_errors("moved to another broker before its buffered records");
    signal(&second, "STOP");
    eprintln!(
        "shared brokers: writes to every partition resumed {:?} after a SIGSTOP",
        resumed(&acked).await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&second, "CONT");
    eventually("the resumed broker gets its share back", || async {
        match redirected(&urls[1]).await {
            n if n < PARTITIONS as usize => Ok(()),
            n => Err(n),
        }
    })
    .await;
    resumed(&acked).await;

    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    // Read back once the hand-back is over: each partition served by one broker and
    // redirected by the other (while it moves, the two may name each other for a moment).
    eventually("every partition has one owner again", || async {
        let (a, b) = (redirected(&urls[0]).await, redirected(&urls[1]).await);
        if a > 0 && b > 0 && a + b == PARTITIONS as usize {
            Ok(())
        } else {
            Err((a, b))
        }
    })
    .await;
    let checker = Arc::try_unwrap(checker).unwrap().into_inner().unwrap();
    let verified = checker.verify(&brokers[0]).await;
    eprintln!(
        "shared brokers: {verified} records acknowledged and verified, {} publishes refused",
        checker.rejected
    );
    assert!(verified > 0);
    assert!(
        second.is_running(),
        "the paused broker rejoined, it did not exit"
    );
}

/// Two brokers sharing a topic's eight partitions, each with its Kafka listener: Metadata
/// from either names both brokers and each partition's leader, so confluent-kafka (bootstrap
/// on the first) and kafka-python (bootstrap on the second) produce with `acks=all` to each
/// partition's owner; a confluent-kafka group, whose coordinator may be either broker,
/// consumes every acknowledged record once, byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_brokers_sharing_partitions_when_kafka_clients_produce_and_consume_should_reach_each_leader()
 {
    use e2e::kafka::{ensure_python_clients, free_port, kafka_addr, kcat, read_jsonl, run_clients};
    ensure_python_clients();
    let shared = ["--ownership", "shared", "--lease-ttl-secs", "2"];
    let port = free_port().to_string();
    let mut first_args = vec!["--kafka-port", port.as_str()];
    first_args.extend(shared);
    let mut c = Cluster::start(ClusterOptions::with_broker(&first_args))
        .await
        .unwrap();
    let port2 = free_port().to_string();
    let mut args = vec!["--kafka-port", port2.as_str()];
    args.extend(shared);
    let second = c.start_broker("broker2", &args).await.unwrap();
    let urls = [c.broker().url(), second.url()];
    Broker::new(urls[0].clone())
        .create_topic("kafka/spread", 8)
        .await;
    eventually("both brokers own partitions of kafka/spread", || async {
        let mut owned = Vec::new();
        for u in &urls {
            let http = e2e::http_client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut n = 0;
            for p in 0..8 {
                let r = http
                    .get(format!(
                        "{u}/topics/kafka/spread/partitions/{p}/records?offset=0"
                    ))
                    .send()
                    .await
                    .unwrap();
                if r.status() == reqwest::StatusCode::OK {
                    n += 1;
                }
            }
            owned.push(n);
        }
        if owned.iter().all(|n| *n > 0) && owned.iter().sum::<usize>() == 8 {
            Ok(())
        } else {
            Err(owned)
        }
    })
    .await;
    let (b1, b2) = (kafka_addr(c.broker.as_ref().unwrap()), kafka_addr(&second));

    // Metadata through either broker lists both, and every partition's leader is one of them.
    let meta = kcat(&["-b", &b1, "-L", "-t", "spread", "-J"], b"");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("kcat -L -J");
    let ids: Vec<i64> = meta["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{meta}");
    let leaders: std::collections::BTreeSet<i64> = meta["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    assert_eq!(leaders.len(), 2, "both brokers lead partitions: {meta}");

    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.jsonl");
    let acks_s = acks.to_str().unwrap();
    for (client, bootstrap, count, prefix) in [
        ("confluent", &b1, "400", "cf"),
        ("kafka-python", &b2, "200", "kp"),
    ] {
        let r = run_clients(&[
            "produce",
            "--client",
            client,
            "--bootstrap",
            bootstrap,
            "--topic",
            "spread",
            "--count",
            count,
            "--prefix",
            prefix,
            "--out",
            acks_s,
        ]);
        assert_eq!(r["acked"].to_string(), count, "{client}: {r}");
    }
    let acked: std::collections::BTreeMap<(u64, u64), serde_json::Value> = read_jsonl(&acks)
        .into_iter()
        .map(|r| {
            (
                (
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                ),
                r,
            )
        })
        .collect();
    assert_eq!(
        acked.len(),
        600,
        "600 distinct (partition, offset) acknowledged"
    );
    let spread: std::collections::BTreeSet<u64> = acked.keys().map(|(p, _)| *p).collect();
    assert_eq!(spread.len(), 8, "records reached every partition");

    let got = dir.path().join("got.jsonl");
    let r = run_clients(&[
        "consume",
        "--client",
        "confluent",
        "--bootstrap",
        &b2,
        "--topic",
        "spread",
        "--group",
        "spread",
        "--count",
        "600",
        "--idle-ms",
        "10000",
        "--out",
        got.to_str().unwrap(),
    ]);
    assert_eq!(r["consumed"], 600, "{r}");
    let mut seen = std::collections::BTreeSet::new();
    for rec in read_jsonl(&got) {
        let pos = (
            rec["partition"].as_u64().unwrap(),
            rec["offset"].as_u64().unwrap(),
        );
        assert!(seen.insert(pos), "{pos:?} consumed twice");
        for field in ["key", "value", "headers", "timestamp"] {
            assert_eq!(acked[&pos][field], rec[field], "{pos:?} {field} differs");
        }
    }
    assert_eq!(seen.len(), 600);
}
