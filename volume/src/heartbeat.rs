//! The heartbeat loop: reports this server's volumes to the master every interval, and at once
//! after a volume is allocated; applies the master's volume size limit.

use std::time::Duration;

use common::api::master::Heartbeat;
use tokio_util::sync::CancellationToken;

use crate::http::AppState;

/// Sends heartbeats until `shutdown` is cancelled.
#[tracing::instrument(name = "volume.heartbeat", skip_all)]
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let interval = Duration::from_millis(state.cfg.heartbeat_interval_ms.max(50));
    let mut healthy = true;
    loop {
        let beat = Heartbeat {
            url: state.url.clone(),
            public_url: state.url.clone(),
            max_volumes: state.cfg.max_volumes,
            volumes: state.store.infos(),
        };
        match state.master.heartbeat(&beat).await {
            Ok(resp) => {
                state.store.set_size_limit(resp.volume_size_limit);
                if !healthy {
                    tracing::info!(master = %state.cfg.master, "master reachable again");
                }
                healthy = true;
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(master = %state.cfg.master, error = %e, "heartbeat failed; will keep trying");
                }
                healthy = false;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = state.beat.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}
