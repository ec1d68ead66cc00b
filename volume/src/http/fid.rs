//! The file id in a blob URL, in every form SeaweedFS's volume server accepts.
//!
//! - `/{vid},{key}{cookie}` — Kelp's and SeaweedFS's canonical form;
//! - `/{vid},{key}{cookie}.ext` — an extension after the id is ignored;
//! - `/{vid}/{key}{cookie}` and `/{vid}/{key}{cookie}.ext`;
//! - `/{vid}/{key}{cookie}/{name.ext}` — a file name after the id is ignored.
//!
//! In each, `{key}{cookie}` may carry a batch-assign suffix `_N` (N decimal): as SeaweedFS's
//! `Needle.ParsePath` does, the hex before the last `_` is parsed as key and cookie and N is
//! added to the key (the cookie is shared), so `3,01637037d6_2` is key `0x01 + 2 = 0x03` with
//! cookie `0x637037d6`. One difference: SeaweedFS lets `key + N` wrap around u64; Kelp refuses
//! it (400), since a wrapped key names another blob.
//!
//! Every rejection is a JSON 400 `bad_fid`, including axum's own (a percent-escape that is not
//! UTF-8), which would otherwise be plain text.
//!
//! A fid token for a batch names the fid as assigned, without the suffix (SeaweedFS's
//! volume server strips `_N` before comparing the token's fid), so [`Fid`] keeps that base too.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use common::http::ApiError;
use common::ids::FileId;

/// The file id of a blob route, parsed (see the module docs), and, when the URL carries a
/// batch suffix `_N`, the file id before it (the one a batch's fid token names).
pub struct Fid(pub FileId, pub Option<FileId>);

impl Fid {
    /// The file ids a fid token may name to allow this request: the file id itself, or the
    /// batch's base.
    pub fn token_fids(&self) -> impl Iterator<Item = &FileId> {
        std::iter::once(&self.0).chain(self.1.as_ref())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Fid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("bad_fid", e.body_text()))?;
        let parsed = match (params.get("fid"), params.get("vid"), params.get("key")) {
            (Some(fid), _, _) => parse_comma_form(fid).map(|f| (f, batch_base_comma(fid))),
            (None, Some(vid), Some(key)) => {
                parse_slash_form(vid, key).map(|f| (f, batch_base_slash(vid, key)))
            }
            _ => Err("the route names no file id".to_owned()),
        };
        parsed
            .map(|(fid, base)| Self(fid, base.filter(|b| *b != fid)))
            .map_err(|message| ApiError::bad_request("bad_fid", message))
    }
}

/// `{vid},{key}{cookie}[_N][.ext]` (one path segment).
pub fn parse_comma_form(segment: &str) -> Result<FileId, String> {
    let (vid, rest) = segment
        .split_once(',')
        .ok_or_else(|| format!("file id {segment:?} has no comma between volume id and key"))?;
    parse_parts(segment, vid, strip_ext(rest))
}

/// `/{vid}/{key}{cookie}[_N][.ext]` (two path segments).
pub fn parse_slash_form(vid: &str, key: &str) -> Result<FileId, String> {
    let shown = format!("{vid}/{key}");
    parse_parts(&shown, vid, strip_ext(key))
}

/// The file id before a batch suffix of `{vid},{key}{cookie}_N[.ext]`, if there is one.
fn batch_base_comma(segment: &str) -> Option<FileId> {
    let (vid, rest) = segment.split_once(',')?;
    batch_base(vid, strip_ext(rest))
}

/// The file id before a batch suffix of `/{vid}/{key}{cookie}_N[.ext]`, if there is one.
fn batch_base_slash(vid: &str, key: &str) -> Option<FileId> {
    batch_base(vid, strip_ext(key))
}

fn batch_base(vid: &str, key_cookie: &str) -> Option<FileId> {
    let i = key_cookie.rfind('_').filter(|i| *i > 0)?;
    format!("{vid},{}", &key_cookie[..i]).parse().ok()
}

/// Drops an extension (`.jpg`) after the key and cookie, as SeaweedFS does.
fn strip_ext(s: &str) -> &str {
    match s.rfind('.') {
        Some(dot) if dot > 0 => &s[..dot],
        _ => s,
    }
}

fn parse_parts(shown: &str, vid: &str, key_cookie: &str) -> Result<FileId, String> {
    let (hex, delta) = match key_cookie.rfind('_') {
        Some(i) if i > 0 => (&key_cookie[..i], Some(&key_cookie[i + 1..])),
        _ => (key_cookie, None),
    };
    let fid: FileId = format!("{vid},{hex}")
        .parse()
        .map_err(|e: common::ids::FileIdError| format!("{e} (in {shown:?})"))?;
    let Some(delta) = delta else {
        return Ok(fid);
    };
    let n: u64 = delta
        .parse()
        .ok()
        .filter(|_| delta.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("file id {shown:?} has a bad batch suffix `_{delta}`"))?;
    let key = fid
        .key
        .checked_add(n)
        .ok_or_else(|| format!("file id {shown:?}: key plus batch suffix overflows"))?;
    Ok(FileId::new(fid.volume_id, key, fid.cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fid_forms_match_seaweedfs() {
        let base = FileId::new(3, 0x01, 0x637037d6);
        assert_eq!(parse_comma_form("3,01637037d6"), Ok(base));
        assert_eq!(parse_comma_form("3,01637037d6.jpg"), Ok(base));
        assert_eq!(parse_slash_form("3", "01637037d6"), Ok(base));
        assert_eq!(parse_slash_form("3", "01637037d6.jpg"), Ok(base));
        // Batch assign: `_N` adds N to the key, the cookie is shared.
        let plus2 = FileId::new(3, 0x03, 0x637037d6);
        assert_eq!(parse_comma_form("3,01637037d6_2"), Ok(plus2));
        assert_eq!(parse_comma_form("3,01637037d6_2.png"), Ok(plus2));
        assert_eq!(parse_slash_form("3", "01637037d6_2"), Ok(plus2));
        assert_eq!(parse_comma_form("3,01637037d6_0"), Ok(base));
        assert_eq!(
            parse_comma_form("7,ffffffffffffff00637037d6_255"),
            Ok(FileId::new(7, u64::MAX, 0x637037d6))
        );
    }

    #[test]
    fn test_fid_forms_reject_malformed() {
        for bad in [
            "3,01637037d6_",
            "3,01637037d6_x",
            "3,01637037d6_-1",
            "3,01637037d6_+1",
            "3,_01637037d6",
            "3,ffffffffffffffff637037d6_1",
            "3,637037d6_1",
            "3;01637037d6",
            "x,01637037d6",
        ] {
            assert!(parse_comma_form(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_slash_form("x", "01637037d6").is_err());
        assert!(parse_slash_form("3", "3,01637037d6").is_err());
    }

    #[test]
    fn test_fid_batch_base_is_the_assigned_fid() {
        let base = FileId::new(3, 0x01, 0x637037d6);
        assert_eq!(batch_base_comma("3,01637037d6_2.png"), Some(base));
        assert_eq!(batch_base_slash("3", "01637037d6_2"), Some(base));
        assert_eq!(batch_base_comma("3,01637037d6"), None);
        assert_eq!(batch_base_slash("3", "01637037d6.jpg"), None);
    }
}
