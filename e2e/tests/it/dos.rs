//! Denial-of-service bounds of the real volume server binary (issue 16): a slowloris client
//! that trickles its header one byte a second is cut off within `--header-read-timeout-ms`,
//! and a flood beyond `--max-in-flight` is answered with immediate 503 `overloaded` (with
//! `Retry-After`), never a crash, while the server's resident memory stays bounded (measured);
//! ranged reads of a 256 MiB blob cost the volume server the range, not the blob (peak RSS
//! measured, beside a whole read that does hold the blob).

use std::time::{Duration, Instant};

use e2e::{Cluster, ClusterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_IN_FLIGHT: usize = 8;
const HEADER_TIMEOUT_MS: u64 = 1000;
const MIB: u64 = 1 << 20;

/// A volume server (with its master) serving at most [`MAX_IN_FLIGHT`] requests at once and
/// allowing [`HEADER_TIMEOUT_MS`] for a request header.
async fn bounded_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        env: vec![
            ("KELP_MAX_IN_FLIGHT".into(), MAX_IN_FLIGHT.to_string()),
            (
                "KELP_HEADER_READ_TIMEOUT_MS".into(),
                HEADER_TIMEOUT_MS.to_string(),
            ),
        ],
        ..ClusterOptions::default()
    })
    .await
    .unwrap()
}

/// Reads until the server closes the connection (or `limit` passes): how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_slowloris_client_when_it_trickles_its_header_should_be_cut_off_within_the_timeout()
{
    let c = bounded_cluster().await;
    let addr = c.volumes[0].addr();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let header =
        b"GET /status HTTP/1.1\r\nHost: volume\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = Instant::now();
    // One byte a second, as the slowloris does, until the server hangs up.
    let mut sent = 0;
    let mut cut = false;
    for b in header {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        sent += 1;
        if let Some(_after) = closed_within(&mut slow, Duration::from_secs(1)).await {
            cut = true;
            break;
        }
    }
    let elapsed = start.elapsed();
    println!("slowloris: cut off after {elapsed:?} and {sent} header bytes");
    assert!(
        cut,
        "the server read a whole trickled header ({sent} bytes)"
    );
    assert!(sent < header.len(), "the header was never completed");
    assert!(
        elapsed < Duration::from_millis(HEADER_TIMEOUT_MS) + Duration::from_secs(2),
        "cut off only after {elapsed:?}"
    );
    // A well-behaved client is served meanwhile and after.
    let r = e2e::get(format!("{}/status", c.volumes[0].url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_flood_beyond_max_in_flight_should_answer_503_and_keep_memory_bounded() {
    let c = bounded_cluster().await;
    let volume = &c.volumes[0];
    let url = volume.url();
    let http = e2e::http_client();
    let assign: serde_json::Value = http
        .get(format!("{}/dir/assign", c.master.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fid = assign["fid"].as_str().unwrap().to_owned();

    // Hold every permit: uploads that announce a body and never send it.
    let mut holders = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let mut s = TcpStream::connect(volume.addr()).await.unwrap();
        let head = format!(
            "POST /{fid} HTTP/1.1\r\nHost: volume\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\nxx"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        holders.push(s);
    }
    // Until every holder's request is being handled, a request may still get a permit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(format!("{url}/status")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held uploads never took the permits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The flood: 20,000 requests, 128 at a time (below the connection cap of 256, beyond which
    // new connections are closed at once rather than answered).
    let baseline = volume.rss();
    let mut peak = baseline;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..128 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts = (0u32, 0u32, 0u32); // 503 overloaded with Retry-After, other, errors
            for _ in 0..(20_000 / 128) {
                match http.get(format!("{url}/status")).send().await {
                    Ok(r) => {
                        let retry = r.headers().get("retry-after").cloned();
                        let status = r.status();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        if status == 503 && retry.is_some() && body["code"] == "overloaded" {
                            counts.0 += 1;
                        } else {
                            counts.1 += 1;
                        }
                    }
                    Err(_) => counts.2 += 1,
                }
            }
            counts
        }));
    }
    let mut shed = 0;
    let mut other = 0;
    let mut errors = 0;
    for t in tasks {
        while !t.is_finished() {
            peak = peak.max(volume.rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (s, o, e) = t.await.unwrap();
        shed += s;
        other += o;
        errors += e;
    }
    peak = peak.max(volume.rss());
    println!(
        "flood: {shed} shed (503 overloaded), {other} other, {errors} errors in {:?}; volume RSS baseline {} MiB, peak {} MiB",
        started.elapsed(),
        baseline / MIB,
        peak / MIB
    );
    assert_eq!(other, 0, "with every permit held, every request is shed");
    assert_eq!(errors, 0, "shedding answers; it does not drop connections");
    assert!(shed >= 19_000, "{shed}");
    assert!(
        peak.saturating_sub(baseline) < 64 * MIB,
        "RSS grew from {} to {} MiB",
        baseline / MIB,
        peak / MIB
    );

    // Release the permits: the server serves again, and the held uploads stored nothing.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(format!("{url}/status")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still shedding after the holders left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http.get(format!("{url}/{fid}")).send().await.unwrap();
    assert_eq!(r.status(), 404, "a torn upload stored nothing");
}

#[tokio::test]
async fn given_a_256_mib_blob_when_ranges_are_read_should_hold_the_ranges_not_the_blob() {
    use bytes::Bytes;
    use common::api::master::AssignQuery;
    use common::client::volume::WriteOptions;
    const SIZE: usize = 256 << 20;
    let c = Cluster::start(ClusterOptions {
        env: vec![("KELP_MAX_BLOB_MB".into(), "300".into())],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    // Incompressible, position-dependent bytes (xorshift), so a wrong range cannot match.
    let mut data = Vec::with_capacity(SIZE);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let data = Bytes::from(data);
    let w = c
        .blob_client()
        .upload(
            &AssignQuery::default(),
            data.clone(),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let vol = &c.volumes[0];
    let url = format!("{}/{}", vol.url(), w.fid);
    let client = e2e::http_client();

    vol.reset_peak_rss().unwrap();
    let base = vol.rss();
    let ranges = [
        (0, MIB as usize),
        (128 * MIB as usize + 12_345, MIB as usize),
        (SIZE - MIB as usize, MIB as usize),
        (77 * MIB as usize, 4 * MIB as usize),
    ];
    for (start, len) in ranges {
        let end = start + len - 1;
        let r = client
            .get(&url)
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 206, "bytes={start}-{end}");
        let body = r.bytes().await.unwrap();
        assert!(
            body == data.slice(start..=end),
            "bytes={start}-{end} differ"
        );
    }
    let ranged = vol.peak_rss().saturating_sub(base);

    // The contrast: a whole read holds the blob, and the same measurement sees it.
    vol.reset_peak_rss().unwrap();
    let base_whole = vol.rss();
    let body = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body == data, "the whole read differs");
    let whole = vol.peak_rss().saturating_sub(base_whole);
    eprintln!(
        "volume server peak RSS growth: ranged reads {} MiB, whole read {} MiB",
        ranged / MIB,
        whole / MIB
    );
    assert!(
        ranged < 32 * MIB,
        "ranged reads of a 256 MiB blob raised peak RSS by {} MiB",
        ranged / MIB
    );
    assert!(
        whole > 200 * MIB,
        "a whole read raised peak RSS by only {} MiB: the measurement is blind",
        whole / MIB
    );
}
