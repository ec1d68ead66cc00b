//! Path rules of the namespace.
//!
//! A path is absolute (`/` separated, starting with `/`), has no trailing slash (except the root
//! `/` itself), no empty, `.` or `..` segment, no NUL byte, no segment over [`MAX_NAME`] bytes
//! and is at most [`MAX_PATH`] bytes long. The root always exists and is a directory.

/// Longest name of one path segment, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;

/// The root directory.
pub const ROOT: &str = "/";

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// The path is longer than [`MAX_PATH`].
    #[error("path of {0} bytes is longer than {MAX_PATH} bytes")]
    TooLong(usize),
    /// A segment is empty (`//` or a trailing slash).
    #[error("path {0:?} has an empty segment")]
    EmptySegment(String),
    /// A segment is `.` or `..`.
    #[error("path {0:?} has a relative segment")]
    DotSegment(String),
    /// The path contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// A segment is longer than [`MAX_NAME`].
    #[error("path {path:?} has a name of {len} bytes, longer than {MAX_NAME}")]
    NameTooLong {
        /// The path.
        path: String,
        /// The segment's length.
        len: usize,
    },
}

/// Checks `path` against the rules above.
pub fn validate(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute(truncate(path)));
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(truncate(path)));
    }
    if path == ROOT {
        return Ok(());
    }
    for segment in path[1..].split('/') {
        validate_name_in(path, segment)?;
    }
    Ok(())
}

/// Checks one name (a path segment) in the context of `path`, for error messages.
fn validate_name_in(path: &str, name: &str) -> Result<(), PathError> {
    match name {
        "" => Err(PathError::EmptySegment(truncate(path))),
        "." | ".." => Err(PathError::DotSegment(truncate(path))),
        n if n.len() > MAX_NAME => Err(PathError::NameTooLong {
            path: truncate(path),
            len: n.len(),
        }),
        n if n.contains('\0') => Err(PathError::Nul(truncate(path))),
        _ => Ok(()),
    }
}

/// Keeps error messages short when a path is huge.
fn truncate(path: &str) -> String {
    if path.len() <= 200 {
        return path.to_owned();
    }
    let mut end = 200;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// Splits a valid, non-root path into its parent directory and its name.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => (ROOT, &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (ROOT, path),
    }
}

/// The name (last segment) of a path; `""` for the root.
pub fn name(path: &str) -> &str {
    if path == ROOT { "" } else { split(path).1 }
}

/// Joins a directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == ROOT {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The strict ancestors of a valid path, root excluded, outermost first:
/// `/a/b/c` → `["/a", "/a/b"]`.
pub fn ancestors(path: &str) -> Vec<&str> {
    if path == ROOT {
        return Vec::new();
    }
    path.match_indices('/')
        .skip(1)
        .map(|(i, _)| &path[..i])
        .collect()
}

/// Whether `path` is `dir` or lies under it.
pub fn is_within(path: &str, dir: &str) -> bool {
    if dir == ROOT {
        return true;
    }
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Rewrites `path`, which lies within `from`, to lie within `to` instead.
pub fn rebase(path: &str, from: &str, to: &str) -> String {
    if path == from {
        return to.to_owned();
    }
    let rest = path.strip_prefix(from).unwrap_or(path);
    if to == ROOT {
        rest.to_owned()
    } else {
        format!("{to}{rest}")
    }
}

/// Percent-decodes the path of a request URI. Returns the decoded path without a trailing
/// slash and whether it had one (a request for a directory). Invalid escapes or UTF-8 are
/// rejected.
pub fn decode_uri_path(raw: &str) -> Result<(String, bool), String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("path {raw:?} has a bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let mut path = String::from_utf8(out).map_err(|_| format!("path {raw:?} is not UTF-8"))?;
    let trailing = path.len() > 1 && path.ends_with('/');
    if trailing {
        path.pop();
    }
    if path.is_empty() {
        path.push('/');
    }
    let is_dir = trailing || path == ROOT;
    Ok((path, is_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_validate_accepts_good_paths() {
        for p in [
            "/",
            "/a",
            "/a/b.txt",
            "/topics/ns/t/p0000/00000000000000000000.seg",
            "/ünï cødé",
        ] {
            validate(p).unwrap();
        }
        validate(&format!("/{}", "x".repeat(255))).unwrap();
    }

    #[test]
    fn test_validate_rejects_bad_paths() {
        let long_name = format!("/{}", "x".repeat(256));
        let long_path = "/abcdefgh".repeat(600);
        for p in [
            "", "a", "a/b", "//", "/a//b", "/a/", "/.", "/a/..", "/a/./b", "/a\0b", &long_name,
            &long_path,
        ] {
            assert!(validate(p).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn test_split_join_ancestors() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
        assert!(ancestors("/").is_empty());
        assert_eq!(name("/a/b"), "b");
        assert_eq!(name("/"), "");
    }

    #[test]
    fn test_is_within_respects_segment_boundaries() {
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a/b", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/a", "/a/b"));
        assert!(is_within("/x", "/"));
    }

    #[test]
    fn test_rebase_moves_subtree_paths() {
        assert_eq!(rebase("/a", "/a", "/b/c"), "/b/c");
        assert_eq!(rebase("/a/x/y", "/a", "/b"), "/b/x/y");
    }

    #[test]
    fn test_decode_uri_path() {
        assert_eq!(
            decode_uri_path("/a%20b").unwrap(),
            ("/a b".to_owned(), false)
        );
        assert_eq!(decode_uri_path("/dir/").unwrap(), ("/dir".to_owned(), true));
        assert_eq!(decode_uri_path("/").unwrap(), ("/".to_owned(), true));
        assert_eq!(decode_uri_path("/%C3%BC").unwrap().0, "/ü");
        assert!(decode_uri_path("/%zz").is_err());
        assert!(decode_uri_path("/%").is_err());
        assert!(decode_uri_path("/%ff").is_err());
        assert_eq!(decode_uri_path("/a%00b").unwrap().0, "/a\0b");
    }

    proptest! {
        #[test]
        fn test_path_functions_never_panic(s in "\\PC{0,64}", raw in "[/%a-f0-9.]{0,32}") {
            let _ = validate(&s);
            let _ = decode_uri_path(&raw);
            if validate(&s).is_ok() && s != "/" {
                let (dir, name) = split(&s);
                prop_assert_eq!(join(dir, name), s.clone());
                for a in ancestors(&s) {
                    prop_assert!(is_within(&s, a));
                }
            }
        }
    }
}
