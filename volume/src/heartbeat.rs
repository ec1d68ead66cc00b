//! The heartbeat loop: reports this server's volumes to the master every interval, and at once
//! after a volume is allocated; applies the master's volume size limit. Each beat is its own
//! span (`volume.heartbeat`), so a trace shows one beat, not one endless loop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::service::VolumeServer;

/// Sends heartbeats until `shutdown` is cancelled.
pub async fn run(server: Arc<VolumeServer>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(server.config().heartbeat_interval_ms.max(50));
    let mut healthy = true;
    loop {
        let span = tracing::info_span!("volume.heartbeat", master = %server.config().master);
        healthy = beat(&server, healthy).instrument(span).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = server.beat_requested() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Sends one heartbeat; returns whether the master answered. A failure is logged once, when
/// the master stops answering, and the recovery once, when it answers again.
async fn beat(server: &VolumeServer, was_healthy: bool) -> bool {
    let beat = server.heartbeat();
    match server.master().heartbeat(&beat).await {
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
