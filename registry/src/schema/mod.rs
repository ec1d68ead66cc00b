//! Parsing, identity and compatibility of schemas, per [`SchemaType`].
//!
//! - Avro ([`avro`]): `apache-avro` parses (with the referenced named types), renders the
//!   schema's identity (its own JSON rendering, insensitive to whitespace and key order) and
//!   checks compatibility with Avro's schema-resolution rules
//!   (`schema_compatibility::SchemaCompatibility::can_read`).
//! - JSON Schema ([`json`]): `serde_json` parses; compatibility is a structural check documented
//!   in that module.
//! - Protobuf ([`protobuf`]): `protox` compiles the file with its references as imports;
//!   compatibility compares the messages' fields by number, as documented in that module.
//!
//! Every parser runs under `catch_unwind`: a parser bug on a hostile schema is an invalid
//! schema (42201), never a dropped connection.

pub mod avro;
pub mod json;
pub mod protobuf;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::record::{Compatibility, SchemaType};

/// A referenced schema, resolved to its text (dependencies before their dependents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The name the referencing schema uses for it.
    pub name: String,
    /// Its text.
    pub schema: String,
}

/// A parsed schema.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Its type.
    pub schema_type: SchemaType,
    /// Equal for schemas that are the same (the registry gives them the same id).
    pub identity: String,
    /// The text registered when `normalize=true`.
    pub normalized: String,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Avro(Box<apache_avro::Schema>),
    Json(serde_json::Value),
    Protobuf(protobuf::Proto),
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(format!("the {what} parser failed")))
}

/// Parses `text` as a schema of `schema_type` whose references are `deps`.
pub fn parse(schema_type: SchemaType, text: &str, deps: &[Dependency]) -> Result<Parsed, String> {
    match schema_type {
        SchemaType::Avro => guarded("avro", || {
            let (schema, identity) = avro::parse(text, deps)?;
            Ok(Parsed {
                schema_type,
                normalized: identity.clone(),
                identity,
                inner: Inner::Avro(Box::new(schema)),
            })
        }),
        SchemaType::Json => {
            let (value, identity) = json::parse(text)?;
            Ok(Parsed {
                schema_type,
                normalized: identity.clone(),
                identity,
                inner: Inner::Json(value),
            })
        }
        SchemaType::Protobuf => guarded("protobuf", || {
            let proto = protobuf::parse(text, deps)?;
            Ok(Parsed {
                schema_type,
                identity: proto.identity.clone(),
                normalized: text.trim().to_owned(),
                inner: Inner::Protobuf(proto),
            })
        }),
    }
}

/// Why data written with `writer` cannot be read with `reader` (empty when it can).
pub fn can_read(writer: &Parsed, reader: &Parsed) -> Vec<String> {
    match (&writer.inner, &reader.inner) {
        (Inner::Avro(w), Inner::Avro(r)) => guarded("avro", || avro::can_read(w, r))
            .err()
            .into_iter()
            .collect(),
        (Inner::Json(w), Inner::Json(r)) => json::can_read(w, r),
        (Inner::Protobuf(w), Inner::Protobuf(r)) => protobuf::can_read(w, r),
        _ => vec![format!(
            "the schema type changed from {} to {}",
            writer.schema_type.as_str(),
            reader.schema_type.as_str()
        )],
    }
}

/// Checks `new` against `previous` (oldest first) under `level`; returns the reasons it is
/// incompatible (empty when compatible).
pub fn check(level: Compatibility, new: &Parsed, previous: &[&Parsed]) -> Vec<String> {
    let against: &[&Parsed] = if level.transitive() {
        previous
    } else {
        previous.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut reasons = Vec::new();
    for old in against {
        if level.backward() {
            reasons.extend(
                can_read(old, new)
                    .into_iter()
                    .map(|r| format!("backward: {r}")),
            );
        }
        if level.forward() {
            reasons.extend(
                can_read(new, old)
                    .into_iter()
                    .map(|r| format!("forward: {r}")),
            );
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(s: &str) -> Parsed {
        parse(SchemaType::Avro, s, &[]).unwrap()
    }

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V2_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":"x"}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn test_check_levels_on_avro() {
        let (v1, v2d, v2n) = (avro(V1), avro(V2_DEFAULT), avro(V2_NO_DEFAULT));
        assert!(check(Compatibility::Backward, &v2d, &[&v1]).is_empty());
        assert!(!check(Compatibility::Backward, &v2n, &[&v1]).is_empty());
        // Forward: the old reader ignores the new field.
        assert!(check(Compatibility::Forward, &v2n, &[&v1]).is_empty());
        assert!(!check(Compatibility::Full, &v2n, &[&v1]).is_empty());
        assert!(check(Compatibility::Full, &v2d, &[&v1]).is_empty());
        assert!(check(Compatibility::None, &v2n, &[&v1]).is_empty());
        // Transitive checks every earlier version; plain only the latest.
        assert!(check(Compatibility::Backward, &v2n, &[&v1, &v2d]).is_empty());
        assert!(!check(Compatibility::BackwardTransitive, &v2n, &[&v1, &v2d]).is_empty());
    }

    #[test]
    fn test_identity_ignores_whitespace_and_type_changes_are_incompatible() {
        let spaced = V1.replace(',', " ,\n ");
        assert_eq!(avro(V1).identity, avro(&spaced).identity);
        let j = parse(SchemaType::Json, r#"{"type":"object"}"#, &[]).unwrap();
        assert!(!can_read(&avro(V1), &j).is_empty());
    }
}
