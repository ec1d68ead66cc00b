//! Framing and headers: every Kafka message is a 4-byte big-endian size followed by that many
//! bytes; a request starts with its header (api key, version, correlation id, client id), a
//! response with the correlation id. Bodies are encoded and decoded by `kafka-protocol`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame or request header could not be read; each closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size prefix exceeds the configured limit (or is negative).
    #[error("request of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: i64,
        /// Limit.
        max: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// A socket error.
    #[error("read request: {0}")]
    Io(#[from] std::io::Error),
    /// The request header does not decode.
    #[error("malformed request header: {0}")]
    BadHeader(String),
}

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut size[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let mut buf = vec![0u8; size as usize];
    r.read_exact(&mut buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(Bytes::from(buf)))
}

/// A request whose header is decoded and whose body is not yet.
#[derive(Debug, Clone)]
pub struct Request {
    /// The api key as sent (also for keys `kafka-protocol` does not know).
    pub api_key: i16,
    /// Its version.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// Client id, when the header carries one.
    pub client_id: Option<String>,
    /// The peer's address as Kafka tools show it (`/1.2.3.4`), empty when unknown.
    pub client_host: String,
    /// The connection authenticated with a read-only credential (see [`crate::sasl`]):
    /// writes are refused with the authorization error codes.
    pub read_only: bool,
    /// The body.
    pub body: Bytes,
}

impl Request {
    /// The api, if `kafka-protocol` knows it.
    pub fn key(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }
}

/// Splits a frame into header and body. The first 8 bytes (key, version, correlation id)
/// are read by hand so that requests of unknown apis or versions can still be answered.
pub fn parse_request(frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::BadHeader(format!(
            "{} bytes is shorter than a header",
            frame.len()
        )));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    // Header v1 (client id, no tagged fields) for apis unknown to the codec; for known ones
    // the header version the api's version calls for.
    let header_version = ApiKey::try_from(api_key)
        .map(|k| k.request_header_version(api_version))
        .unwrap_or(1);
    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, header_version)
        .or_else(|e| {
            // An ApiVersions of a future version may use a header this codec does not
            // expect; answer it anyway (it only needs the correlation id).
            if api_key == ApiKey::ApiVersions as i16 {
                let mut buf2 = frame.clone();
                let h = RequestHeader::decode(&mut buf2, 1);
                buf = buf2;
                h
            } else {
                Err(e)
            }
        })
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok(Request {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|s| s.as_str().to_owned()),
        client_host: String::new(),
        read_only: false,
        body: buf,
    })
}

/// Why a response could not be encoded (a bug: the handler built an invalid message for the
/// version).
#[derive(Debug, thiserror::Error)]
#[error("encode response: {0}")]
pub struct EncodeError(String);

/// Encodes a whole response frame: size, header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, EncodeError> {
    let header_version = R::header_version(version);
    encode_raw(correlation_id, header_version, |buf| {
        body.encode(buf, version)
            .map_err(|e| EncodeError(e.to_string()))
    })
}

/// Encodes a frame with a response header of `header_version` and a body written by `body`.
pub fn encode_raw(
    correlation_id: i32,
    header_version: i16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, header_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    body(&mut buf)?;
    let size = buf.len() - 4;
    let size = i32::try_from(size).map_err(|_| EncodeError("response too large".into()))?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a request body.
///
/// `kafka-protocol` reserves room for an array's elements as soon as it reads the count, so a
/// 48-byte body announcing two billion elements would abort the process on the failed
/// allocation. The body is therefore first decoded through [`Guarded`], which never lets a
/// count exceed the bytes left; only if that succeeds (so every count was possible) and a
/// guarded value was altered on the way is it decoded again as it is.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, String> {
    let mut guarded = Guarded {
        inner: req.body.clone(),
        altered: false,
    };
    let first = T::decode(&mut guarded, req.api_version).map_err(|e| e.to_string())?;
    if !guarded.altered {
        return Ok(first);
    }
    let mut body = req.body.clone();
    T::decode(&mut body, req.api_version).map_err(|e| e.to_string())
}

/// A body whose 32-bit integers are capped at the bytes left and whose unsigned varints may
/// not exceed them (see [`decode_body`]).
///
/// Every element of an array takes at least one byte, so a count larger than the bytes left
/// is impossible in a valid body: capping it makes that decode fail instead of reserving
/// gigabytes. Other `i32` fields (timeouts, byte limits) may legitimately be larger; capping
/// them changes no structure, and [`decode_body`] then decodes again for the real values.
/// Unsigned varints only carry lengths, counts and tags in Kafka's flexible versions, so one
/// larger than the bytes left is refused outright.
pub struct Guarded {
    inner: Bytes,
    altered: bool,
}

/// Value of the unsigned varint at the start of `b` (up to 5 bytes; longer is malformed and
/// reported as `u64::MAX`).
fn peek_uvarint(b: &[u8]) -> u64 {
    let mut value = 0u64;
    for (i, byte) in b.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return value;
        }
    }
    u64::MAX
}

impl bytes::Buf for Guarded {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.inner.advance(cnt)
    }

    fn try_get_i32(&mut self) -> Result<i32, bytes::TryGetError> {
        let v = self.inner.try_get_i32()?;
        let left = self.inner.remaining();
        if v > 0 && v as usize > left {
            self.altered = true;
            return Ok(i32::try_from(left + 1).unwrap_or(i32::MAX));
        }
        Ok(v)
    }

    fn try_get_u8(&mut self) -> Result<u8, bytes::TryGetError> {
        let left = self.inner.remaining();
        if self.inner.first().is_some_and(|b| b & 0x80 != 0)
            && peek_uvarint(&self.inner) > left as u64 + 1
        {
            return Err(bytes::TryGetError {
                requested: left + 1,
                available: left,
            });
        }
        self.inner.try_get_u8()
    }
}

impl kafka_protocol::protocol::buf::ByteBuf for Guarded {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        self.inner.slice(r)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        self.inner.split_to(size)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[tokio::test]
    async fn test_read_frame_limits_and_eof() {
        let mut ok: &[u8] = &[0, 0, 0, 2, 7, 8];
        assert_eq!(
            read_frame(&mut ok, 10).await.unwrap().unwrap(),
            Bytes::from_static(&[7, 8])
        );
        assert!(read_frame(&mut ok, 10).await.unwrap().is_none());
        let mut big: &[u8] = &[0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut big, 10).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut neg, 10).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut torn: &[u8] = &[0, 0, 0, 5, 1];
        assert!(matches!(
            read_frame(&mut torn, 10).await,
            Err(FrameError::Truncated)
        ));
        let mut torn_size: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut torn_size, 10).await,
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn test_parse_request_unknown_api_key_keeps_correlation() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 3, 0, 0, 0, 42, 0xff, 0xff, 1, 2]);
        let r = parse_request(frame).unwrap();
        assert_eq!(
            (r.api_key, r.api_version, r.correlation_id),
            (0x7f00, 3, 42)
        );
        assert_eq!(r.client_id, None);
        assert_eq!(&r.body[..], &[1, 2]);
    }

    proptest! {
        /// Random bytes never panic the frame reader or the header parser.
        #[test]
        fn test_parse_request_random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_request(Bytes::from(b));
        }
    }
}
