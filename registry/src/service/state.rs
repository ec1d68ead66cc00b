//! The in-memory state behind the registry's state lock: the [`Index`] of the log plus a cache of
//! parsed schemas and of ids by schema identity, and the resolution of references.
//!
//! Invariant: the state changes only by applying records of the log in offset order
//! ([`State::apply`]); the parse caches are derived from the index and never hold a schema the
//! log does not.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Error, Result};
use crate::index::{Index, Version};
use crate::record::{Record, Reference, SchemaType};
use crate::schema::{self, Dependency, Parsed};

/// The deepest chain of references followed.
const MAX_REFERENCE_DEPTH: usize = 32;

/// What the registry knows of the log: the index and the caches derived from it.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The index of every record applied.
    pub(super) index: Index,
    /// Parsed schemas by id (parsed at replay or on first use).
    parsed: HashMap<u32, Arc<Parsed>>,
    /// Ids by identity: `(type, identity, references)`.
    pub(super) by_identity: HashMap<(SchemaType, String, Vec<Reference>), u32>,
}

impl State {
    /// Resolves `refs` (transitively) into dependencies, dependencies first.
    pub(super) fn resolve(&self, refs: &[Reference]) -> Result<Vec<Dependency>> {
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
    pub(super) fn parsed(&mut self, id: u32) -> Option<Arc<Parsed>> {
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

    pub(super) fn apply(&mut self, offset: u64, record: Record) {
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
