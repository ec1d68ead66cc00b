//! Where the registry's log lives: the [`SchemaLog`] trait, its implementation on a Kelp
//! broker topic ([`broker::BrokerLog`]) and an in-memory one for tests ([`mem::MemLog`]).

pub mod broker;
pub mod mem;

use std::fmt;

use futures::future::BoxFuture;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its offset.
    pub offset: u64,
    /// Key text.
    pub key: String,
    /// Value text (empty: a tombstone).
    pub value: String,
}

/// The answer of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// Records from the requested offset, in order, without gaps.
    pub records: Vec<LogRecord>,
    /// The offset to read next.
    pub next_offset: u64,
    /// One past the last durable record.
    pub durable_end: u64,
    /// One past the last record the log accepted (durable or not yet).
    pub log_end: u64,
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log cannot be reached now; repeating later may work.
    #[error("schemas log unavailable: {0}")]
    Unavailable(String),
    /// The log answered with an error.
    #[error("schemas log failed: {0}")]
    Failed(String),
    /// The log moved past the offset the writer caught up to: another instance wrote it.
    /// Nothing was appended; the request may be retried.
    #[error("schemas log moved on (another registry instance wrote it): {0}")]
    Moved(String),
}

/// A future of a log operation.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// An append-only log of `(key, value)` text records with exact offsets.
pub trait SchemaLog: Send + Sync + fmt::Debug {
    /// Creates the log if it does not exist.
    fn ensure(&self) -> StoreFuture<'_, ()>;
    /// Appends one record and answers once it is durable, with its offset; but only if the
    /// log ends exactly at `expect_end` (the offset the writer caught up to), else
    /// [`StoreError::Moved`] and nothing is appended. So a writer never appends on top of
    /// records it has not applied, even when another instance wrote in between (a writer
    /// paused past its lease): ids and versions it derived stay unique.
    fn append<'a>(&'a self, key: &'a str, value: &'a str, expect_end: u64) -> StoreFuture<'a, u64>;
    /// Reads durable records from `offset`, waiting up to `wait_ms` when none is there yet.
    fn read(&self, offset: u64, wait_ms: u64) -> StoreFuture<'_, ReadBatch>;
}
