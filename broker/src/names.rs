//! Names of namespaces, topics and groups: what is valid.
//!
//! Names become path components in the filer (`/broker/topics/<ns>/<topic>/...`), so the rule is
//! strict and shared by the HTTP API, the Kafka listener and the store. This module depends on
//! nothing else in the broker (the store uses it too); `service::check_name` turns a bad name
//! into the domain's error.

/// Whether `name` is a valid namespace, topic or group name: `[A-Za-z0-9._-]{1,128}`, and
/// neither `.` nor `..` (they would be path components).
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_valid_name_rules() {
        for ok in ["a", "A-b_c.d", "0", &"x".repeat(128)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(129), "a%2F"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
