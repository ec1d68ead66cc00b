//! The in-memory index of the schemas topic: subjects and their versions, schemas by id,
//! compatibility levels and modes. It is only ever changed by applying a log record, in log
//! order, so replaying the topic from offset 0 rebuilds it exactly.

use std::collections::{BTreeMap, HashMap};

use crate::record::{Compatibility, Mode, Record, Reference, SchemaType, SchemaValue};

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Global schema id.
    pub id: u32,
    /// Schema text as registered.
    pub schema: String,
    /// Format.
    pub schema_type: SchemaType,
    /// References.
    pub references: Vec<Reference>,
    /// Soft-deleted.
    pub deleted: bool,
}

/// The content an id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Schema text (as first registered under this id).
    pub schema: String,
    /// Format.
    pub schema_type: SchemaType,
    /// References.
    pub references: Vec<Reference>,
}

/// The index.
#[derive(Debug, Default, Clone)]
pub struct Index {
    subjects: BTreeMap<String, BTreeMap<u32, Version>>,
    ids: BTreeMap<u32, Content>,
    configs: HashMap<Option<String>, Compatibility>,
    modes: HashMap<Option<String>, Mode>,
    max_id: u32,
    /// The offset of the next record to apply.
    pub next_offset: u64,
}

impl Index {
    /// Applies `record`, found at `offset`.
    pub fn apply(&mut self, offset: u64, record: Record) {
        self.next_offset = self.next_offset.max(offset + 1);
        match record {
            Record::Schema {
                subject,
                version,
                value: Some(v),
            } => self.put_schema(subject, version, v),
            Record::Schema {
                subject,
                version,
                value: None,
            } => {
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    versions.remove(&version);
                    if versions.is_empty() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            Record::Config { subject, value } => match value {
                Some(v) => {
                    self.configs.insert(subject, v.compatibility_level);
                }
                None => {
                    self.configs.remove(&subject);
                }
            },
            Record::Mode { subject, value } => match value {
                Some(v) => {
                    self.modes.insert(subject, v.mode);
                }
                None => {
                    self.modes.remove(&subject);
                }
            },
            Record::DeleteSubject { subject, version } => {
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    for (_, v) in versions.range_mut(..=version) {
                        v.deleted = true;
                    }
                }
            }
            Record::ClearSubject { subject } => {
                self.subjects.remove(&subject);
            }
            Record::Noop => {}
        }
    }

    fn put_schema(&mut self, subject: String, version: u32, v: SchemaValue) {
        self.max_id = self.max_id.max(v.id);
        self.ids.entry(v.id).or_insert_with(|| Content {
            schema: v.schema.clone(),
            schema_type: v.schema_type,
            references: v.references.clone(),
        });
        self.subjects.entry(subject).or_default().insert(
            version,
            Version {
                id: v.id,
                schema: v.schema,
                schema_type: v.schema_type,
                references: v.references,
                deleted: v.deleted,
            },
        );
    }

    /// The largest id ever seen (0 when none): the next one is this plus one.
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// The content of an id.
    pub fn by_id(&self, id: u32) -> Option<&Content> {
        self.ids.get(&id)
    }

    /// Every id with its content.
    pub fn ids(&self) -> impl Iterator<Item = (u32, &Content)> {
        self.ids.iter().map(|(id, c)| (*id, c))
    }

    /// A subject's versions (soft-deleted included), by version.
    pub fn versions(&self, subject: &str) -> Option<&BTreeMap<u32, Version>> {
        self.subjects.get(subject)
    }

    /// Subjects (soft-deleted ones when `deleted`), in name order.
    pub fn subjects(&self, deleted: bool) -> Vec<&str> {
        self.subjects
            .iter()
            .filter(|(_, vs)| deleted || vs.values().any(|v| !v.deleted))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// Every `(subject, version)` registered with `id`.
    pub fn uses_of(&self, id: u32, deleted: bool) -> Vec<(&str, u32)> {
        self.subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.iter()
                    .filter(move |(_, v)| v.id == id && (deleted || !v.deleted))
                    .map(move |(n, _)| (s.as_str(), *n))
            })
            .collect()
    }

    /// The level set for `subject` (or the global one for `None`), if any.
    pub fn config(&self, subject: Option<&str>) -> Option<Compatibility> {
        self.configs.get(&subject.map(str::to_owned)).copied()
    }

    /// The level in force for `subject`: its own, else the global one, else BACKWARD.
    pub fn effective_config(&self, subject: &str) -> Compatibility {
        self.config(Some(subject))
            .or_else(|| self.config(None))
            .unwrap_or_default()
    }

    /// The mode set for `subject` (or the global one for `None`), if any.
    pub fn mode(&self, subject: Option<&str>) -> Option<Mode> {
        self.modes.get(&subject.map(str::to_owned)).copied()
    }

    /// The mode in force for `subject`: its own, else the global one, else READWRITE.
    pub fn effective_mode(&self, subject: Option<&str>) -> Mode {
        subject
            .and_then(|s| self.mode(Some(s)))
            .or_else(|| self.mode(None))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ConfigValue, ModeValue};

    fn schema(subject: &str, version: u32, id: u32, deleted: bool) -> Record {
        Record::Schema {
            subject: subject.into(),
            version,
            value: Some(SchemaValue {
                subject: subject.into(),
                version,
                id,
                schema: format!("\"s{id}\""),
                schema_type: SchemaType::Avro,
                references: vec![],
                deleted,
            }),
        }
    }

    #[test]
    fn test_index_replay_deletes_and_ids() {
        let mut ix = Index::default();
        ix.apply(0, schema("a", 1, 1, false));
        ix.apply(1, schema("a", 2, 2, false));
        ix.apply(2, schema("b", 1, 2, false));
        ix.apply(
            3,
            Record::DeleteSubject {
                subject: "a".into(),
                version: 2,
            },
        );
        assert_eq!(ix.subjects(false), vec!["b"]);
        assert_eq!(ix.subjects(true), vec!["a", "b"]);
        ix.apply(
            4,
            Record::Schema {
                subject: "a".into(),
                version: 1,
                value: None,
            },
        );
        assert_eq!(ix.versions("a").unwrap().len(), 1);
        // Permanently deleting every version removes the subject, but never the id.
        ix.apply(
            5,
            Record::Schema {
                subject: "a".into(),
                version: 2,
                value: None,
            },
        );
        assert!(ix.versions("a").is_none());
        assert_eq!(ix.max_id(), 2);
        assert!(ix.by_id(1).is_some());
        assert_eq!(ix.uses_of(2, false), vec![("b", 1)]);
        assert_eq!(ix.next_offset, 6);
    }

    #[test]
    fn test_index_config_and_mode_fall_back_to_global() {
        let mut ix = Index::default();
        assert_eq!(ix.effective_config("s"), Compatibility::Backward);
        ix.apply(
            0,
            Record::Config {
                subject: None,
                value: Some(ConfigValue {
                    compatibility_level: Compatibility::Full,
                }),
            },
        );
        assert_eq!(ix.effective_config("s"), Compatibility::Full);
        ix.apply(
            1,
            Record::Config {
                subject: Some("s".into()),
                value: Some(ConfigValue {
                    compatibility_level: Compatibility::None,
                }),
            },
        );
        assert_eq!(ix.effective_config("s"), Compatibility::None);
        ix.apply(
            2,
            Record::Config {
                subject: Some("s".into()),
                value: None,
            },
        );
        assert_eq!(ix.effective_config("s"), Compatibility::Full);
        ix.apply(
            3,
            Record::Mode {
                subject: None,
                value: Some(ModeValue {
                    mode: Mode::Readonly,
                }),
            },
        );
        assert_eq!(ix.effective_mode(Some("s")), Mode::Readonly);
    }
}
