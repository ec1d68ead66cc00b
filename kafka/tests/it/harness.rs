//! A server on an ephemeral port and a raw protocol client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka::{KafkaConfig, MemBackend};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// `serve` running in this test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub backend: Arc<MemBackend>,
    shutdown: CancellationToken,
}

impl Server {
    pub async fn start(cfg: KafkaConfig) -> Self {
        // Server logs in the test output (RUST_LOG, default info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "kafka=info".into()),
            )
            .with_test_writer()
            .try_init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(MemBackend::new());
        let shutdown = CancellationToken::new();
        tokio::spawn(kafka::serve(
            listener,
            backend.clone(),
            cfg,
            shutdown.clone(),
        ));
        Self {
            addr,
            backend,
            shutdown,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub async fn client(&self) -> Client {
        Client {
            stream: TcpStream::connect(self.addr).await.unwrap(),
            next: 1,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Speaks the client side of the protocol over one connection.
pub struct Client {
    pub stream: TcpStream,
    next: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            next: 1,
        }
    }

    /// Encodes a request frame (size, header, body) with a fresh correlation id.
    pub fn frame<R: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &R,
    ) -> (i32, Bytes) {
        let corr = self.next;
        self.next += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = corr;
        header.client_id = Some(StrBytes::from_static_str("it"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        let n = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&n.to_be_bytes());
        (corr, buf.freeze())
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    /// Reads one frame; `None` when the server closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await.ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    /// Decodes a response frame; returns (correlation id, body).
    pub fn decode<T: Decodable + HeaderVersion>(frame: Bytes, version: i16) -> (i32, T) {
        let mut b = frame;
        let header = ResponseHeader::decode(&mut b, T::header_version(version)).unwrap();
        let body = T::decode(&mut b, version).unwrap();
        assert!(!b.has_remaining(), "trailing bytes in response");
        (header.correlation_id, body)
    }

    pub async fn call<R, T>(&mut self, key: ApiKey, version: i16, req: &R) -> T
    where
        R: Encodable + HeaderVersion,
        T: Decodable + HeaderVersion,
    {
        let (corr, frame) = self.frame(key, version, req);
        self.send_raw(&frame).await;
        let resp = self
            .read_frame()
            .await
            .expect("server closed the connection");
        let (got, body) = Self::decode::<T>(resp, version);
        assert_eq!(got, corr);
        body
    }

    /// Whether the server closed the connection (reads until EOF or error).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

pub fn name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_owned()))
}

pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}
