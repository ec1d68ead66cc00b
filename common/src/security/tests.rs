//! Tests of the credential checks: fid tokens (expired, forged, for another fid), the cluster
//! token and API key scopes, through the same functions the routers call.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::*;

fn fid(s: &str) -> FileId {
    s.parse().unwrap()
}

fn with_bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("BEARER {token}")).unwrap(),
    );
    h
}

fn security() -> Security {
    Security {
        write_key: Some(FidKey::new(b"0123456789abcdef-write").unwrap()),
        read_key: None,
        token_ttl: Duration::from_secs(10),
        cluster_token: Some(Secret::new("cluster-token-0123456789")),
        api_keys: Some(
            ApiKeys::parse("# keys\nread reader-key-0123456789\nwrite writer-key-0123456789\n")
                .unwrap(),
        ),
        tls: None,
        ..Security::default()
    }
}

#[test]
fn test_fid_token_allows_exactly_its_fid() {
    let sec = security();
    let f = fid("3,01637037d6");
    let token = sec.write_token(&f).unwrap();
    sec.check_write_token(&with_bearer(&token), &f).unwrap();
    // The same fid written another way (leading zeros) is the same fid.
    sec.check_write_token(&with_bearer(&token), &fid("3,0001637037d6"))
        .unwrap();
    let other = sec
        .check_write_token(&with_bearer(&token), &fid("3,01637037d7"))
        .unwrap_err();
    assert_eq!(
        (other.status(), other.code()),
        (StatusCode::FORBIDDEN, "token_for_another_fid")
    );
    // Another cookie of the same key is another fid.
    let other = sec
        .check_write_token(&with_bearer(&token), &fid("3,0163703700"))
        .unwrap_err();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
}

#[test]
fn test_fid_token_missing_forged_or_expired_is_401() {
    let sec = security();
    let f = fid("7,0a00000001");
    let none = sec.check_write_token(&HeaderMap::new(), &f).unwrap_err();
    assert_eq!(
        (none.status(), none.code()),
        (StatusCode::UNAUTHORIZED, "token_required")
    );
    let forged = FidKey::new(b"another-key-entirely-000")
        .unwrap()
        .sign(&f, Duration::from_secs(10));
    let e = sec
        .check_write_token(&with_bearer(&forged), &f)
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (StatusCode::UNAUTHORIZED, "bad_token")
    );
    let e = sec
        .check_write_token(&with_bearer("not.a.jwt"), &f)
        .unwrap_err();
    assert_eq!(e.code(), "bad_token");
    // Expired: exp in the past, signed with the right key.
    let claims = FidClaims {
        fid: f.to_string(),
        exp: crate::time::now_ms() / 1000 - 5,
    };
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"0123456789abcdef-write").unwrap(),
    )
    .unwrap();
    let e = sec
        .check_write_token(&with_bearer(&expired), &f)
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );
    // alg=none is refused.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(
        sec.check_write_token(&with_bearer(&unsigned), &f)
            .unwrap_err()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn test_without_keys_everything_is_open() {
    let sec = Security::default();
    let f = fid("1,0100000001");
    sec.check_write_token(&HeaderMap::new(), &f).unwrap();
    sec.check_read_token(&HeaderMap::new(), &f).unwrap();
    sec.check_cluster(&HeaderMap::new()).unwrap();
    sec.check_client(&HeaderMap::new(), Scope::Write).unwrap();
    assert!(sec.write_token(&f).is_none());
}

#[test]
fn test_cluster_token_is_required_and_compared() {
    let sec = security();
    let e = sec.check_cluster(&HeaderMap::new()).unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (StatusCode::UNAUTHORIZED, "cluster_token_required")
    );
    let mut h = HeaderMap::new();
    h.insert(
        &CLUSTER_TOKEN_HEADER,
        HeaderValue::from_static("cluster-token-0123456780"),
    );
    assert_eq!(
        sec.check_cluster(&h).unwrap_err().code(),
        "bad_cluster_token"
    );
    h.insert(
        &CLUSTER_TOKEN_HEADER,
        HeaderValue::from_static("cluster-token-0123456789"),
    );
    sec.check_cluster(&h).unwrap();
    // The cluster token also passes client routes, with every scope.
    sec.check_client(&h, Scope::Write).unwrap();
}

#[test]
fn test_api_key_scopes() {
    let sec = security();
    let e = sec
        .check_client(&HeaderMap::new(), Scope::Read)
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (StatusCode::UNAUTHORIZED, "api_key_required")
    );
    let reader = with_bearer("reader-key-0123456789");
    sec.check_client(&reader, Scope::Read).unwrap();
    let e = sec.check_client(&reader, Scope::Write).unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (StatusCode::FORBIDDEN, "read_only_api_key")
    );
    let writer = with_bearer("writer-key-0123456789");
    sec.check_client(&writer, Scope::Write).unwrap();
    sec.check_client(&writer, Scope::Read).unwrap();
    let e = sec
        .check_client(&with_bearer("writer-key-012345678"), Scope::Read)
        .unwrap_err();
    assert_eq!(e.code(), "bad_api_key");
    assert_eq!(Scope::for_method(&Method::HEAD), Scope::Read);
    assert_eq!(Scope::for_method(&Method::DELETE), Scope::Write);
}

#[test]
fn test_api_key_file_errors_name_the_line() {
    assert!(
        ApiKeys::parse("admin abcdefghijklmnop")
            .unwrap_err()
            .contains("line 1")
    );
    assert!(ApiKeys::parse("read short").unwrap_err().contains("16"));
    assert!(ApiKeys::parse("# nothing\n").is_err());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token");
    std::fs::write(&p, "tooshort\n").unwrap();
    assert!(Secret::from_file(&p).is_err());
    std::fs::write(&p, "  0123456789abcdefXYZ \n").unwrap();
    assert!(
        Secret::from_file(&p)
            .unwrap()
            .matches(b"0123456789abcdefXYZ")
    );
    let flags = SecurityFlags {
        cluster_token_file: Some(dir.path().join("missing")),
        ..SecurityFlags::default()
    };
    assert!(format!("{:#}", flags.load().unwrap_err()).contains("missing"));
}

#[test]
fn test_bearer_accepts_any_scheme_case() {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("bearer abc"),
    );
    assert_eq!(bearer(&h), Some("abc"));
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
    assert_eq!(bearer(&h), None);
    // user:writer-key-0123456789 as Basic auth is the API key.
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjp3cml0ZXIta2V5LTAxMjM0NTY3ODk="),
    );
    assert_eq!(api_key(&h).as_deref(), Some("writer-key-0123456789"));
    security().check_client(&h, Scope::Write).unwrap();
}

#[test]
fn test_generated_secrets_load_and_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let s = dev::generate(dir.path(), false).unwrap();
    let flags = SecurityFlags {
        jwt_signing_key_file: Some(s.jwt_signing_key.clone()),
        jwt_read_key_file: Some(s.jwt_read_key.clone()),
        cluster_token_file: Some(s.cluster_token.clone()),
        api_keys_file: Some(s.api_keys.clone()),
        ..SecurityFlags::default()
    };
    let sec = flags.load().unwrap();
    let write_key = std::fs::read_to_string(&s.write_api_key).unwrap();
    let read_key = std::fs::read_to_string(&s.read_api_key).unwrap();
    sec.check_client(&with_bearer(&write_key), Scope::Write)
        .unwrap();
    assert_eq!(
        sec.check_client(&with_bearer(&read_key), Scope::Write)
            .unwrap_err()
            .status(),
        StatusCode::FORBIDDEN
    );
    let f = fid("1,0100000002");
    sec.check_write_token(&with_bearer(&sec.write_token(&f).unwrap()), &f)
        .unwrap();
    // A read token is not a write token.
    assert!(
        sec.check_write_token(&with_bearer(&sec.read_token(&f).unwrap()), &f)
            .is_err()
    );
    // Existing files are kept unless forced.
    assert!(dev::generate(dir.path(), false).is_err());
    dev::generate(dir.path(), true).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.cluster_token)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn test_serve_bounds_come_from_the_flags_and_default_when_unset() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sec: SecurityFlags,
    }
    let drain = Duration::from_secs(3);
    let cli = Cli::try_parse_from([
        "t",
        "--max-in-flight",
        "8",
        "--header-read-timeout-ms",
        "500",
    ])
    .unwrap();
    let opts = cli.sec.load().unwrap().serve_options(drain).unwrap();
    assert_eq!(
        (opts.max_in_flight, opts.header_read_timeout, opts.drain),
        (8, Duration::from_millis(500), drain)
    );
    assert!(Cli::try_parse_from(["t", "--max-in-flight", "0"]).is_err());
    assert!(Cli::try_parse_from(["t", "--header-read-timeout-ms", "5"]).is_err());
    // `Security::default()` (tests, in-process servers) serves with the defaults.
    let opts = Security::default().serve_options(drain).unwrap();
    let defaults = crate::http::ServeOptions::default();
    assert_eq!(
        (opts.max_in_flight, opts.header_read_timeout),
        (defaults.max_in_flight, defaults.header_read_timeout)
    );
}
