//! The heartbeat loop: reports this server's volumes to the master every interval, and at once
//! after a volume is allocated; applies the master's volume size limit. Each beat is its own
//! span (`volume.heartbeat`), so a trace shows one beat, not one endless loop.
//!
//! With several masters (`--master a,b`), every beat goes to each of them, concurrently: the
//! leader needs it to assign, and a standby keeps a warm topology so that it can assign the
//! moment it is elected. Each master's failure and recovery is logged once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::service::VolumeServer;

/// Sends heartbeats until `shutdown` is cancelled.
pub async fn run(server: Arc<VolumeServer>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(server.config().heartbeat_interval_ms.max(50));
    let masters = server.master().masters().to_vec();
    let mut healthy = vec![true; masters.len()];
    loop {
        let beats = masters.iter().zip(&healthy).map(|(m, h)| {
            let span = tracing::info_span!("volume.heartbeat", master = %m);
            beat(&server, m, *h).instrument(span)
        });
        healthy = futures::future::join_all(beats).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = server.beat_requested() => {}
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
