//! Helpers for tests of volume servers: random blobs uploaded through the master, a vacuum
//! asked of a volume server, and a Prometheus counter read from a service's `/metrics`.

use bytes::Bytes;
use common::api::master::AssignQuery;
use common::client::volume::{BlobClient, WriteOptions};
use common::ids::FileId;
use rand::Rng;

/// `len` random bytes.
pub fn random(len: usize) -> Bytes {
    let mut b = vec![0u8; len];
    rand::rng().fill(&mut b[..]);
    Bytes::from(b)
}

/// Uploads `n` random blobs of `len` bytes (assign + write, fsynced); returns each fid with
/// its bytes.
pub async fn upload_random(client: &BlobClient, n: usize, len: usize) -> Vec<(FileId, Bytes)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let b = random(len);
        let w = client
            .upload(&AssignQuery::default(), b.clone(), &WriteOptions::default())
            .await
            .expect("upload a blob");
        out.push((w.fid, b));
    }
    out
}

/// The value of metric `name` (the first line starting with it) at `url`'s `/metrics`.
pub async fn metric(url: &str, name: &str) -> u64 {
    let text = crate::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("read /metrics");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Asks the volume server at `url` to compact every volume whose garbage ratio is over 30%
/// (`POST /admin/vacuum?garbageThreshold=0.3`).
pub async fn vacuum(url: &str) -> reqwest::Result<common::api::volume::VacuumResponse> {
    crate::http_client()
        .post(format!("{url}/admin/vacuum?garbageThreshold=0.3"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}
