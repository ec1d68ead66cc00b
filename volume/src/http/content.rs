//! The headers that describe a blob read — `Content-Type`, `Content-Disposition`,
//! `Last-Modified` — as SeaweedFS's volume server answers them.
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
//! - `Last-Modified`: the needle's last-modified time as an HTTP date; a GET with an
//!   `If-Modified-Since` at or after it (and no `If-None-Match`) is answered 304.

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

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `(year, month 1..=12, day)` of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the epoch as an HTTP date (`Tue, 01 Dec 2026 07:23:25 GMT`), as Go's
/// `http.TimeFormat`; `None` past year 9999.
pub fn http_date(secs: u64) -> Option<String> {
    let secs = i64::try_from(secs).ok()?;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    Some(format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    ))
}

/// An HTTP date in Go's `http.TimeFormat` (the only form SeaweedFS parses) → seconds since
/// the epoch; `None` if malformed.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let p: Vec<&str> = s.split(' ').collect();
    let [_, day, month, year, time, "GMT"] = p.as_slice() else {
        return None;
    };
    let num = |t: &str, len: usize| {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<i64>().ok())
            .flatten()
    };
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let (day, year) = (num(day, 2)?, num(year, 4)?);
    let hms: Vec<i64> = time.split(':').map(|t| num(t, 2)).collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day as u32) * 86_400 + h * 3600 + m * 60 + sec)
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
    fn test_http_dates_as_go() {
        assert_eq!(
            http_date(0).as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        // The Last-Modified SeaweedFS 4.48 answered for an upload at 1796109805.
        assert_eq!(
            http_date(1_796_109_805).as_deref(),
            Some("Tue, 01 Dec 2026 07:23:25 GMT")
        );
        assert_eq!(
            http_date(951_782_400).as_deref(),
            Some("Tue, 29 Feb 2000 00:00:00 GMT")
        );
        assert_eq!(http_date(u64::MAX), None);
        for t in [0, 951_782_400, 1_796_109_805, 253_402_300_799] {
            assert_eq!(
                parse_http_date(&http_date(t).unwrap()),
                Some(t as i64),
                "{t}"
            );
        }
        for bad in [
            "",
            "Tue, 01 Dec 2026 07:23:25",
            "Tue, 1 Dec 2026 07:23:25 GMT",
            "Tue, 01 Foo 2026 07:23:25 GMT",
            "Tue, 01 Dec 2026 7:23:25 GMT",
            "Tue, 01 Dec 2026 07:23 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
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
