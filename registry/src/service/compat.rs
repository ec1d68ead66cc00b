//! Compatibility checks of a schema against a subject's versions, at the subject's level.
//!
//! Invariant: a check only reads the log's state (it may fill the parse cache) and never
//! writes a record.

use std::sync::Arc;

use common::sync::LockExt;

use super::{Error, Registry, Result, SchemaRequest, VersionRef};
use crate::record::Compatibility;
use crate::schema::{self, Parsed};

impl Registry {
    /// `POST /compatibility/subjects/{s}/versions[/{v}]`: the reasons `req` is incompatible
    /// with the given version (`None`: every version the level checks against).
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        req: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let mut st = self.state.write_or_abort();
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
}
