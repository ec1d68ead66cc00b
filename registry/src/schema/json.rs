//! JSON Schema: parsing, identity and a structural compatibility check.
//!
//! A schema is a JSON object or boolean; `type`, `properties`, `required`, `items` and `enum`
//! must have the shapes the JSON Schema spec gives them. Its identity is its compact rendering
//! with object keys sorted, so whitespace and key order do not make a new schema.
//!
//! Compatibility asks whether every document valid under the writer's schema is valid under the
//! reader's, judged on structure (like Confluent's JSON Schema checks, on a smaller set of
//! keywords):
//! - `true`/`{}` accepts everything; a reader of `false` accepts nothing;
//! - the reader's `type`s must cover the writer's (`number` covers `integer`);
//! - `enum`/`const`: the reader's values must include every value the writer allows;
//! - objects: a property the reader requires must be required by the writer; a property both
//!   declare is checked recursively; a property only the writer declares needs a reader open to
//!   extra properties (`additionalProperties` not `false`); a property only the reader declares
//!   needs a writer closed to extra properties (`additionalProperties: false`), or it may meet
//!   a value of any type written under that name;
//! - arrays: `items` are checked recursively.
//! - `$ref`s (references to other subjects) are compared by their text.
//!
//! Keywords outside this list (numeric bounds, patterns, combinators) are not compared.

use std::collections::BTreeSet;

use serde_json::Value;

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// Parses `text`; returns the schema and its identity.
pub fn parse(text: &str) -> Result<(Value, String), String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("invalid json schema: {e}"))?;
    validate(&value, "#", 0)?;
    let identity = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    Ok((value, identity))
}

fn validate(v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err(format!(
            "invalid json schema: nesting deeper than 64 at {path}"
        ));
    }
    let obj = match v {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        _ => {
            return Err(format!(
                "invalid json schema: {path} is neither an object nor a boolean"
            ));
        }
    };
    if let Some(t) = obj.get("type") {
        let names: Vec<&Value> = match t {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for n in names {
            if !n.as_str().is_some_and(|s| TYPES.contains(&s)) {
                return Err(format!(
                    "invalid json schema: {path}/type: unknown type {n}"
                ));
            }
        }
    }
    if let Some(p) = obj.get("properties") {
        let props = p
            .as_object()
            .ok_or_else(|| format!("invalid json schema: {path}/properties is not an object"))?;
        for (name, s) in props {
            validate(s, &format!("{path}/properties/{name}"), depth + 1)?;
        }
    }
    if let Some(r) = obj.get("required")
        && !r.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(format!(
            "invalid json schema: {path}/required is not an array of strings"
        ));
    }
    if let Some(e) = obj.get("enum")
        && !e.is_array()
    {
        return Err(format!("invalid json schema: {path}/enum is not an array"));
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(s) = obj.get(key)
            && !s.is_array()
        {
            validate(s, &format!("{path}/{key}"), depth + 1)?;
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(key) {
            let list = list
                .as_array()
                .ok_or_else(|| format!("invalid json schema: {path}/{key} is not an array"))?;
            for (i, s) in list.iter().enumerate() {
                validate(s, &format!("{path}/{key}/{i}"), depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Why a document valid under `writer` may be invalid under `reader` (empty when it cannot).
pub fn can_read(writer: &Value, reader: &Value) -> Vec<String> {
    let mut reasons = Vec::new();
    check(writer, reader, "#", &mut reasons);
    reasons
}

fn types(s: &Value) -> Option<BTreeSet<&str>> {
    match s.get("type")? {
        Value::String(t) => Some([t.as_str()].into()),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn allowed_values(s: &Value) -> Option<Vec<&Value>> {
    if let Some(c) = s.get("const") {
        return Some(vec![c]);
    }
    s.get("enum")?.as_array().map(|a| a.iter().collect())
}

fn closed(s: &Value) -> bool {
    s.get("additionalProperties") == Some(&Value::Bool(false))
}

fn required(s: &Value) -> BTreeSet<&str> {
    s.get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn check(writer: &Value, reader: &Value, path: &str, out: &mut Vec<String>) {
    if reader == &Value::Bool(true) || writer == reader {
        return;
    }
    if writer == &Value::Bool(false) {
        return;
    }
    if reader == &Value::Bool(false) {
        out.push(format!("{path}: the reader accepts nothing"));
        return;
    }
    let empty = Value::Object(Default::default());
    let writer = if writer == &Value::Bool(true) {
        &empty
    } else {
        writer
    };
    if let (Some(w), Some(r)) = (writer.get("$ref"), reader.get("$ref")) {
        if w != r {
            out.push(format!("{path}: $ref changed from {w} to {r}"));
        }
        return;
    }
    if let Some(rt) = types(reader) {
        match types(writer) {
            None => out.push(format!(
                "{path}: the reader narrowed an untyped value to {rt:?}"
            )),
            Some(wt) => {
                for t in wt {
                    let covered = rt.contains(t) || (t == "integer" && rt.contains("number"));
                    if !covered {
                        out.push(format!("{path}: type {t} is no longer accepted"));
                    }
                }
            }
        }
    }
    if let Some(rv) = allowed_values(reader) {
        match allowed_values(writer) {
            None => out.push(format!(
                "{path}: the reader restricted the values to an enum"
            )),
            Some(wv) => {
                for v in wv {
                    if !rv.contains(&v) {
                        out.push(format!("{path}: value {v} is no longer accepted"));
                    }
                }
            }
        }
    }
    // Objects.
    let no_props = serde_json::Map::new();
    let wp = writer
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&no_props);
    let rp = reader
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&no_props);
    let wreq = required(writer);
    for name in required(reader) {
        if !wreq.contains(name) {
            out.push(format!("{path}: property {name} became required"));
        }
    }
    for (name, ws) in wp {
        let p = format!("{path}/properties/{name}");
        match rp.get(name) {
            Some(rs) => check(ws, rs, &p, out),
            None if closed(reader) => {
                out.push(format!("{p}: removed from a closed object"));
            }
            None => {
                if let Some(extra) = reader.get("additionalProperties") {
                    check(ws, extra, &p, out);
                }
            }
        }
    }
    for (name, rs) in rp {
        if wp.contains_key(name) || closed(writer) {
            continue;
        }
        let p = format!("{path}/properties/{name}");
        match writer.get("additionalProperties") {
            Some(extra) => check(extra, rs, &p, out),
            None if rs != &Value::Bool(true) && rs != &empty => {
                out.push(format!("{p}: added to an open object"));
            }
            None => {}
        }
    }
    if closed(reader) && !closed(writer) && writer.get("additionalProperties").is_none() {
        out.push(format!("{path}: the object was closed to extra properties"));
    }
    // Arrays.
    if let (Some(wi), Some(ri)) = (writer.get("items"), reader.get("items")) {
        check(wi, ri, &format!("{path}/items"), out);
    } else if let (None, Some(ri)) = (writer.get("items"), reader.get("items"))
        && ri != &Value::Bool(true)
        && types(writer).is_some_and(|t| t.contains("array"))
    {
        out.push(format!("{path}/items: the reader restricted the items"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        parse(s).unwrap().0
    }

    #[test]
    fn test_parse_validates_shapes() {
        for bad in [
            "1",
            "\"x\"",
            r#"{"type":"thing"}"#,
            r#"{"properties":[]}"#,
            r#"{"required":"a"}"#,
            "{",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(r#"{ "b": 1, "a": 2 }"#).unwrap().1,
            parse(r#"{"a":2,"b":1}"#).unwrap().1
        );
    }

    #[test]
    fn test_can_read_objects() {
        let w = v(r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#);
        // Adding an optional property to an open object: its name may hold anything already.
        let add_opt = v(
            r#"{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"string"}},"required":["a"]}"#,
        );
        assert!(!can_read(&w, &add_opt).is_empty());
        // Widening integer to number is fine; making a property required is not.
        let widen = v(r#"{"type":"object","properties":{"a":{"type":"number"}}}"#);
        assert!(can_read(&w, &widen).is_empty());
        let req = v(
            r#"{"type":"object","properties":{"a":{"type":"integer"},"c":{}},"required":["a","c"]}"#,
        );
        assert!(!can_read(&w, &req).is_empty());
        let narrowed = v(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#);
        assert!(!can_read(&w, &narrowed).is_empty());
        // A closed writer may gain optional properties in the reader.
        let closed_w = v(
            r#"{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}"#,
        );
        let more =
            v(r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}}}"#);
        assert!(can_read(&closed_w, &more).is_empty());
    }

    #[test]
    fn test_can_read_enums_and_items() {
        let w = v(r#"{"enum":["a","b"]}"#);
        assert!(can_read(&w, &v(r#"{"enum":["a","b","c"]}"#)).is_empty());
        assert!(!can_read(&w, &v(r#"{"enum":["a"]}"#)).is_empty());
        let wa = v(r#"{"type":"array","items":{"type":"integer"}}"#);
        assert!(can_read(&wa, &v(r#"{"type":"array","items":{"type":"number"}}"#)).is_empty());
        assert!(!can_read(&wa, &v(r#"{"type":"array","items":{"type":"string"}}"#)).is_empty());
        assert!(can_read(&v("true"), &v("{}")).is_empty());
        assert!(!can_read(&v("{}"), &v("false")).is_empty());
    }
}
