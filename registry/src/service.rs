//! The registry's operations over the [`Index`] and the [`SchemaLog`].
//!
//! Reads are served from the index. Every write runs under one writer lock: it first catches up
//! with the log (so a record whose answer was lost, or that another writer appended, is known
//! before an id or version is chosen), then appends its record durably, then catches up again,
//! which applies that record. A registration is therefore answered only once its record is
//! durable, and ids come from the log alone: the next id is the largest id in the log plus one,
//! so an id is never handed out twice, across restarts and crashes too.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::index::{Index, Version};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::record::{
    Compatibility, ConfigValue, Mode, ModeValue, Record, Reference, SchemaType, SchemaValue,
};
use crate::schema::{self, Dependency, Parsed};
use crate::store::{SchemaLog, StoreError};

/// The deepest chain of references followed.
const MAX_REFERENCE_DEPTH: usize = 32;

/// Why an operation failed; each variant has one Confluent error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// Subject.
        subject: String,
        /// Version asked for.
        version: String,
    },
    /// 40403.
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 40404.
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40407.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203.
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibility(String),
    /// 42204.
    #[error("Invalid mode: {0}")]
    InvalidMode(String),
    /// 42205.
    #[error("{0}")]
    NotPermitted(String),
    /// 42206.
    #[error("One or more references exist to the schema {{subject={subject},version={version}}}")]
    ReferenceExists {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 42208 (Confluent: invalid subject).
    #[error("Invalid subject: {0}")]
    InvalidSubject(String),
    /// 409.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", reasons.join(", "))]
    Incompatible {
        /// Subject.
        subject: String,
        /// Why.
        reasons: Vec<String>,
    },
    /// 503 (Confluent's 50004, unknown leader): no instance holds the writer lease now.
    #[error("this registry does not hold the writer lease and no writer is known; retry shortly")]
    NotWriter,
    /// 503: the index is still being rebuilt.
    #[error("the schema index is still being rebuilt from the log")]
    NotReady,
    /// 50001 (503 when the broker is unreachable).
    #[error("Error in the backend data store: {0}")]
    Store(#[from] StoreError),
    /// 50002.
    #[error("Operation timed out: {0}")]
    Timeout(String),
}

/// Result of the registry's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A schema as clients send it (register, lookup, compatibility).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// Schema text.
    #[serde(default)]
    pub schema: Option<String>,
    /// Format (Avro when absent).
    #[serde(default)]
    pub schema_type: Option<String>,
    /// References.
    #[serde(default)]
    pub references: Option<Vec<Reference>>,
    /// Id to register with (IMPORT mode only).
    #[serde(default)]
    pub id: Option<i64>,
    /// Version to register as (IMPORT mode only).
    #[serde(default)]
    pub version: Option<i64>,
}

/// A version as answered by `GET /subjects/{s}/versions/{v}` and the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectVersion {
    /// Subject.
    pub subject: String,
    /// Version.
    pub version: u32,
    /// Schema id.
    pub id: u32,
    /// Format (left out for Avro, as Confluent does).
    #[serde(default, skip_serializing_if = "SchemaType::is_avro")]
    pub schema_type: SchemaType,
    /// References (left out when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// Schema text.
    pub schema: String,
}

/// A schema by id, as answered by `GET /schemas/ids/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaById {
    /// Format (left out for Avro).
    #[serde(default, skip_serializing_if = "SchemaType::is_avro")]
    pub schema_type: SchemaType,
    /// Schema text.
    pub schema: String,
    /// References (left out when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A `(subject, version)` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAndVersion {
    /// Subject.
    pub subject: String,
    /// Version.
    pub version: u32,
}

/// Which version a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    /// `latest` (or `-1`).
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionRef {
    /// Parses a path segment: `latest`, `-1` or a version in `1..=2^31-1`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(Self::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
            _ => Err(Error::InvalidVersion(s.chars().take(64).collect())),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    index: Index,
    /// Parsed schemas by id (parsed at replay or on first use).
    parsed: HashMap<u32, Arc<Parsed>>,
    /// Ids by identity: `(type, identity, references)`.
    by_identity: HashMap<(SchemaType, String, Vec<Reference>), u32>,
}

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

fn parse_type(t: Option<&str>) -> Result<SchemaType> {
    match t {
        None => Ok(SchemaType::Avro),
        Some(t) => t.parse().map_err(|e: String| {
            Error::InvalidSchema(format!("{e}; known types: AVRO, JSON, PROTOBUF"))
        }),
    }
}

/// Checks a subject name: 1..=255 characters, no control characters.
pub fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.chars().count() > 255 || subject.chars().any(char::is_control)
    {
        return Err(Error::InvalidSubject(
            subject.chars().take(64).collect::<String>(),
        ));
    }
    Ok(())
}

impl State {
    /// Resolves `refs` (transitively) into dependencies, dependencies first.
    fn resolve(&self, refs: &[Reference]) -> Result<Vec<Dependency>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.resolve_into(refs, 0, &mut seen, &mut out)?;
        Ok(out)
    }

    fn resolve_into(
        &self,
        refs: &[Reference],
        depth: usize,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<Dependency>,
    ) -> Result<()> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(Error::InvalidSchema(format!(
                "references nested deeper than {MAX_REFERENCE_DEPTH}"
            )));
        }
        for r in refs {
            if !seen.insert(r.name.clone()) {
                continue;
            }
            let v = self.find_version(&r.subject, r.version).ok_or_else(|| {
                Error::InvalidSchema(format!(
                    "reference {:?} to subject {:?} version {} not found",
                    r.name, r.subject, r.version
                ))
            })?;
            self.resolve_into(&v.references, depth + 1, seen, out)?;
            out.push(Dependency {
                name: r.name.clone(),
                schema: v.schema.clone(),
            });
        }
        Ok(())
    }

    fn find_version(&self, subject: &str, version: i32) -> Option<&Version> {
        let vs = self.index.versions(subject)?;
        if version <= 0 {
            vs.values().rev().find(|v| !v.deleted)
        } else {
            vs.get(&(version as u32))
        }
    }

    /// The parsed schema of an id, parsing (and caching) it on first use.
    fn parsed(&mut self, id: u32) -> Option<Arc<Parsed>> {
        if let Some(p) = self.parsed.get(&id) {
            return Some(p.clone());
        }
        let c = self.index.by_id(id)?.clone();
        let deps = self.resolve(&c.references).ok()?;
        let p = Arc::new(schema::parse(c.schema_type, &c.schema, &deps).ok()?);
        self.by_identity
            .entry((c.schema_type, p.identity.clone(), c.references.clone()))
            .or_insert(id);
        self.parsed.insert(id, p.clone());
        Some(p)
    }

    fn apply(&mut self, offset: u64, record: Record) {
        let new_id = match &record {
            Record::Schema { value: Some(v), .. } if self.index.by_id(v.id).is_none() => Some(v.id),
            _ => None,
        };
        self.index.apply(offset, record);
        if let Some(id) = new_id
            && self.parsed(id).is_none()
        {
            tracing::warn!(
                id,
                "a schema in the log does not parse; it is served but never matched"
            );
        }
    }
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
            let next = self.state.read().expect("state lock").index.next_offset;
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
        let mut st = self.state.write().expect("state lock");
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
        Ok(self.state.read().expect("state lock"))
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
                    let st = self.state.read().expect("state lock");
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
            let next = self.state.read().expect("state lock").index.next_offset;
            let wait = match target {
                Some(t) if next < t => 1000,
                _ => 0,
            };
            let batch = self.log.read(next, wait).await?;
            let done = batch.records.is_empty();
            self.apply_batch(batch.records, batch.next_offset);
            let target = *target.get_or_insert(batch.log_end);
            let next = self.state.read().expect("state lock").index.next_offset;
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
        let caught_up = self.state.read().expect("state lock").index.next_offset;
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

    /// Parses a request's schema with its references resolved.
    fn parse_request(st: &State, req: &SchemaRequest) -> Result<(Parsed, Vec<Reference>)> {
        let schema_type = parse_type(req.schema_type.as_deref())?;
        let text = req
            .schema
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| Error::InvalidSchema("Empty schema".to_owned()))?;
        let refs = req.references.clone().unwrap_or_default();
        let deps = st.resolve(&refs)?;
        let parsed = schema::parse(schema_type, text, &deps).map_err(Error::InvalidSchema)?;
        Ok((parsed, refs))
    }

    /// The non-deleted version of `subject` whose schema is `parsed`.
    fn find_in_subject(
        st: &mut State,
        subject: &str,
        parsed: &Parsed,
        refs: &[Reference],
        deleted: bool,
    ) -> Option<(u32, Version)> {
        let candidates: Vec<(u32, Version)> = st
            .index
            .versions(subject)?
            .iter()
            .filter(|(_, v)| (deleted || !v.deleted) && v.schema_type == parsed.schema_type)
            .map(|(n, v)| (*n, v.clone()))
            .collect();
        candidates.into_iter().rev().find(|(_, v)| {
            v.references == refs
                && st
                    .parsed(v.id)
                    .is_some_and(|p| p.identity == parsed.identity)
        })
    }

    /// `POST /subjects/{s}/versions`: registers a schema (or finds it) and returns its id.
    pub async fn register(
        &self,
        subject: &str,
        req: SchemaRequest,
        normalize: bool,
    ) -> Result<u32> {
        check_subject(subject)?;
        let _w = self.begin_write().await?;
        let (id, version, record) = {
            let mut st = self.state.write().expect("state lock");
            let st = &mut *st;
            let (parsed, refs) = Self::parse_request(st, &req)?;
            if let Some((_, v)) = Self::find_in_subject(st, subject, &parsed, &refs, false) {
                return Ok(v.id);
            }
            self.check_writable(st, Some(subject))?;
            let import = st.index.effective_mode(Some(subject)) == Mode::Import;
            if (req.id.is_some_and(|i| i >= 0) || req.version.is_some_and(|v| v > 0)) && !import {
                return Err(Error::NotPermitted(
                    "a schema may carry its id or version only in IMPORT mode".to_owned(),
                ));
            }
            let level = st.index.effective_config(subject);
            if !import && level != Compatibility::None {
                let previous_ids: Vec<u32> = st
                    .index
                    .versions(subject)
                    .map(|vs| vs.values().filter(|v| !v.deleted).map(|v| v.id).collect())
                    .unwrap_or_default();
                let previous: Vec<Arc<Parsed>> = previous_ids
                    .iter()
                    .filter_map(|id| st.parsed(*id))
                    .collect();
                let previous: Vec<&Parsed> = previous.iter().map(|p| p.as_ref()).collect();
                let reasons = schema::check(level, &parsed, &previous);
                if !reasons.is_empty() {
                    self.metrics.incompatible.inc();
                    return Err(Error::Incompatible {
                        subject: subject.to_owned(),
                        reasons,
                    });
                }
            }
            let identity = (parsed.schema_type, parsed.identity.clone(), refs.clone());
            let id = match (req.id.filter(|i| *i >= 0), st.by_identity.get(&identity)) {
                (Some(want), known) => {
                    let want = u32::try_from(want)
                        .map_err(|_| Error::NotPermitted(format!("id {want} is out of range")))?;
                    if st.index.by_id(want).is_some() && known != Some(&want) {
                        return Err(Error::NotPermitted(format!(
                            "Overwrite new schema with id {want} is not permitted: the id holds another schema"
                        )));
                    }
                    want
                }
                (None, Some(id)) => *id,
                (None, None) => {
                    st.index.max_id().checked_add(1).ok_or_else(|| {
                        Error::NotPermitted("every schema id is in use".to_owned())
                    })?
                }
            };
            let latest = st
                .index
                .versions(subject)
                .and_then(|vs| vs.keys().next_back().copied())
                .unwrap_or(0);
            let version = match req.version.filter(|v| *v > 0) {
                Some(v) => u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| Error::InvalidVersion(v.to_string()))?,
                None => latest + 1,
            };
            let schema = if normalize {
                parsed.normalized.clone()
            } else {
                req.schema.clone().unwrap_or_default()
            };
            let record = Record::Schema {
                subject: subject.to_owned(),
                version,
                value: Some(SchemaValue {
                    subject: subject.to_owned(),
                    version,
                    id,
                    schema,
                    schema_type: parsed.schema_type,
                    references: refs,
                    deleted: false,
                }),
            };
            (id, version, record)
        };
        self.write(record).await?;
        self.metrics.registered.inc();
        tracing::info!(subject, version, id, "schema registered");
        Ok(id)
    }

    /// `POST /subjects/{s}`: the version of `subject` holding this schema.
    pub fn lookup(
        &self,
        subject: &str,
        req: &SchemaRequest,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let st = self.read_state()?;
        if st.index.versions(subject).is_none() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let (parsed, refs) = Self::parse_request(&st, req)?;
        drop(st);
        let mut st = self.state.write().expect("state lock");
        let (version, v) = Self::find_in_subject(&mut st, subject, &parsed, &refs, deleted)
            .ok_or_else(|| Error::SchemaNotFound("not found".to_owned()))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id: v.id,
            schema_type: v.schema_type,
            references: v.references,
            schema: v.schema,
        })
    }

    /// `GET /schemas/ids/{id}`.
    pub fn schema_by_id(&self, id: u32, subject: Option<&str>) -> Result<SchemaById> {
        let st = self.read_state()?;
        let c = st
            .index
            .by_id(id)
            .ok_or_else(|| Error::SchemaNotFound(id.to_string()))?;
        if let Some(s) = subject.filter(|s| !s.is_empty())
            && !st.index.uses_of(id, true).iter().any(|(sub, _)| *sub == s)
        {
            return Err(Error::SchemaNotFound(format!("{id} in subject {s}")));
        }
        Ok(SchemaById {
            schema_type: c.schema_type,
            schema: c.schema.clone(),
            references: c.references.clone(),
        })
    }

    /// `GET /schemas/ids/{id}/versions`.
    pub fn id_versions(&self, id: u32, deleted: bool) -> Result<Vec<SubjectAndVersion>> {
        let st = self.read_state()?;
        if st.index.by_id(id).is_none() {
            return Err(Error::SchemaNotFound(id.to_string()));
        }
        Ok(st
            .index
            .uses_of(id, deleted)
            .into_iter()
            .map(|(s, v)| SubjectAndVersion {
                subject: s.to_owned(),
                version: v,
            })
            .collect())
    }

    /// `GET /schemas/ids/{id}/subjects`.
    pub fn id_subjects(&self, id: u32, deleted: bool) -> Result<Vec<String>> {
        let mut subjects: Vec<String> = self
            .id_versions(id, deleted)?
            .into_iter()
            .map(|sv| sv.subject)
            .collect();
        subjects.dedup();
        Ok(subjects)
    }

    /// `GET /subjects`.
    pub fn subjects(&self, deleted: bool, prefix: Option<&str>) -> Result<Vec<String>> {
        let st = self.read_state()?;
        Ok(st
            .index
            .subjects(deleted)
            .into_iter()
            .filter(|s| prefix.is_none_or(|p| s.starts_with(p)))
            .map(str::to_owned)
            .collect())
    }

    /// `GET /subjects/{s}/versions`.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>> {
        let st = self.read_state()?;
        let vs: Vec<u32> = st
            .index
            .versions(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| deleted || !v.deleted)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        if vs.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Ok(vs)
    }

    /// `GET /subjects/{s}/versions/{v}`.
    pub fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let st = self.read_state()?;
        let vs = st
            .index
            .versions(subject)
            .filter(|vs| deleted || vs.values().any(|v| !v.deleted))
            .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?;
        let found = match version {
            VersionRef::Latest => vs.iter().rev().find(|(_, v)| deleted || !v.deleted),
            VersionRef::Number(n) => vs.get_key_value(&n).filter(|(_, v)| deleted || !v.deleted),
        };
        let (n, v) = found.ok_or_else(|| Error::VersionNotFound {
            subject: subject.to_owned(),
            version: match version {
                VersionRef::Latest => "latest".to_owned(),
                VersionRef::Number(n) => n.to_string(),
            },
        })?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: *n,
            id: v.id,
            schema_type: v.schema_type,
            references: v.references.clone(),
            schema: v.schema.clone(),
        })
    }

    /// `GET /subjects/{s}/versions/{v}/referencedby`: ids of schemas referencing it.
    pub fn referenced_by(&self, subject: &str, version: VersionRef) -> Result<Vec<u32>> {
        let target = self.version(subject, version, false)?;
        let st = self.read_state()?;
        let mut ids: Vec<u32> = st
            .index
            .subjects(false)
            .into_iter()
            .flat_map(|s| st.index.versions(s).into_iter().flat_map(|vs| vs.values()))
            .filter(|v| {
                !v.deleted
                    && v.references.iter().any(|r| {
                        r.subject == subject
                            && (r.version == target.version as i32 || r.version <= 0)
                    })
            })
            .map(|v| v.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// `DELETE /subjects/{s}`: soft-deletes every version, or (`permanent`) drops versions
    /// already soft-deleted. Returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let _w = self.begin_write().await?;
        let (records, deleted) = {
            let st = self.state.read().expect("state lock");
            self.check_writable(&st, Some(subject))?;
            let vs = st
                .index
                .versions(subject)
                .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?;
            let live: Vec<u32> = vs
                .iter()
                .filter(|(_, v)| !v.deleted)
                .map(|(n, _)| *n)
                .collect();
            if permanent {
                if !live.is_empty() {
                    return Err(Error::SubjectNotSoftDeleted(subject.to_owned()));
                }
                let all: Vec<u32> = vs.keys().copied().collect();
                let recs: Vec<Record> = all
                    .iter()
                    .map(|n| Record::Schema {
                        subject: subject.to_owned(),
                        version: *n,
                        value: None,
                    })
                    .collect();
                (recs, all)
            } else {
                if live.is_empty() {
                    return Err(Error::SubjectSoftDeleted(subject.to_owned()));
                }
                self.check_not_referenced(&st, subject, &live)?;
                let latest = *vs.keys().next_back().expect("a subject has versions");
                (
                    vec![Record::DeleteSubject {
                        subject: subject.to_owned(),
                        version: latest,
                    }],
                    live,
                )
            }
        };
        for r in records {
            self.write(r).await?;
        }
        tracing::info!(subject, permanent, versions = ?deleted, "subject deleted");
        Ok(deleted)
    }

    fn check_not_referenced(&self, st: &State, subject: &str, versions: &[u32]) -> Result<()> {
        for s in st.index.subjects(false) {
            for v in st.index.versions(s).into_iter().flat_map(|vs| vs.values()) {
                if v.deleted {
                    continue;
                }
                for r in &v.references {
                    if r.subject == subject && versions.iter().any(|n| *n as i32 == r.version) {
                        return Err(Error::ReferenceExists {
                            subject: subject.to_owned(),
                            version: r.version as u32,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// `DELETE /subjects/{s}/versions/{v}`: soft (or, once soft-deleted, `permanent`) deletion
    /// of one version. Returns the version deleted.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32> {
        let _w = self.begin_write().await?;
        let (n, record) = {
            let st = self.state.read().expect("state lock");
            self.check_writable(&st, Some(subject))?;
            let vs = st
                .index
                .versions(subject)
                .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?;
            let not_found = |v: String| Error::VersionNotFound {
                subject: subject.to_owned(),
                version: v,
            };
            let (n, v) = match version {
                VersionRef::Latest => vs
                    .iter()
                    .rev()
                    .find(|(_, v)| permanent || !v.deleted)
                    .ok_or_else(|| not_found("latest".to_owned()))?,
                VersionRef::Number(n) => vs
                    .get_key_value(&n)
                    .ok_or_else(|| not_found(n.to_string()))?,
            };
            let n = *n;
            if permanent {
                if !v.deleted {
                    return Err(Error::VersionNotSoftDeleted {
                        subject: subject.to_owned(),
                        version: n,
                    });
                }
                (
                    n,
                    Record::Schema {
                        subject: subject.to_owned(),
                        version: n,
                        value: None,
                    },
                )
            } else {
                if v.deleted {
                    return Err(Error::VersionSoftDeleted {
                        subject: subject.to_owned(),
                        version: n,
                    });
                }
                self.check_not_referenced(&st, subject, &[n])?;
                (
                    n,
                    Record::Schema {
                        subject: subject.to_owned(),
                        version: n,
                        value: Some(SchemaValue {
                            subject: subject.to_owned(),
                            version: n,
                            id: v.id,
                            schema: v.schema.clone(),
                            schema_type: v.schema_type,
                            references: v.references.clone(),
                            deleted: true,
                        }),
                    },
                )
            }
        };
        self.write(record).await?;
        tracing::info!(subject, version = n, permanent, "version deleted");
        Ok(n)
    }

    /// `POST /compatibility/subjects/{s}/versions[/{v}]`: the reasons `req` is incompatible
    /// with the given version (`None`: every version the level checks against).
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        req: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let mut st = self.state.write().expect("state lock");
        if !self.is_ready() {
            return Err(Error::NotReady);
        }
        let (parsed, _) = Self::parse_request(&st, req)?;
        let level = st.index.effective_config(subject);
        let live: Vec<(u32, u32)> = st
            .index
            .versions(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| !v.deleted)
                    .map(|(n, v)| (*n, v.id))
                    .collect()
            })
            .unwrap_or_default();
        let ids: Vec<u32> = match version {
            // Confluent: "latest" of a subject without versions is compatible.
            None | Some(VersionRef::Latest) if live.is_empty() => return Ok(Vec::new()),
            None => live.iter().map(|(_, id)| *id).collect(),
            Some(VersionRef::Latest) => live.last().map(|(_, id)| *id).into_iter().collect(),
            Some(VersionRef::Number(n)) => {
                if st.index.versions(subject).is_none() {
                    return Err(Error::SubjectNotFound(subject.to_owned()));
                }
                let id = live
                    .iter()
                    .find(|(v, _)| *v == n)
                    .map(|(_, id)| *id)
                    .ok_or(Error::VersionNotFound {
                        subject: subject.to_owned(),
                        version: n.to_string(),
                    })?;
                vec![id]
            }
        };
        let previous: Vec<Arc<Parsed>> = ids.iter().filter_map(|id| st.parsed(*id)).collect();
        let previous: Vec<&Parsed> = previous.iter().map(|p| p.as_ref()).collect();
        // Against one named version, its level applies to that version alone.
        let level = if version.is_some() && level.transitive() {
            match level {
                Compatibility::BackwardTransitive => Compatibility::Backward,
                Compatibility::ForwardTransitive => Compatibility::Forward,
                _ => Compatibility::Full,
            }
        } else {
            level
        };
        Ok(schema::check(level, &parsed, &previous))
    }

    /// `GET /config[/{s}]`: the level set (`subject: None` is the global one, BACKWARD unless
    /// set). With `default_to_global`, a subject without its own level gets the global one.
    pub fn get_config(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Compatibility> {
        let st = self.read_state()?;
        match subject {
            None => Ok(st.index.config(None).unwrap_or_default()),
            Some(s) => match st.index.config(Some(s)) {
                Some(c) => Ok(c),
                None if default_to_global => Ok(st.index.config(None).unwrap_or_default()),
                None => Err(Error::SubjectConfigNotFound(s.to_owned())),
            },
        }
    }

    /// `PUT /config[/{s}]`.
    pub async fn set_config(&self, subject: Option<&str>, level: Compatibility) -> Result<()> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let _w = self.begin_write().await?;
        self.write(Record::Config {
            subject: subject.map(str::to_owned),
            value: Some(ConfigValue {
                compatibility_level: level,
            }),
        })
        .await?;
        tracing::info!(subject, %level, "compatibility level set");
        Ok(())
    }

    /// `DELETE /config[/{s}]`: removes the level; returns the one removed.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<Compatibility> {
        let _w = self.begin_write().await?;
        let previous = {
            let st = self.state.read().expect("state lock");
            match (subject, st.index.config(subject)) {
                (_, Some(c)) => c,
                (None, None) => Compatibility::default(),
                (Some(s), None) => {
                    if st.index.versions(s).is_none() {
                        return Err(Error::SubjectNotFound(s.to_owned()));
                    }
                    return Err(Error::SubjectConfigNotFound(s.to_owned()));
                }
            }
        };
        self.write(Record::Config {
            subject: subject.map(str::to_owned),
            value: None,
        })
        .await?;
        Ok(previous)
    }

    /// `GET /mode`.
    pub fn get_mode(&self) -> Result<Mode> {
        Ok(self.read_state()?.index.effective_mode(None))
    }

    /// `PUT /mode`.
    pub async fn set_mode(&self, mode: Mode) -> Result<()> {
        let _w = self.begin_write().await?;
        self.write(Record::Mode {
            subject: None,
            value: Some(ModeValue { mode }),
        })
        .await?;
        tracing::info!(?mode, "mode set");
        Ok(())
    }

    /// Counts for `/metrics` and logs: `(subjects, schema ids, log records)`.
    pub fn counts(&self) -> (usize, usize, u64) {
        let st = self.state.read().expect("state lock");
        (
            st.index.subjects(false).len(),
            st.index.ids().count(),
            st.index.next_offset,
        )
    }
}
