//! `kelp server`, the all-in-one quick start: every service in one process, data under one
//! dir; SIGTERM stops the broker first, so records acknowledged from memory are flushed while
//! the volume server and filer still serve; after a restart everything reads back.

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
