//! The records of the schemas topic, in the layout Confluent's Schema Registry writes to its
//! `_schemas` topic, so the log can be read by another registry (and Confluent's can be read by
//! Kelp's).
//!
//! Every record has a JSON key naming what it is about and a JSON value (empty for a tombstone):
//!
//! | key | value |
//! |---|---|
//! | `{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}` | `{"subject","version","id","schema","schemaType","references","deleted"}` |
//! | `{"keytype":"CONFIG","subject":null\|"s","magic":0}` | `{"compatibilityLevel":"BACKWARD"}` |
//! | `{"keytype":"MODE","subject":null\|"s","magic":0}` | `{"mode":"READWRITE"}` |
//! | `{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}` | `{"subject":"s","version":N}`: versions up to N soft-deleted |
//! | `{"keytype":"CLEAR_SUBJECT","subject":"s","magic":0}` | `{"subject":"s"}`: read only, every version dropped |
//! | `{"keytype":"NOOP","magic":0}` | ignored |
//!
//! The log is replayed in order and the last value of a key wins, as Kafka's compaction would
//! leave it. Kafka marks a deletion with a null value; Kelp's publish API has no null value, so
//! a tombstone is an empty value (and a `null` one is read as a tombstone too).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The key of a record of the schemas topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Key {
    /// One version of a subject.
    Schema {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Key format version (1).
        #[serde(default = "one")]
        magic: u32,
    },
    /// The compatibility level, global (`subject: null`) or of a subject.
    Config {
        /// Subject, or `None` for the global level.
        subject: Option<String>,
        /// Key format version (0).
        #[serde(default)]
        magic: u32,
    },
    /// The mode, global (`subject: null`) or of a subject.
    Mode {
        /// Subject, or `None` for the global mode.
        subject: Option<String>,
        /// Key format version (0).
        #[serde(default)]
        magic: u32,
    },
    /// A soft deletion of a subject's versions up to the value's `version`.
    DeleteSubject {
        /// Subject.
        subject: String,
        /// Key format version (0).
        #[serde(default)]
        magic: u32,
    },
    /// Every version of a subject dropped (written by Confluent's registry; Kelp only reads it).
    ClearSubject {
        /// Subject.
        subject: String,
        /// Key format version (0).
        #[serde(default)]
        magic: u32,
    },
    /// Written by Confluent's registry to find the end of the log; ignored.
    Noop {
        /// Key format version (0).
        #[serde(default)]
        magic: u32,
    },
}

fn one() -> u32 {
    1
}

impl Key {
    /// The key of `subject`'s `version`.
    pub fn schema(subject: &str, version: u32) -> Self {
        Self::Schema {
            subject: subject.to_owned(),
            version,
            magic: 1,
        }
    }

    /// The key of a compatibility level.
    pub fn config(subject: Option<&str>) -> Self {
        Self::Config {
            subject: subject.map(str::to_owned),
            magic: 0,
        }
    }

    /// The key of a mode.
    pub fn mode(subject: Option<&str>) -> Self {
        Self::Mode {
            subject: subject.map(str::to_owned),
            magic: 0,
        }
    }

    /// The key of a subject's soft deletion.
    pub fn delete_subject(subject: &str) -> Self {
        Self::DeleteSubject {
            subject: subject.to_owned(),
            magic: 0,
        }
    }

    /// The key as the JSON text stored in the record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("keys serialize")
    }
}

/// The schema format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// Apache Avro (the default).
    #[default]
    Avro,
    /// JSON Schema.
    Json,
    /// Protocol Buffers.
    Protobuf,
}

impl SchemaType {
    /// Every type, as `GET /schemas/types` lists them.
    pub const ALL: [SchemaType; 3] = [Self::Json, Self::Protobuf, Self::Avro];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Json => "JSON",
            Self::Protobuf => "PROTOBUF",
        }
    }

    /// Whether this is Avro (which Confluent leaves out of answers).
    pub fn is_avro(&self) -> bool {
        *self == Self::Avro
    }
}

impl FromStr for SchemaType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(Self::Avro),
            "JSON" => Ok(Self::Json),
            "PROTOBUF" => Ok(Self::Protobuf),
            _ => Err(format!("unknown schema type {s:?}")),
        }
    }
}

/// A reference of a schema to another subject's version: an Avro named type, a JSON Schema
/// `$ref` target or a protobuf import, by `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    /// The name the schema uses for it (Avro full name, `$ref` URL, import path).
    pub name: String,
    /// The subject holding it.
    pub subject: String,
    /// Its version in that subject (`-1` is the latest when registering).
    pub version: i32,
}

/// The value of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    /// Subject.
    pub subject: String,
    /// Version within the subject.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// The schema text as registered.
    pub schema: String,
    /// Format; Avro when absent.
    #[serde(default, skip_serializing_if = "SchemaType::is_avro")]
    pub schema_type: SchemaType,
    /// References to other subjects' versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// Soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// A compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// New schemas can read data written with the latest one (the default).
    #[default]
    Backward,
    /// ... with every earlier one.
    BackwardTransitive,
    /// Data written with new schemas can be read with the latest one.
    Forward,
    /// ... with every earlier one.
    ForwardTransitive,
    /// Both backward and forward with the latest one.
    Full,
    /// ... with every earlier one.
    FullTransitive,
    /// No check.
    None,
}

impl Compatibility {
    /// Whether the check runs against every earlier version rather than the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// Whether the new schema must read data of the old ones.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Whether the old schemas must read data of the new one.
    pub fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).expect("levels serialize");
        f.write_str(s.as_str().unwrap_or("BACKWARD"))
    }
}

/// The value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    /// The level.
    pub compatibility_level: Compatibility,
}

/// A registry mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Reads and writes (the default).
    #[default]
    Readwrite,
    /// Registrations and deletions are refused.
    Readonly,
    /// As `READONLY`, and the mode cannot be changed under it (accepted, treated as `READONLY`).
    ReadonlyOverride,
    /// Registrations may carry their id and version (for migrations).
    Import,
}

/// The value of a `MODE` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    /// The mode.
    pub mode: Mode,
}

/// The value of a `DELETE_SUBJECT` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    /// Subject.
    pub subject: String,
    /// Versions up to this one are soft-deleted.
    pub version: u32,
}

/// One record of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A version of a subject (`None`: permanently deleted).
    Schema {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// The value.
        value: Option<SchemaValue>,
    },
    /// A compatibility level (`None`: removed, the default applies).
    Config {
        /// Subject, `None` for the global level.
        subject: Option<String>,
        /// The level.
        value: Option<ConfigValue>,
    },
    /// A mode (`None`: removed).
    Mode {
        /// Subject, `None` for the global mode.
        subject: Option<String>,
        /// The mode.
        value: Option<ModeValue>,
    },
    /// A subject's versions up to `version` soft-deleted.
    DeleteSubject {
        /// Subject.
        subject: String,
        /// Highest version deleted.
        version: u32,
    },
    /// Every version of a subject dropped.
    ClearSubject {
        /// Subject.
        subject: String,
    },
    /// Nothing to apply.
    Noop,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The key is not one of the layouts above.
    #[error("bad record key: {0}")]
    Key(serde_json::Error),
    /// The value does not fit its key.
    #[error("bad record value: {0}")]
    Value(serde_json::Error),
}

fn value<T: serde::de::DeserializeOwned>(v: Option<&str>) -> Result<Option<T>, DecodeError> {
    match v.map(str::trim) {
        None | Some("") | Some("null") => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(DecodeError::Value),
    }
}

impl Record {
    /// Decodes a record from its key and value texts (`None` or empty value: a tombstone).
    pub fn decode(key: &str, val: Option<&str>) -> Result<Self, DecodeError> {
        let key: Key = serde_json::from_str(key).map_err(DecodeError::Key)?;
        Ok(match key {
            Key::Schema {
                subject, version, ..
            } => Self::Schema {
                subject,
                version,
                value: value(val)?,
            },
            Key::Config { subject, .. } => Self::Config {
                subject,
                value: value(val)?,
            },
            Key::Mode { subject, .. } => Self::Mode {
                subject,
                value: value(val)?,
            },
            Key::DeleteSubject { subject, .. } => match value::<DeleteSubjectValue>(val)? {
                Some(v) => Self::DeleteSubject {
                    subject,
                    version: v.version,
                },
                None => Self::Noop,
            },
            Key::ClearSubject { subject, .. } => Self::ClearSubject { subject },
            Key::Noop { .. } => Self::Noop,
        })
    }

    /// The key and value texts of this record (an empty value is a tombstone).
    pub fn encode(&self) -> (String, String) {
        fn json<T: Serialize>(v: &Option<T>) -> String {
            v.as_ref()
                .map(|v| serde_json::to_string(v).expect("values serialize"))
                .unwrap_or_default()
        }
        match self {
            Self::Schema {
                subject,
                version,
                value,
            } => (Key::schema(subject, *version).to_json(), json(value)),
            Self::Config { subject, value } => {
                (Key::config(subject.as_deref()).to_json(), json(value))
            }
            Self::Mode { subject, value } => (Key::mode(subject.as_deref()).to_json(), json(value)),
            Self::DeleteSubject { subject, version } => (
                Key::delete_subject(subject).to_json(),
                json(&Some(DeleteSubjectValue {
                    subject: subject.clone(),
                    version: *version,
                })),
            ),
            Self::ClearSubject { subject } => (
                Key::ClearSubject {
                    subject: subject.clone(),
                    magic: 0,
                }
                .to_json(),
                format!(
                    "{{\"subject\":{}}}",
                    serde_json::Value::from(subject.as_str())
                ),
            ),
            Self::Noop => (Key::Noop { magic: 0 }.to_json(), String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_key_layout_is_confluents() {
        assert_eq!(
            Key::schema("s", 1).to_json(),
            r#"{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}"#
        );
        assert_eq!(
            Key::config(None).to_json(),
            r#"{"keytype":"CONFIG","subject":null,"magic":0}"#
        );
        assert_eq!(
            Key::mode(Some("s")).to_json(),
            r#"{"keytype":"MODE","subject":"s","magic":0}"#
        );
        assert_eq!(
            Key::delete_subject("s").to_json(),
            r#"{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}"#
        );
    }

    #[test]
    fn test_record_round_trip_and_tombstones() {
        let records = [
            Record::Schema {
                subject: "s".into(),
                version: 2,
                value: Some(SchemaValue {
                    subject: "s".into(),
                    version: 2,
                    id: 7,
                    schema: "{\"type\":\"string\"}".into(),
                    schema_type: SchemaType::Json,
                    references: vec![Reference {
                        name: "r".into(),
                        subject: "t".into(),
                        version: 1,
                    }],
                    deleted: true,
                }),
            },
            Record::Schema {
                subject: "s".into(),
                version: 2,
                value: None,
            },
            Record::Config {
                subject: None,
                value: Some(ConfigValue {
                    compatibility_level: Compatibility::FullTransitive,
                }),
            },
            Record::Mode {
                subject: Some("s".into()),
                value: Some(ModeValue {
                    mode: Mode::Readonly,
                }),
            },
            Record::DeleteSubject {
                subject: "s".into(),
                version: 3,
            },
            Record::ClearSubject {
                subject: "s".into(),
            },
            Record::Noop,
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(Record::decode(&k, Some(&v)).unwrap(), r, "{k} {v}");
        }
    }

    #[test]
    fn test_record_decodes_confluents_values() {
        // As Confluent's registry writes them: schemaType absent for Avro, extra fields.
        let r = Record::decode(
            r#"{"keytype":"SCHEMA","subject":"x","version":1,"magic":1}"#,
            Some(r#"{"subject":"x","version":1,"id":1,"schema":"\"int\"","deleted":false,"extra":1}"#),
        )
        .unwrap();
        let Record::Schema { value: Some(v), .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!((v.id, v.schema_type), (1, SchemaType::Avro));
        assert!(Record::decode("{\"keytype\":\"WHAT\"}", None).is_err());
        assert!(Record::decode("not json", None).is_err());
        assert!(
            Record::decode(
                r#"{"keytype":"SCHEMA","subject":"x","version":1,"magic":1}"#,
                Some("{\"id\":\"x\"}")
            )
            .is_err()
        );
    }
}
