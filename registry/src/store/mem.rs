//! [`MemLog`]: an in-memory [`SchemaLog`] for tests, with switches to make it unavailable or
//! to lose the answer of an append that was applied.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sync::LockExt;
use futures::FutureExt;
use tokio::sync::Notify;

use super::{LogRecord, ReadBatch, SchemaLog, StoreError, StoreFuture};

/// An in-memory log.
#[derive(Debug, Default)]
pub struct MemLog {
    records: Mutex<Vec<(String, String)>>,
    appended: Notify,
    /// Every call fails as unavailable while set.
    pub down: AtomicBool,
    /// The next append is applied but answered with an error (then the flag clears).
    pub lose_next_answer: AtomicBool,
    /// Appended just before the next append, as another registry instance would (then
    /// cleared).
    pub interloper: Mutex<Option<(String, String)>>,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record.
    pub fn records(&self) -> Vec<(String, String)> {
        self.records.lock_or_abort().clone()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the test log is down".to_owned()));
        }
        Ok(())
    }
}

impl SchemaLog for MemLog {
    fn ensure(&self) -> StoreFuture<'_, ()> {
        let r = self.check();
        async move { r }.boxed()
    }

    fn append<'a>(&'a self, key: &'a str, value: &'a str, expect_end: u64) -> StoreFuture<'a, u64> {
        let r = self.check().and_then(|()| {
            let mut recs = self.records.lock_or_abort();
            if let Some(other) = self.interloper.lock_or_abort().take() {
                recs.push(other);
                self.appended.notify_waiters();
            }
            if recs.len() as u64 != expect_end {
                return Err(StoreError::Moved(format!(
                    "the log ends at {}, not {expect_end}",
                    recs.len()
                )));
            }
            recs.push((key.to_owned(), value.to_owned()));
            let offset = recs.len() as u64 - 1;
            self.appended.notify_waiters();
            if self.lose_next_answer.swap(false, Ordering::SeqCst) {
                Err(StoreError::Unavailable("answer lost".to_owned()))
            } else {
                Ok(offset)
            }
        });
        async move { r }.boxed()
    }

    fn read(&self, offset: u64, wait_ms: u64) -> StoreFuture<'_, ReadBatch> {
        async move {
            // Long-poll like the broker: wait for an append while nothing is past `offset`.
            let appended = self.appended.notified();
            if wait_ms > 0 && self.records.lock_or_abort().len() as u64 <= offset {
                let _ = tokio::time::timeout(Duration::from_millis(wait_ms), appended).await;
            }
            self.read_now(offset)
        }
        .boxed()
    }
}

impl MemLog {
    fn read_now(&self, offset: u64) -> Result<ReadBatch, StoreError> {
        self.check().map(|()| {
            let recs = self.records.lock_or_abort();
            let end = recs.len() as u64;
            let records: Vec<LogRecord> = recs
                .iter()
                .enumerate()
                .skip(offset as usize)
                .take(1000)
                .map(|(i, (k, v))| LogRecord {
                    offset: i as u64,
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            ReadBatch {
                next_offset: offset + records.len() as u64,
                records,
                durable_end: end,
                log_end: end,
            }
        })
    }
}
