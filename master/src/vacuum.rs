//! Vacuum orchestration: the master asks every live volume server to compact, online, each of
//! its volumes whose garbage ratio exceeds a threshold (`POST /admin/vacuum?garbageThreshold=`
//! on the volume server), on demand (`/vol/vacuum`) and on a schedule (`--vacuum-interval-secs`).
//!
//! Invariant: at most one vacuum request is outstanding per volume server (one vacuum runs at
//! a time, and it sends each server one request), so replicas are compacted by their own
//! servers one volume at a time while reads and writes go on. A server that fails is reported,
//! never retried in the same round: the next round (or call) tries again.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::api::master::{VacuumFailure, VacuumResponse, VacuumedVolume};
use common::client::{Call, ClientError, HttpClient, base_url};
use common::ids::VolumeId;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::service::{Error, Master, VERSION};

/// The volume server's answer to `POST /admin/vacuum`.
#[derive(Debug, Deserialize)]
struct VolumeVacuumAnswer {
    compacted: Vec<Compacted>,
}

#[derive(Debug, Deserialize)]
struct Compacted {
    volume: VolumeId,
    before: u64,
    after: u64,
}

/// Client of the volume servers' `/admin/vacuum`.
#[derive(Debug, Clone)]
pub struct VacuumClient {
    http: HttpClient,
}

impl VacuumClient {
    /// A client sending through `http` (compaction takes long: give it a long timeout).
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }

    async fn vacuum(
        &self,
        server: &str,
        threshold: f64,
    ) -> Result<VolumeVacuumAnswer, ClientError> {
        let call = Call::new(
            Method::POST,
            format!(
                "{}/admin/vacuum?garbageThreshold={threshold}",
                base_url(server)
            ),
            "POST /admin/vacuum",
        );
        self.http.json(call).await
    }
}

/// Checks a garbage threshold: a ratio in 0..=1.
pub fn check_threshold(t: f64) -> Result<f64, Error> {
    if t.is_finite() && (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(Error::BadGarbageThreshold(t))
    }
}

impl Master {
    /// Asks every live volume server, in parallel, to compact its volumes whose garbage ratio
    /// exceeds `threshold`; answers what each compacted and which failed.
    #[tracing::instrument(name = "master.vacuum", skip(self))]
    pub async fn vacuum(&self, threshold: f64) -> Result<VacuumResponse, Error> {
        let threshold = check_threshold(threshold)?;
        let _one_at_a_time = self.vacuum_lock.lock().await;
        let servers = self.alive_urls();
        let answers = futures::future::join_all(
            servers
                .iter()
                .map(|s| self.vacuum_client.vacuum(s, threshold)),
        )
        .await;
        let (mut compacted, mut failed) = (Vec::new(), Vec::new());
        for (server, answer) in servers.into_iter().zip(answers) {
            match answer {
                Ok(a) => compacted.extend(a.compacted.into_iter().map(|c| VacuumedVolume {
                    server: server.clone(),
                    volume: c.volume,
                    before: c.before,
                    after: c.after,
                })),
                Err(e) => {
                    tracing::warn!(%server, "vacuum failed on a volume server: {e}");
                    failed.push(VacuumFailure {
                        server,
                        error: e.to_string(),
                    });
                }
            }
        }
        let reclaimed: u64 = compacted
            .iter()
            .map(|c| c.before.saturating_sub(c.after))
            .sum();
        tracing::info!(
            threshold,
            volumes = compacted.len(),
            reclaimed,
            failed = failed.len(),
            "vacuum done"
        );
        Ok(VacuumResponse {
            garbage_threshold: threshold,
            compacted,
            failed,
            topology: self.seaweed_topology(),
            version: VERSION.to_owned(),
        })
    }
}

/// Runs a vacuum every `interval` until `stop` is cancelled (its first one after a full
/// interval, so a restarting cluster is not compacted while servers rejoin).
pub async fn schedule(
    master: Arc<Master>,
    interval: Duration,
    threshold: f64,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        // One master vacuums: the leader (a standby's topology would do the same work twice).
        if !master.leadership().leads() {
            continue;
        }
        let round = async {
            if let Err(e) = master.vacuum(threshold).await {
                tracing::warn!("scheduled vacuum failed: {e}");
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tracing::Instrument::instrument(round, tracing::info_span!("master.vacuum_schedule")) => {}
        }
    }
}
