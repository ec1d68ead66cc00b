//! The master's operations: assign (with on-demand growth), lookup, heartbeats.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::api::master::{
    AllocateQuery, AssignResponse, Heartbeat, Location, Replication, VolumeInfo,
};
use common::client::volume::VolumeClient;
use common::http::ApiError;
use common::ids::{FileId, VolumeId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;

use crate::state::Sequencer;
use crate::topology::Topology;

/// The master's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Successful assigns.
    pub assigns: Counter,
    /// Assigns answered 503.
    pub assign_unavailable: Counter,
    /// Volumes grown.
    pub volumes_grown: Counter,
    /// Heartbeats received.
    pub heartbeats: Counter,
    /// Live volume servers.
    pub alive_nodes: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("kelp_master");
        r.register("assigns", "File ids assigned", m.assigns.clone());
        r.register(
            "assign_unavailable",
            "Assigns answered 503",
            m.assign_unavailable.clone(),
        );
        r.register(
            "volumes_grown",
            "Volumes grown on demand",
            m.volumes_grown.clone(),
        );
        r.register("heartbeats", "Heartbeats received", m.heartbeats.clone());
        r.register("alive_nodes", "Live volume servers", m.alive_nodes.clone());
        m
    }
}

/// The master: topology, sequencer and the volume client used to grow volumes.
pub struct Master {
    /// Soft state from heartbeats.
    pub topology: RwLock<Topology>,
    sequencer: Mutex<Sequencer>,
    grow_lock: Mutex<()>,
    volumes: VolumeClient,
    default_replication: Replication,
    /// Metrics.
    pub metrics: Metrics,
}

impl Master {
    /// Creates the master.
    pub fn new(
        sequencer: Sequencer,
        pulse: Duration,
        size_limit: u64,
        default_replication: Replication,
        volumes: VolumeClient,
        metrics: Metrics,
    ) -> Self {
        Self {
            topology: RwLock::new(Topology::new(pulse * 3, size_limit)),
            sequencer: Mutex::new(sequencer),
            grow_lock: Mutex::new(()),
            volumes,
            default_replication,
            metrics,
        }
    }

    /// Largest volume id and next key.
    pub async fn counters(&self) -> (VolumeId, u64) {
        let s = self.sequencer.lock().await;
        (s.max_volume_id(), s.next_key())
    }

    /// Parses an assign's replication (default when absent).
    pub fn replication(&self, r: Option<&str>) -> Result<Replication, ApiError> {
        match r {
            None | Some("") => Ok(self.default_replication),
            Some(r) => r
                .parse()
                .map_err(|e: String| ApiError::bad_request("bad_replication", e)),
        }
    }

    /// Hands out `count` keys on a writable volume, growing one if none is writable.
    #[tracing::instrument(name = "master.assign", skip(self), fields(volume_id))]
    pub async fn assign(
        &self,
        collection: &str,
        replication: Replication,
        count: u64,
    ) -> Result<AssignResponse, ApiError> {
        let writable = match self.pick(collection, replication) {
            Some(w) => w,
            None => {
                let _guard = self.grow_lock.lock().await;
                match self.pick(collection, replication) {
                    Some(w) => w,
                    None => self.grow(collection, replication).await.inspect_err(|_| {
                        self.metrics.assign_unavailable.inc();
                    })?,
                }
            }
        };
        tracing::Span::current().record("volume_id", writable.volume_id);
        let key = {
            // The state file is written inline, under the lock, at most once per 10 000 keys:
            // no key may be handed out before its ceiling is on disk.
            let mut seq = self.sequencer.lock().await;
            seq.next_keys(count).map_err(ApiError::internal)?
        };
        let fid = FileId::new(writable.volume_id, key, rand::random());
        self.metrics.assigns.inc();
        Ok(AssignResponse {
            fid: fid.to_string(),
            url: writable.location.url,
            public_url: writable.location.public_url,
            count,
        })
    }

    fn pick(
        &self,
        collection: &str,
        replication: Replication,
    ) -> Option<crate::topology::Writable> {
        self.topology
            .read()
            .expect("topology lock")
            .pick_writable(collection, replication)
    }

    async fn grow(
        &self,
        collection: &str,
        replication: Replication,
    ) -> Result<crate::topology::Writable, ApiError> {
        let copies = replication.copies();
        let nodes = self
            .topology
            .read()
            .expect("topology lock")
            .pick_nodes_for_growth(copies);
        if nodes.len() < copies {
            return Err(ApiError::unavailable(
                "no_writable_volume",
                format!(
                    "no writable volume for collection {collection:?} replication {replication}: it needs {copies} live volume servers with a free slot, {} available",
                    nodes.len()
                ),
                1,
            ));
        }
        let vid = {
            let mut seq = self.sequencer.lock().await;
            seq.next_volume_id().map_err(ApiError::internal)?
        };
        let q = AllocateQuery {
            volume_id: vid,
            collection: collection.to_owned(),
            replication: Some(replication.to_string()),
        };
        let results =
            futures::future::join_all(nodes.iter().map(|n| self.volumes.allocate(&n.url, &q)))
                .await;
        for (n, r) in nodes.iter().zip(&results) {
            if let Err(e) = r {
                return Err(ApiError::unavailable(
                    "grow_failed",
                    format!("growing volume {vid} on {} failed: {e}", n.url),
                    1,
                ));
            }
        }
        let mut topo = self.topology.write().expect("topology lock");
        for n in &nodes {
            topo.add_volume(
                &n.url,
                VolumeInfo {
                    id: vid,
                    collection: collection.to_owned(),
                    replication,
                    size: crate::VOLUME_EMPTY_SIZE,
                    file_count: 0,
                    delete_count: 0,
                    read_only: false,
                    max_file_key: 0,
                },
            );
        }
        self.metrics.volumes_grown.inc();
        tracing::info!(volume = vid, collection, %replication, servers = ?nodes.iter().map(|n| &n.url).collect::<Vec<_>>(), "volume grown");
        Ok(crate::topology::Writable {
            volume_id: vid,
            location: Location {
                url: nodes[0].url.clone(),
                public_url: nodes[0].public_url.clone(),
            },
        })
    }

    /// Records a heartbeat and raises the id counters above what the server reports.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), ApiError> {
        self.metrics.heartbeats.inc();
        let max_vid = beat.volumes.iter().map(|v| v.id).max().unwrap_or(0);
        let max_key = beat
            .volumes
            .iter()
            .map(|v| v.max_file_key)
            .max()
            .unwrap_or(0);
        {
            let mut seq = self.sequencer.lock().await;
            seq.observe(max_vid, max_key).map_err(ApiError::internal)?;
        }
        let mut topo = self.topology.write().expect("topology lock");
        if topo.heartbeat(beat) {
            tracing::info!(server = %beat.url, volumes = beat.volumes.len(), "volume server joined");
        }
        self.metrics.alive_nodes.set(topo.alive_count() as i64);
        Ok(())
    }

    /// Live servers holding `vid`.
    pub fn lookup(&self, vid: VolumeId) -> Vec<Location> {
        self.topology.read().expect("topology lock").lookup(vid)
    }
}

/// Shared handle to the master.
pub type SharedMaster = Arc<Master>;
