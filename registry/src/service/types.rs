//! The shapes of the registry's requests and answers (Confluent's JSON), and the checks of
//! the names a path carries (subject, version).
//!
//! Invariant: a [`VersionRef`] or a subject that passed [`check_subject`] is within
//! Confluent's bounds, so the operations never see an out-of-range version or subject.

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::record::{Reference, SchemaType};

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

pub(super) fn parse_type(t: Option<&str>) -> Result<SchemaType> {
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
