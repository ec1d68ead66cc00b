//! The `Content-Type` and `Content-Disposition` of a blob read, as SeaweedFS's volume server
//! answers them.
//!
//! - `Content-Type`: the MIME type stored with the needle; else the type of the file name's
//!   extension (Go's `mime.TypeByExtension`: its built-in table and the common entries of
//!   `/etc/mime.types`, `text/*` with `; charset=utf-8`); else the type sniffed from the first
//!   bytes (a subset of Go's `http.DetectContentType`: the common magic numbers, then text or
//!   binary). Clients that upload without a part `Content-Type` — pyseaweed, `requests`'
//!   `files=` — otherwise got every file back as `application/octet-stream`.
//! - `Content-Disposition`: `inline` (`attachment` with `?dl=true`) and the stored file name,
//!   formatted as Go's `mime.FormatMediaType` does: a bare token, a quoted string, or RFC 2231
//!   `filename*=utf-8''…` when the name is not ASCII.

/// The extension table (lower case, with the dot).
const BY_EXTENSION: &[(&str, &str)] = &[
    (".avif", "image/avif"),
    (".bin", "application/octet-stream"),
    (".bmp", "image/bmp"),
    (".css", "text/css; charset=utf-8"),
    (".csv", "text/csv; charset=utf-8"),
    (".gif", "image/gif"),
    (".gz", "application/gzip"),
    (".htm", "text/html; charset=utf-8"),
    (".html", "text/html; charset=utf-8"),
    (".ico", "image/vnd.microsoft.icon"),
    (".jpeg", "image/jpeg"),
    (".jpg", "image/jpeg"),
    (".js", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".md", "text/markdown; charset=utf-8"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".mp3", "audio/mpeg"),
    (".mp4", "video/mp4"),
    (".pdf", "application/pdf"),
    (".png", "image/png"),
    (".svg", "image/svg+xml"),
    (".tar", "application/x-tar"),
    (".tif", "image/tiff"),
    (".tiff", "image/tiff"),
    (".txt", "text/plain; charset=utf-8"),
    (".wasm", "application/wasm"),
    (".webm", "video/webm"),
    (".webp", "image/webp"),
    (".woff", "font/woff"),
    (".woff2", "font/woff2"),
    (".xml", "text/xml; charset=utf-8"),
    (".zip", "application/zip"),
];

/// The MIME type of `name`'s extension, if known.
pub fn by_extension(name: &str) -> Option<&'static str> {
    let dot = name.rfind('.')?;
    let ext = name[dot..].to_ascii_lowercase();
    BY_EXTENSION
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, t)| *t)
}

/// The MIME type sniffed from `data`'s first bytes (a subset of Go's `DetectContentType`).
pub fn sniff(data: &[u8]) -> &'static str {
    let head = &data[..data.len().min(512)];
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x00asm", "application/wasm"),
    ];
    if let Some((_, t)) = MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return t;
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    let trimmed = head.trim_ascii_start();
    let lower: Vec<u8> = trimmed
        .iter()
        .take(14)
        .map(u8::to_ascii_lowercase)
        .collect();
    if [&b"<!doctype html"[..], b"<html", b"<head", b"<body"]
        .iter()
        .any(|tag| lower.starts_with(tag))
    {
        return "text/html; charset=utf-8";
    }
    // Go's "binary data" bytes: control characters other than tab, newlines, form feed and
    // escape.
    let binary = head
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f));
    if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// The `Content-Type` of a blob: its stored type, else its name's, else sniffed from `data`.
pub fn content_type(mime: Option<&str>, name: Option<&str>, data: &[u8]) -> String {
    if let Some(m) = mime.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    name.and_then(by_extension)
        .unwrap_or_else(|| sniff(data))
        .to_owned()
}

/// Whether the first `dl=` in `query` is true as Go's `strconv.ParseBool` reads it.
pub fn wants_download(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("dl="))
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

fn is_tspecial(b: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b > b' ' && b < 0x7f && !is_tspecial(b))
}

/// `inline; filename=…` (or `attachment`) for `name`, as Go's `mime.FormatMediaType`.
pub fn content_disposition(name: &str, download: bool) -> String {
    let kind = if download { "attachment" } else { "inline" };
    let needs_encoding = name
        .bytes()
        .any(|b| !(b' '..=b'~').contains(&b) && b != b'\t');
    if needs_encoding {
        let mut out = format!("{kind}; filename*=utf-8''");
        for b in name.bytes() {
            if b <= b' ' || b >= 0x7f || b == b'*' || b == b'\'' || b == b'%' || is_tspecial(b) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(char::from(b));
            }
        }
        out
    } else if is_token(name) {
        format!("{kind}; filename={name}")
    } else {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{kind}; filename=\"{quoted}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_content_type_is_stored_then_extension_then_sniffed() {
        assert_eq!(
            content_type(Some("image/png"), Some("a.txt"), b""),
            "image/png"
        );
        assert_eq!(
            content_type(None, Some("hello.TXT"), b"\x00"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            content_type(None, Some("page.html"), b"x"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(None, Some("all.bin"), b"text"),
            "application/octet-stream"
        );
        // No extension (or an unknown one): sniffed, as SeaweedFS (Go's DetectContentType).
        assert_eq!(
            content_type(None, Some("noext"), b"zz"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            content_type(None, None, b"\x00\x01"),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(None, None, b"\x89PNG\r\n\x1a\n...."),
            "image/png"
        );
        assert_eq!(
            content_type(None, Some("x.unknownext"), b"  <!DOCTYPE HTML><p>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(None, None, b""), "text/plain; charset=utf-8");
    }

    #[test]
    fn test_content_disposition_formats_names_as_go() {
        // The values SeaweedFS 4.48 answered for pyseaweed's uploads.
        assert_eq!(
            content_disposition("hello.txt", false),
            "inline; filename=hello.txt"
        );
        assert_eq!(
            content_disposition("name with spaces \u{e9}\u{e8} \u{65e5}\u{672c}.txt", false),
            "inline; filename*=utf-8''name%20with%20spaces%20%C3%A9%C3%A8%20%E6%97%A5%E6%9C%AC.txt"
        );
        assert_eq!(
            content_disposition("a b\"c.txt", true),
            "attachment; filename=\"a b\\\"c.txt\""
        );
    }

    #[test]
    fn test_dl_parses_as_go_bool() {
        assert!(wants_download(Some("dl=true")));
        assert!(wants_download(Some("x=1&dl=1")));
        assert!(!wants_download(Some("dl=yes")));
        assert!(!wants_download(Some("dl=false")));
        assert!(!wants_download(None));
    }
}
