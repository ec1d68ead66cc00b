//! The registry's operations over the [`Index`](crate::index::Index) and the [`SchemaLog`].
//!
//! Reads are served from the index. Every write runs under one writer lock: it first catches up
//! with the log (so a record whose answer was lost, or that another writer appended, is known
//! before an id or version is chosen), then appends its record durably, then catches up again,
//! which applies that record. A registration is therefore answered only once its record is
//! durable, and ids come from the log alone: the next id is the largest id in the log plus one,
//! so an id is never handed out twice, across restarts and crashes too.
//!
//! This module holds the [`Registry`], its writer lock, start-up replay and catch-up loop;
//! the operations live beside it:
//! - `error`: [`Error`], one variant per Confluent error code;
//! - `types`: requests and answers ([`SchemaRequest`], [`SubjectVersion`], …);
//! - `state`: the index with its parse caches, and reference resolution;
//! - `register`: registration, and the choice of id and version;
//! - `read`: lookups;
//! - `delete`: deletions of subjects and versions;
//! - `compat`: compatibility checks;
//! - `config`: compatibility levels and the mode.

mod compat;
mod config;
mod delete;
mod error;
mod read;
mod register;
mod state;
mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use common::sync::LockExt;
use tokio_util::sync::CancellationToken;

pub use self::error::{Error, Result};
use self::state::State;
pub use self::types::{
    SchemaById, SchemaRequest, SubjectAndVersion, SubjectVersion, VersionRef, check_subject,
};
use crate::config::Config;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::record::{Mode, Record};
use crate::store::{SchemaLog, StoreError};

/// The registry.
#[derive(Debug)]
pub struct Registry {
    cfg: Config,
    log: Arc<dyn SchemaLog>,
    state: RwLock<State>,
    writer: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    leadership: Arc<Leadership>,
    /// Metrics.
    pub metrics: Metrics,
}

impl Registry {
    /// A registry over `log`; call [`Registry::load`] before serving.
    pub fn new(
        cfg: Config,
        log: Arc<dyn SchemaLog>,
        leadership: Arc<Leadership>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            log,
            state: RwLock::new(State::default()),
            writer: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            leadership,
            metrics,
        })
    }

    /// Who writes.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// Takes the writer lock and catches up with the log; errs unless this instance holds the
    /// writer lease. Every write starts here.
    async fn begin_write(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        if !self.is_ready() {
            return Err(Error::NotReady);
        }
        let guard = self.writer.lock().await;
        if !self.leadership.is_writer() {
            return Err(Error::NotWriter);
        }
        self.catch_up().await?;
        Ok(guard)
    }

    /// Applies what the log holds past the index (after a write was forwarded to the writer,
    /// so this instance reads its own write).
    pub async fn refresh(&self) -> Result<()> {
        let _w = self.writer.lock().await;
        self.catch_up().await
    }

    /// Follows the log until `stop`: long-polls for records past the index and applies them,
    /// so a follower sees what the writer writes (and a writer what a lost answer wrote).
    pub async fn follow(&self, stop: CancellationToken) {
        loop {
            let next = self.state.read_or_abort().index.next_offset;
            let read = tokio::select! {
                () = stop.cancelled() => return,
                r = self.log.read(next, 1000) => r,
            };
            match read {
                Ok(batch) => self.apply_batch(batch.records, batch.next_offset),
                Err(e) => {
                    tracing::debug!("failed to follow the schemas log: {e}");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Applies records read from the log; records the index already holds are skipped, so
    /// concurrent readers (the follower, a writer catching up) cannot apply one twice.
    fn apply_batch(&self, records: Vec<crate::store::LogRecord>, next_offset: u64) {
        let mut st = self.state.write_or_abort();
        for r in records {
            if r.offset < st.index.next_offset {
                continue;
            }
            self.metrics.records_replayed.inc();
            match Record::decode(&r.key, Some(&r.value)) {
                Ok(rec) => st.apply(r.offset, rec),
                Err(e) => {
                    st.index.next_offset = st.index.next_offset.max(r.offset + 1);
                    tracing::warn!(
                        offset = r.offset,
                        "skipping a record of the schemas log: {e}"
                    );
                }
            }
        }
        st.index.next_offset = st.index.next_offset.max(next_offset);
    }

    /// The configuration.
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Whether the index has been rebuilt.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        if !self.is_ready() {
            return Err(Error::NotReady);
        }
        Ok(self.state.read_or_abort())
    }

    /// Creates the topic if missing and replays it, retrying until it succeeds or `stop` is
    /// cancelled; then the registry is ready.
    pub async fn load(&self, stop: CancellationToken) {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let started = Instant::now();
            let result = async {
                self.log.ensure().await?;
                let _w = self.writer.lock().await;
                self.catch_up().await
            }
            .await;
            match result {
                Ok(()) => {
                    let st = self.state.read_or_abort();
                    tracing::info!(
                        records = st.index.next_offset,
                        schemas = st.index.ids().count(),
                        max_id = st.index.max_id(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "schema index rebuilt from the log"
                    );
                    drop(st);
                    self.ready.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    tracing::warn!("failed to load the schemas log, retrying: {e:#}");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(common::retry::backoff(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                )) => {}
            }
        }
    }

    /// Applies every durable record past the index, then waits until records the log accepted
    /// but has not made durable yet are durable and applies them too. Call with the writer lock.
    async fn catch_up(&self) -> Result<()> {
        let deadline = Instant::now() + self.cfg.broker_timeout();
        let mut target = None;
        loop {
            let next = self.state.read_or_abort().index.next_offset;
            let wait = match target {
                Some(t) if next < t => 1000,
                _ => 0,
            };
            let batch = self.log.read(next, wait).await?;
            let done = batch.records.is_empty();
            self.apply_batch(batch.records, batch.next_offset);
            let target = *target.get_or_insert(batch.log_end);
            let next = self.state.read_or_abort().index.next_offset;
            if done && next >= target {
                return Ok(());
            }
            if done && Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "records up to offset {target} of the schemas log did not become durable"
                )));
            }
        }
    }

    /// Appends `record` durably and applies it. Call with the writer lock, after a catch-up:
    /// the append is conditional on the log still ending where the index does.
    async fn write(&self, record: Record) -> Result<()> {
        let (key, value) = record.encode();
        let started = Instant::now();
        let caught_up = self.state.read_or_abort().index.next_offset;
        let result = self.log.append(&key, &value, caught_up).await;
        if let Err(StoreError::Moved(why)) = &result {
            tracing::warn!(
                caught_up,
                "the schemas log moved under this writer, nothing appended: {why}"
            );
            // Apply what the other writer wrote, so the client's retry decides against it.
            let _ = self.catch_up().await;
        }
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics.write_errors.inc();
            return Err(e.into());
        }
        self.catch_up().await
    }

    fn check_writable(&self, st: &State, subject: Option<&str>) -> Result<()> {
        match st.index.effective_mode(subject) {
            Mode::Readonly | Mode::ReadonlyOverride => Err(Error::NotPermitted(format!(
                "Subject {} is in read-only mode",
                subject.unwrap_or("(global)")
            ))),
            Mode::Readwrite | Mode::Import => Ok(()),
        }
    }

    /// Counts for `/metrics` and logs: `(subjects, schema ids, log records)`.
    pub fn counts(&self) -> (usize, usize, u64) {
        let st = self.state.read_or_abort();
        (
            st.index.subjects(false).len(),
            st.index.ids().count(),
            st.index.next_offset,
        )
    }
}
