//! `kelp server`, the all-in-one quick start: every service in one process, data under one
//! dir; SIGTERM stops the broker first, so records acknowledged from memory are flushed while
//! the volume server and filer still serve; after a restart everything reads back. With the
//! files of `kelp cert` it runs secured, and the CLI passes the credentials along.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::broker::{Broker, Checker};
use e2e::server::KelpServer;

async fn broker_addr(dir: &Path) -> String {
    KelpServer::ready_url(dir, "broker").await
}

async fn sigterm_and_wait(KelpServer(child): &mut KelpServer) -> bool {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn given_kelp_server_when_sigterm_should_flush_buffered_records_before_stopping() {
    let tmp = tempfile::Builder::new()
        .prefix("kelp-e2e-server-")
        .tempdir()
        .unwrap();
    let mut child = KelpServer::start(tmp.path());
    let b = Broker::new(broker_addr(tmp.path()).await);
    b.create_topic("aio/t", 2).await;
    let mut checker = Checker::default();
    for i in 0..10 {
        let recs: Vec<(u32, String)> = (0..10).map(|j| (j % 2, format!("r{i}-{j}"))).collect();
        let o = b.publish("aio/t", &recs, "buffered").await.unwrap();
        checker.ack("aio/t", &recs, &o);
    }
    let clean = sigterm_and_wait(&mut child).await;
    let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default();
    assert!(clean, "kelp server exits 0 on SIGTERM:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    let _server = KelpServer::start(tmp.path());
    let b = Broker::new(broker_addr(tmp.path()).await);
    assert_eq!(b.offsets("aio/t", 0).await, (0, 50, 50));
    assert_eq!(checker.verify(&b).await, 100);
}

/// Runs the `kelp` CLI; its exit status and stdout (stderr shown when it fails).
fn kelp(args: &[&std::ffi::OsStr], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(e2e::bin_dir().join("kelp"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!("kelp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_kelp_cert_files_when_kelp_server_runs_secured_should_serve_the_cli_only_with_its_credentials()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, out) = kelp(
        &[
            os("cert").as_os_str(),
            os("--out").as_os_str(),
            certs.as_os_str(),
        ],
        None,
    );
    assert!(ok, "kelp cert failed");
    assert!(out.contains("--api-keys-file"), "{out}");
    let _server = KelpServer::start_secure(dir, &certs);
    let addr = |url: String| url.trim_start_matches("https://").to_owned();
    let master = addr(KelpServer::ready_url_secure(dir, &certs, "master").await);
    let filer = addr(KelpServer::ready_url_secure(dir, &certs, "filer").await);
    let broker = addr(KelpServer::ready_url_secure(dir, &certs, "broker").await);

    let ca = certs.join("ca.pem");
    let write_key = certs.join("write.api-key");
    let read_key = certs.join("read.api-key");
    let token = certs.join("cluster.token");
    // The client flags: the CA, and the key (and the cluster token for operator commands).
    let run = |auth: &[&std::path::Path], rest: &[&str], stdin: Option<&str>| {
        let mut args: Vec<std::ffi::OsString> = vec![os("--tls-ca"), ca.clone().into_os_string()];
        for (flag, file) in ["--api-key-file", "--cluster-token-file"].iter().zip(auth) {
            args.push(os(flag));
            args.push(file.as_os_str().to_owned());
        }
        args.extend(rest.iter().map(|a| os(a)));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        kelp(&refs, stdin)
    };
    let payload = "a secured blob\n".repeat(100);
    let local = dir.join("blob.txt");
    std::fs::write(&local, &payload).unwrap();
    let local_s = local.to_str().unwrap();

    // Blobs: the write key uploads; no key, or a read key, cannot.
    let (ok, fid) = run(
        &[&write_key],
        &["upload", "--master", &master, local_s],
        None,
    );
    assert!(ok && fid.contains(','), "upload: {fid}");
    let (ok, _) = run(&[], &["upload", "--master", &master, local_s], None);
    assert!(!ok, "an upload without an API key succeeded");
    let (ok, _) = run(
        &[&read_key],
        &["upload", "--master", &master, local_s],
        None,
    );
    assert!(!ok, "an upload with a read key succeeded");
    let (ok, _) = kelp(
        &[
            os("upload").as_os_str(),
            os("--master").as_os_str(),
            os(&master).as_os_str(),
            local.as_os_str(),
        ],
        None,
    );
    assert!(!ok, "an upload without TLS succeeded");
    let (ok, got) = run(&[&read_key], &["download", "--master", &master, &fid], None);
    assert!(ok, "download with a read key");
    assert_eq!(got, payload.trim_end());

    // Files: put with the write key, get with the read key, ls (the metadata API) with the
    // cluster token.
    let (ok, _) = run(
        &[&write_key],
        &["fs", "put", "--filer", &filer, local_s, "/docs/blob.txt"],
        None,
    );
    assert!(ok, "fs put");
    let (ok, got) = run(
        &[&read_key],
        &["fs", "get", "--filer", &filer, "/docs/blob.txt"],
        None,
    );
    assert!(ok, "fs get");
    assert_eq!(got, payload.trim_end());
    let (ok, _) = run(
        &[],
        &["fs", "get", "--filer", &filer, "/docs/blob.txt"],
        None,
    );
    assert!(!ok, "fs get without a key succeeded");
    let (ok, listing) = run(
        &[&read_key, &token],
        &["fs", "ls", "--filer", &filer, "/docs"],
        None,
    );
    assert!(ok && listing.contains("blob.txt"), "fs ls: {listing}");

    // Topics: create and publish durably with the write key, read with the read key.
    let (ok, _) = run(
        &[&write_key],
        &[
            "topic",
            "create",
            "--broker",
            &broker,
            "sec/events",
            "--partitions",
            "1",
        ],
        None,
    );
    assert!(ok, "topic create");
    let (ok, _) = run(
        &[&write_key],
        &[
            "pub",
            "--broker",
            &broker,
            "sec/events",
            "--acks",
            "durable",
        ],
        Some("one\ntwo\nthree\n"),
    );
    assert!(ok, "pub");
    let (ok, _) = run(
        &[&read_key],
        &["pub", "--broker", &broker, "sec/events"],
        Some("nope\n"),
    );
    assert!(!ok, "a publish with a read key succeeded");
    let (ok, records) = run(
        &[&read_key],
        &["sub", "--broker", &broker, "sec/events", "--partition", "0"],
        None,
    );
    assert!(ok, "sub");
    for v in ["one", "two", "three"] {
        assert!(records.contains(v), "{v} missing from {records}");
    }
    assert!(!records.contains("nope"), "{records}");
}
