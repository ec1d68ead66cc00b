//! A small raw-HTTP client of the broker's contract (DESIGN.md), used by the e2e tests so they
//! exercise the wire format exactly as a user would, plus the checker that records every
//! acknowledged publish and verifies it afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// A broker at `base` (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Broker {
    base: String,
    http: reqwest::Client,
}

/// A publish that was not acknowledged.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// HTTP status (0 for a transport error).
    pub status: u16,
    /// `Retry-After` seconds, if given.
    pub retry_after: Option<u64>,
    /// Response body or transport error.
    pub body: String,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Its offset.
    pub offset: u64,
    /// Its value.
    pub value: String,
}

impl Broker {
    /// A client of the broker at `base`.
    pub fn new(base: String) -> Self {
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client builds");
        Self { base, http }
    }

    /// A client of the broker at `base` sending through `http` (credentials, TLS).
    pub fn with_client(base: String, http: reqwest::Client) -> Self {
        Self { base, http }
    }

    /// Creates a topic with `partitions` partitions (201 or 200).
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let r = self
            .http
            .post(format!("{}/topics/{topic}", self.base))
            .json(&json!({ "partitions": partitions }))
            .send()
            .await
            .expect("create topic");
        assert!(
            r.status().is_success(),
            "create {topic}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }

    /// Publishes `(partition, value)` records; returns their offsets or the rejection.
    pub async fn publish(
        &self,
        topic: &str,
        records: &[(u32, String)],
        acks: &str,
    ) -> Result<Vec<u64>, Rejected> {
        let body = json!({
            "records": records.iter().map(|(p, v)| json!({ "partition": p, "value": v })).collect::<Vec<_>>()
        });
        let resp = self
            .http
            .post(format!("{}/topics/{topic}/publish?acks={acks}", self.base))
            .json(&body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Err(Rejected {
                    status: 0,
                    retry_after: None,
                    body: e.to_string(),
                });
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await.unwrap_or_default();
        if status != 200 {
            return Err(Rejected {
                status,
                retry_after,
                body: text,
            });
        }
        let v: Value = serde_json::from_str(&text).expect("publish answer is JSON");
        let offsets: Vec<u64> = v["offsets"]
            .as_array()
            .expect("offsets array")
            .iter()
            .map(|o| o["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(
            offsets.len(),
            records.len(),
            "one offset per record: {text}"
        );
        for (o, (p, _)) in v["offsets"].as_array().unwrap().iter().zip(records) {
            assert_eq!(o["partition"].as_u64(), Some(u64::from(*p)), "{text}");
        }
        Ok(offsets)
    }

    /// `GET /topics/<topic>` as JSON.
    pub async fn describe(&self, topic: &str) -> Value {
        self.http
            .get(format!("{}/topics/{topic}", self.base))
            .send()
            .await
            .expect("describe")
            .json()
            .await
            .expect("describe JSON")
    }

    /// `(log_start, durable, log_end)` of a partition.
    pub async fn offsets(&self, topic: &str, partition: u32) -> (u64, u64, u64) {
        let v = self.describe(topic).await;
        let p = &v["partitions"][partition as usize];
        (
            p["log_start_offset"].as_u64().expect("log_start_offset"),
            p["durable_offset"].as_u64().expect("durable_offset"),
            p["log_end_offset"].as_u64().expect("log_end_offset"),
        )
    }

    /// Reads every durable record of a partition from `from`.
    pub async fn read_all(&self, topic: &str, partition: u32, from: u64) -> Vec<Read> {
        let mut out = Vec::new();
        let mut offset = from;
        loop {
            let r = self
                .http
                .get(format!(
                    "{}/topics/{topic}/partitions/{partition}/records?offset={offset}&limit=1000",
                    self.base
                ))
                .send()
                .await
                .expect("fetch");
            let status = r.status();
            let v: Value = r.json().await.expect("fetch JSON");
            assert_eq!(status, 200, "fetch {topic}/{partition}@{offset}: {v}");
            let records = v["records"].as_array().expect("records");
            for rec in records {
                out.push(Read {
                    offset: rec["offset"].as_u64().expect("offset"),
                    value: rec["value"].as_str().expect("utf-8 value").to_owned(),
                });
            }
            let next = v["next_offset"].as_u64().expect("next_offset");
            if records.is_empty() || next >= v["durable_offset"].as_u64().expect("durable_offset") {
                break;
            }
            offset = next;
        }
        out
    }

    /// `POST /admin/flush`.
    pub async fn flush(&self) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/admin/flush", self.base))
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
    }
}

/// Records every acknowledged publish and checks them against what the broker serves.
#[derive(Debug, Default)]
pub struct Checker {
    acked: BTreeMap<(String, u32), BTreeMap<u64, String>>,
    /// Publishes acknowledged.
    pub acknowledged: usize,
    /// Publishes rejected (not acknowledged).
    pub rejected: usize,
}

impl Checker {
    /// Records acknowledged records.
    pub fn ack(&mut self, topic: &str, records: &[(u32, String)], offsets: &[u64]) {
        for ((p, v), o) in records.iter().zip(offsets) {
            let prev = self
                .acked
                .entry((topic.to_owned(), *p))
                .or_default()
                .insert(*o, v.clone());
            assert!(
                prev.is_none(),
                "offset {o} of {topic}/{p} acknowledged twice"
            );
            self.acknowledged += 1;
        }
    }

    /// Verifies every acknowledged record reads back byte-identical at its offset, and that
    /// each partition's durable records are gap-free and duplicate-free. Returns the number of
    /// records verified.
    pub async fn verify(&self, broker: &Broker) -> usize {
        let mut verified = 0;
        for ((topic, p), acked) in &self.acked {
            let read = broker.read_all(topic, *p, 0).await;
            for (i, r) in read.iter().enumerate() {
                assert_eq!(
                    r.offset, i as u64,
                    "{topic}/{p}: gap or duplicate at position {i}"
                );
            }
            for (o, v) in acked {
                let got = read.get(*o as usize).unwrap_or_else(|| {
                    panic!(
                        "{topic}/{p}: acknowledged offset {o} missing (partition has {})",
                        read.len()
                    )
                });
                assert_eq!(&got.value, v, "{topic}/{p}@{o} differs");
                verified += 1;
            }
        }
        verified
    }
}
