//! The heartbeat loop: reports this server's volumes to the master every interval, and at once
//! after a volume is allocated; applies the master's volume size limit. Each beat is its own
//! span (`volume.heartbeat`), so a trace shows one beat, not one endless loop.
//!
//! With several masters (`--master a,b`), each gets its own loop of beats: the leader needs
//! them to assign, and a standby keeps a warm topology so that it can assign the moment it is
//! elected. The loops are independent, and a beat is cut off after one interval (at least a
//! second), so a master that hangs delays no other master's beats. Each master's failure and
//! recovery is logged once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::service::VolumeServer;

/// Sends heartbeats until `shutdown` is cancelled.
pub async fn run(server: Arc<VolumeServer>, shutdown: CancellationToken) {
    let masters = server.master().masters().to_vec();
    let loops = masters
        .into_iter()
        .map(|m| beat_loop(server.clone(), m, shutdown.clone()));
    futures::future::join_all(loops).await;
}

/// Sends heartbeats to the master at `master` until `shutdown` is cancelled.
async fn beat_loop(server: Arc<VolumeServer>, master: String, shutdown: CancellationToken) {
    let interval = Duration::from_millis(server.config().heartbeat_interval_ms.max(50));
    let cutoff = interval.max(Duration::from_secs(1));
    let mut requests = server.beat_requests();
    let mut healthy = true;
    loop {
        let span = tracing::info_span!("volume.heartbeat", master = %master);
        healthy = match tokio::time::timeout(
            cutoff,
            beat(&server, &master, healthy).instrument(span),
        )
        .await
        {
            Ok(h) => h,
            Err(_) => {
                if healthy {
                    tracing::warn!(master = %master, timeout = ?cutoff, "heartbeat not answered in time; will keep trying");
                }
                false
            }
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = requests.changed() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Sends one heartbeat; returns whether the master answered. A failure is logged once, when
/// the master stops answering, and the recovery once, when it answers again.
async fn beat(server: &VolumeServer, master: &str, was_healthy: bool) -> bool {
    let beat = server.heartbeat();
    match server.master().heartbeat_to(master, &beat).await {
        Ok(resp) => {
            server.store().set_size_limit(resp.volume_size_limit);
            if !was_healthy {
                tracing::info!("master reachable again");
            }
            true
        }
        Err(e) => {
            if was_healthy {
                tracing::warn!(error = %e, "heartbeat failed; will keep trying");
            }
            false
        }
    }
}
