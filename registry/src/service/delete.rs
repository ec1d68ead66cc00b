//! Deletions of subjects and versions: soft (a tombstone flag) and then permanent.
//!
//! Invariant: a version is permanently deleted only once soft-deleted, and nothing another
//! live schema references is soft-deleted; each deletion is answered only once its records are
//! durable.

use common::sync::LockExt;

use super::state::State;
use super::{Error, Registry, Result, VersionRef};
use crate::record::{Record, SchemaValue};

impl Registry {
    /// `DELETE /subjects/{s}`: soft-deletes every version, or (`permanent`) drops versions
    /// already soft-deleted. Returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let _w = self.begin_write().await?;
        let (records, deleted) = {
            let st = self.state.read_or_abort();
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
            let st = self.state.read_or_abort();
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
}
