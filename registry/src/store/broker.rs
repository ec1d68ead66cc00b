//! [`BrokerLog`]: the schemas log as partition 0 of a Kelp broker topic, written with
//! `acks=durable` (answered once the record's segment is fsynced on a volume server and
//! committed in the filer) and read with the broker's fetch API (durable records only).

use std::borrow::Cow;

use common::api::broker::{Acks, FetchQuery, PublishRecord, PublishRequest};
use common::client::ClientError;
use common::client::broker::BrokerClient;
use futures::FutureExt;

use super::{LogRecord, ReadBatch, SchemaLog, StoreError, StoreFuture};

/// Records fetched per read.
const FETCH_LIMIT: u32 = 1000;

/// The schemas log on a broker topic (one partition).
#[derive(Debug, Clone)]
pub struct BrokerLog {
    client: BrokerClient,
    namespace: String,
    topic: String,
}

impl BrokerLog {
    /// The log on topic `namespace/topic` of the broker `client` talks to.
    pub fn new(client: BrokerClient, namespace: &str, topic: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
        }
    }
}

fn store_error(e: ClientError) -> StoreError {
    if e.is_transient() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Failed(e.to_string())
    }
}

impl SchemaLog for BrokerLog {
    fn ensure(&self) -> StoreFuture<'_, ()> {
        async move {
            let info = self
                .client
                .create_topic(&self.namespace, &self.topic, 1)
                .await
                .map_err(store_error)?;
            tracing::info!(
                topic = %format!("{}/{}", info.namespace, info.name),
                durable_offset = info.partitions.first().map(|p| p.durable_offset),
                "schemas topic ready"
            );
            Ok(())
        }
        .boxed()
    }

    fn append<'a>(&'a self, key: &'a str, value: &'a str, expect_end: u64) -> StoreFuture<'a, u64> {
        async move {
            let req = PublishRequest {
                records: vec![PublishRecord {
                    key: Some(Cow::Borrowed(key)),
                    value: Some(Cow::Borrowed(value)),
                    partition: Some(0),
                    ..PublishRecord::default()
                }],
            };
            let resp = self
                .client
                .publish_if(
                    &self.namespace,
                    &self.topic,
                    &req,
                    Acks::Durable,
                    Some(expect_end),
                )
                .await
                .map_err(|e| match e.code() {
                    Some("log_end_mismatch") => StoreError::Moved(e.to_string()),
                    _ => store_error(e),
                })?;
            resp.offsets
                .first()
                .map(|o| o.offset)
                .ok_or_else(|| StoreError::Failed("the broker answered no offset".to_owned()))
        }
        .boxed()
    }

    fn read(&self, offset: u64, wait_ms: u64) -> StoreFuture<'_, ReadBatch> {
        async move {
            let q = FetchQuery {
                offset,
                limit: Some(FETCH_LIMIT),
                max_bytes: None,
                wait_ms: (wait_ms > 0).then_some(wait_ms),
                isolation: None,
                redirected: false,
            };
            let resp = self
                .client
                .fetch(&self.namespace, &self.topic, 0, &q)
                .await
                .map_err(store_error)?;
            let mut records = Vec::with_capacity(resp.records.len());
            for r in resp.records {
                let (Some(key), value) = (r.key, r.value) else {
                    return Err(StoreError::Failed(format!(
                        "record {} of the schemas topic has no text key",
                        r.offset
                    )));
                };
                records.push(LogRecord {
                    offset: r.offset,
                    key,
                    value: value.unwrap_or_default(),
                });
            }
            Ok(ReadBatch {
                records,
                next_offset: resp.next_offset,
                durable_end: resp.durable_offset,
                log_end: resp.log_end_offset,
            })
        }
        .boxed()
    }
}
