//! One parser of the HTTP `Range` header (RFC 9110 §14), for every service that serves bytes.
//!
//! Only a single `bytes=` range is honoured. A syntactically invalid or multi-range header is
//! ignored (the whole representation is served with 200, which RFC 9110 allows); a range that
//! starts at or after the end, or a zero-length suffix, is unsatisfiable (416). Numbers are plain
//! ASCII digits: `bytes=+5-` or `bytes=0x1-` are not ranges.

/// What a `Range` header asks of a representation of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: serve everything with 200.
    Full,
    /// Serve bytes `start..=end` (inclusive, `end < size`) with 206.
    Bytes {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// The range lies outside the representation: 416.
    Unsatisfiable,
}

impl RangeRequest {
    /// The `Content-Range` value of a satisfiable range (`bytes a-b/size`).
    pub fn content_range(start: u64, end: u64, size: u64) -> String {
        format!("bytes {start}-{end}/{size}")
    }
}

/// Resolves a `Range` header value against a representation of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let last = size.checked_sub(1);
    match (a.is_empty(), b.is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => match (number(b), last) {
            (None, _) => RangeRequest::Full,
            (Some(0), _) | (_, None) => RangeRequest::Unsatisfiable,
            (Some(n), Some(last)) => RangeRequest::Bytes {
                start: size.saturating_sub(n),
                end: last,
            },
        },
        // `bytes=a-`: from a to the end.
        (false, true) => match (number(a), last) {
            (None, _) => RangeRequest::Full,
            (Some(start), Some(last)) if start <= last => RangeRequest::Bytes { start, end: last },
            (Some(_), _) => RangeRequest::Unsatisfiable,
        },
        // `bytes=a-b`, b inclusive and clamped to the end.
        (false, false) => match (number(a), number(b), last) {
            (Some(start), Some(end), _) if start > end => RangeRequest::Full,
            (Some(start), Some(end), Some(last)) if start <= last => RangeRequest::Bytes {
                start,
                end: end.min(last),
            },
            (Some(_), Some(_), _) => RangeRequest::Unsatisfiable,
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Bytes, Full, Unsatisfiable};
    use super::*;

    #[test]
    fn test_parse_range_single_ranges() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            Bytes { start: 0, end: 3 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Bytes { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Bytes { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Bytes { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Bytes { start: 8, end: 9 }
        );
        assert_eq!(
            parse_range(Some(" bytes= 2 - 2 "), 10),
            Bytes { start: 2, end: 2 }
        );
    }

    #[test]
    fn test_parse_range_unsatisfiable() {
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
    }

    #[test]
    fn test_parse_range_ignores_what_is_not_one_range() {
        assert_eq!(parse_range(Some("bytes=3-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=+5-"), 10), Full);
        assert_eq!(parse_range(Some("bytes=-+5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=-"), 10), Full);
        assert_eq!(parse_range(Some("bytes=5"), 10), Full);
    }

    proptest::proptest! {
        /// A satisfiable answer always lies inside the representation.
        #[test]
        fn prop_parse_range_stays_inside(header in "bytes=[0-9]{0,3}-[0-9]{0,3}", size in 0u64..1000) {
            if let Bytes { start, end } = parse_range(Some(&header), size) {
                proptest::prop_assert!(start <= end && end < size);
            }
        }
    }
}
