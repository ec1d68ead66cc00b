//! Registration: parsing a request's schema, finding it among a subject's versions, and
//! choosing the id and version of a new one.
//!
//! Invariant: a registration is answered only once its record is durable. A schema already in
//! the log keeps its id; a new one gets the largest id in the log plus one (in IMPORT mode, the
//! id asked for, if it holds no other schema), so an id is never handed out twice, across
//! restarts and crashes too.

use std::sync::Arc;

use common::sync::LockExt;

use super::state::State;
use super::types::parse_type;
use super::{Error, Registry, Result, SchemaRequest, check_subject};
use crate::index::Version;
use crate::record::{Compatibility, Mode, Record, Reference, SchemaValue};
use crate::schema::{self, Parsed};

impl Registry {
    /// Parses a request's schema with its references resolved.
    pub(super) fn parse_request(
        st: &State,
        req: &SchemaRequest,
    ) -> Result<(Parsed, Vec<Reference>)> {
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
    pub(super) fn find_in_subject(
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
            let mut st = self.state.write_or_abort();
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
}
