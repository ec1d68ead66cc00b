//! The "file" part of a `multipart/form-data` upload, found one way for every service.
//!
//! SeaweedFS clients name the part `file` (some `File`), curl's `-F` names it as told; the rule:
//! the first part whose name is `file` in any case, else the first part that carries a file name.
//! Parts before it are skipped. No such part is a 400 `bad_multipart`; a body over the limit is a
//! 413.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;

use super::ApiError;

/// Finds the upload's file part and hands it to `read` (which streams or collects it); a body
/// without one is a 400 `bad_multipart`, a broken body a 400/413.
pub async fn file_field<T>(
    mp: &mut Multipart,
    read: impl AsyncFnOnce(Field<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        if is_file_part(&field) {
            return read(field).await;
        }
    }
    Err(ApiError::bad_request(
        "bad_multipart",
        "multipart body has no `file` part",
    ))
}

/// Whether `field` is the upload's file: named `file` in any case, or carrying a file name.
fn is_file_part(field: &Field<'_>) -> bool {
    field.name().is_some_and(|n| n.eq_ignore_ascii_case("file")) || field.file_name().is_some()
}

/// Maps a multipart parse error: 413 when over the body limit, else 400 `bad_multipart`.
pub fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            message: e.body_text(),
        }
    } else {
        ApiError::bad_request("bad_multipart", e.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::FromRequest;
    use axum::http::Request;

    async fn first_file(body: &'static str) -> Result<(Option<String>, Vec<u8>), ApiError> {
        let req = Request::builder()
            .header("content-type", "multipart/form-data; boundary=XX")
            .body(Body::from(body))
            .unwrap();
        let mut mp = Multipart::from_request(req, &()).await.unwrap();
        file_field(&mut mp, async |field| {
            let name = field.file_name().map(str::to_owned);
            let data = field.bytes().await.map_err(multipart_error)?;
            Ok((name, data.to_vec()))
        })
        .await
    }

    #[tokio::test]
    async fn test_file_field_by_name_in_any_case_or_by_file_name() {
        let named = "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nskip\r\n--XX\r\nContent-Disposition: form-data; name=\"File\"\r\n\r\ndata\r\n--XX--\r\n";
        assert_eq!(first_file(named).await.unwrap(), (None, b"data".to_vec()));
        let by_file_name = "--XX\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\n\r\nabc\r\n--XX--\r\n";
        assert_eq!(
            first_file(by_file_name).await.unwrap(),
            (Some("a.txt".into()), b"abc".to_vec())
        );
    }

    #[tokio::test]
    async fn test_file_field_missing_is_a_400() {
        let none = "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--XX--\r\n";
        let err = first_file(none).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), "bad_multipart");
    }
}
