//! Avro schemas through `apache-avro`: parsing with referenced named types, identity, and
//! schema-resolution compatibility.
//!
//! References name other subjects' named types (records, enums, fixed); they are parsed
//! together with the schema (`Schema::parse_str_with_list`), and a referenced type appears in
//! the schema as a reference by name: compatibility compares such references by full name (the
//! referenced version itself is immutable).

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use super::Dependency;

/// Parses `text` with `deps`; returns the schema and its identity (`apache-avro`'s JSON
/// rendering, like Avro's `Schema.toString()` that Confluent compares).
pub fn parse(text: &str, deps: &[Dependency]) -> Result<(Schema, String), String> {
    let schema = if deps.is_empty() {
        Schema::parse_str(text).map_err(|e| format!("invalid avro schema: {e}"))?
    } else {
        let texts: Vec<&str> = deps.iter().map(|d| d.schema.as_str()).collect();
        Schema::parse_str_with_list(text, texts)
            .map_err(|e| format!("invalid avro schema: {e}"))?
            .0
    };
    let identity =
        serde_json::to_string(&schema).map_err(|e| format!("render avro schema: {e}"))?;
    Ok((schema, identity))
}

/// Whether data written with `writer` can be read with `reader`.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(writer, reader).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_rejects_invalid_schemas() {
        for bad in [
            "",
            "{",
            r#"{"type":"nope"}"#,
            r#"{"type":"record","name":"R"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}"#,
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad}");
        }
        assert!(parse(r#""string""#, &[]).is_ok());
    }

    #[test]
    fn test_parse_resolves_references() {
        let dep = Dependency {
            name: "com.x.Inner".into(),
            schema: r#"{"type":"record","name":"Inner","namespace":"com.x","fields":[{"name":"v","type":"int"}]}"#.into(),
        };
        let outer =
            r#"{"type":"record","name":"Outer","fields":[{"name":"i","type":"com.x.Inner"}]}"#;
        assert!(parse(outer, &[]).is_err());
        let (s, _) = parse(outer, &[dep]).unwrap();
        can_read(&s, &s).unwrap();
    }

    #[test]
    fn test_can_read_promotes_int_to_long_only_one_way() {
        let (i, _) = parse(r#""int""#, &[]).unwrap();
        let (l, _) = parse(r#""long""#, &[]).unwrap();
        assert!(can_read(&i, &l).is_ok());
        assert!(can_read(&l, &i).is_err());
    }
}
