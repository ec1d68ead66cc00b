//! Lookups: schemas by id, subjects, versions, and which schemas reference a version.
//!
//! Invariant: reads are served from the index alone and never append to the log (a lookup may
//! fill the parse cache); each errs with `NotReady` until the index is rebuilt from the log.

use common::sync::LockExt;

use super::{
    Error, Registry, Result, SchemaById, SchemaRequest, SubjectAndVersion, SubjectVersion,
    VersionRef,
};

impl Registry {
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
        let mut st = self.state.write_or_abort();
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
}
