//! Protobuf schemas through `protox`: the schema is one `.proto` file, its references are the
//! files it imports (by the reference's `name`); `google/protobuf/*.proto` are built in.
//!
//! The identity of a schema is its compiled `FileDescriptorProto` (so comments, whitespace and
//! declaration layout do not make a new schema).
//!
//! Compatibility compares the main file's messages, as Confluent's protobuf rules do for the
//! wire format (the rules are symmetric, so backward and forward agree):
//! - the package must not change;
//! - every message of the writer must still exist (by full name);
//! - a field number present on both sides must keep a wire-compatible kind (`int32`, `uint32`,
//!   `int64`, `uint64`, `bool` and enums are interchangeable varints; `sint32`/`sint64`;
//!   `fixed32`/`sfixed32`; `fixed64`/`sfixed64`; `string`/`bytes`; a message field keeps its
//!   message type) and its cardinality (repeated or not);
//! - adding or removing fields is compatible (unknown fields are skipped).

use std::collections::HashMap;

use prost_reflect::{Cardinality, DescriptorPool, FileDescriptor, Kind, MessageDescriptor};
use protox::Compiler;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::Dependency;

/// The name the schema's own file gets while compiling.
const MAIN: &str = "__kelp_registry_schema__.proto";

/// A compiled protobuf schema.
#[derive(Debug, Clone)]
pub struct Proto {
    pool: DescriptorPool,
    /// Equal for the same compiled file.
    pub identity: String,
}

struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(src) => File::from_source(name, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `text` with `deps` as importable files.
pub fn parse(text: &str, deps: &[Dependency]) -> Result<Proto, String> {
    let mut files: HashMap<String, String> = deps
        .iter()
        .map(|d| (d.name.clone(), d.schema.clone()))
        .collect();
    files.insert(MAIN.to_owned(), text.to_owned());
    let mut chain = ChainFileResolver::new();
    chain.add(Sources(files));
    chain.add(GoogleFileResolver::new());
    let mut compiler = Compiler::with_file_resolver(chain);
    compiler.include_imports(false);
    compiler
        .open_file(MAIN)
        .map_err(|e| format!("invalid protobuf schema: {e}"))?;
    let pool = compiler.descriptor_pool();
    let file = pool
        .get_file_by_name(MAIN)
        .ok_or_else(|| "invalid protobuf schema: the file did not compile".to_owned())?;
    let mut fd = file.file_descriptor_proto().clone();
    fd.source_code_info = None;
    let identity = format!("{fd:?}");
    Ok(Proto { pool, identity })
}

fn main_file(p: &Proto) -> Option<FileDescriptor> {
    p.pool.get_file_by_name(MAIN)
}

fn all_messages(file: &FileDescriptor) -> Vec<MessageDescriptor> {
    let mut out = Vec::new();
    let mut stack: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(m) = stack.pop() {
        stack.extend(m.child_messages());
        out.push(m);
    }
    out
}

/// The wire-compatibility class of a field kind.
fn class(kind: &Kind) -> String {
    match kind {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            "varint".to_owned()
        }
        Kind::Sint32 | Kind::Sint64 => "zigzag".to_owned(),
        Kind::Fixed32 | Kind::Sfixed32 => "fixed32".to_owned(),
        Kind::Fixed64 | Kind::Sfixed64 => "fixed64".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Double => "double".to_owned(),
        Kind::String | Kind::Bytes => "bytes".to_owned(),
        Kind::Message(m) => format!("message {}", m.full_name()),
    }
}

/// Why data written with `writer` may not be read with `reader` (empty when it can).
pub fn can_read(writer: &Proto, reader: &Proto) -> Vec<String> {
    let (Some(w), Some(r)) = (main_file(writer), main_file(reader)) else {
        return vec!["a schema did not compile".to_owned()];
    };
    let mut out = Vec::new();
    if w.package_name() != r.package_name() {
        out.push(format!(
            "package changed from {:?} to {:?}",
            w.package_name(),
            r.package_name()
        ));
    }
    for wm in all_messages(&w) {
        let Some(rm) = reader.pool.get_message_by_name(wm.full_name()) else {
            out.push(format!("message {} was removed", wm.full_name()));
            continue;
        };
        for wf in wm.fields() {
            let Some(rf) = rm.get_field(wf.number()) else {
                continue;
            };
            let at = format!("{}.{} (field {})", wm.full_name(), wf.name(), wf.number());
            let (wc, rc) = (class(&wf.kind()), class(&rf.kind()));
            if wc != rc {
                out.push(format!("{at}: type changed from {wc} to {rc}"));
            }
            let repeated = |c: Cardinality| c == Cardinality::Repeated;
            if repeated(wf.cardinality()) != repeated(rf.cardinality()) {
                out.push(format!("{at}: changed between repeated and singular"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_and_identity() {
        let a = parse("syntax = \"proto3\";\nmessage M { int32 a = 1; }\n", &[]).unwrap();
        let b = parse(
            "syntax = \"proto3\"; // c\nmessage M {\n  int32 a = 1;\n}",
            &[],
        )
        .unwrap();
        assert_eq!(a.identity, b.identity);
        assert!(parse("syntax = \"proto3\"; message {", &[]).is_err());
        assert!(
            parse(
                "syntax = \"proto3\"; import \"x.proto\"; message M { X x = 1; }",
                &[]
            )
            .is_err()
        );
        assert!(parse("syntax = \"proto3\"; import \"google/protobuf/timestamp.proto\"; message M { google.protobuf.Timestamp t = 1; }", &[]).is_ok());
    }

    #[test]
    fn test_parse_with_reference_and_compat() {
        let dep = Dependency {
            name: "x.proto".into(),
            schema: "syntax = \"proto3\"; package x; message X { string s = 1; }".into(),
        };
        let v1 = parse(
            "syntax = \"proto3\"; import \"x.proto\"; message M { x.X x = 1; int32 n = 2; }",
            std::slice::from_ref(&dep),
        )
        .unwrap();
        let v2 = parse(
            "syntax = \"proto3\"; import \"x.proto\"; message M { x.X x = 1; int64 n = 2; string s = 3; }",
            std::slice::from_ref(&dep),
        )
        .unwrap();
        assert!(can_read(&v1, &v2).is_empty());
        let bad = parse("syntax = \"proto3\"; message M { string n = 2; }", &[]).unwrap();
        assert!(!can_read(&v1, &bad).is_empty());
        let gone = parse("syntax = \"proto3\"; message N { int32 n = 2; }", &[]).unwrap();
        assert!(!can_read(&v1, &gone).is_empty());
    }
}
