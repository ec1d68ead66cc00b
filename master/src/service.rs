//! The master's domain operations: assign (with on-demand growth), grow, lookup, heartbeats and
//! the status views. Errors are [`Error`]; only `http::error` maps them to statuses.
//!
//! Invariant of assign: a file key is handed out only after the state file holds a ceiling
//! above it (see [`crate::state`]), so no key is issued twice, across restarts too.
//!
//! Lock policy (STYLE 18: a panic is fatal): the topology lock is a std `RwLock` whose critical
//! sections never await and never call anything that may panic. Should one panic anyway, the
//! topology can no longer be trusted: [`Master`] aborts the process on a poisoned lock instead
//! of answering every later request with a panic; the topology is soft state rebuilt from the
//! next heartbeats after a restart.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use common::api::master::{
    AllocateQuery, AssignResponse, Heartbeat, Location, NodeStatus, Replication, VolumeInfo,
};
use common::client::ClientError;
use common::client::volume::VolumeClient;
use common::ids::{FileId, VolumeId};
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::state::Sequencer;
use crate::topology::{Topology, Writable};

/// Most keys one assign may reserve.
pub const MAX_COUNT: u64 = 100_000;
/// Longest collection name.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Longest volume server address a heartbeat may carry.
pub const MAX_URL_LEN: usize = 256;

/// What can go wrong in a master operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The number of keys asked for is out of range.
    #[error("count must be 1..={MAX_COUNT}, got {0}")]
    BadCount(u64),
    /// The collection name is not acceptable.
    #[error("collection {0:?} must be at most {MAX_COLLECTION_LEN} letters, digits, '-' or '.'")]
    BadCollection(String),
    /// The replication is not three digits 0-2.
    #[error("{0}")]
    BadReplication(String),
    /// The heartbeat is malformed.
    #[error("heartbeat url must be 1..={MAX_URL_LEN} bytes")]
    BadHeartbeat,
    /// No live server holds the volume.
    #[error("volume {0} not found on any live server")]
    VolumeNotFound(VolumeId),
    /// Too few live servers with a free slot to grow a volume.
    #[error(
        "no writable volume for collection {collection:?} replication {replication}: it needs {needed} live volume servers with a free slot, {available} available"
    )]
    NoWritableVolume {
        /// The collection asked for.
        collection: String,
        /// The replication asked for.
        replication: Replication,
        /// Servers a volume needs (its copies).
        needed: usize,
        /// Servers available.
        available: usize,
    },
    /// A volume server refused or failed to allocate a grown volume.
    #[error("growing volume {volume} on {server} failed: {source}")]
    GrowFailed {
        /// The volume being grown.
        volume: VolumeId,
        /// The server that failed.
        server: String,
        /// Its answer.
        #[source]
        source: ClientError,
    },
    /// The durable state file could not be updated.
    #[error("update the master state file: {0:#}")]
    State(anyhow::Error),
}

/// The master: topology, sequencer and the volume client used to grow volumes.
pub struct Master {
    topology: RwLock<Topology>,
    sequencer: Mutex<Sequencer>,
    grow_lock: Mutex<()>,
    volumes: VolumeClient,
    default_replication: Replication,
    size_limit: u64,
    metrics: Metrics,
}

/// Aborts the process: a panic inside a topology critical section left it poisoned.
fn poisoned() -> ! {
    tracing::error!("topology lock poisoned by a panic in a critical section: exiting");
    std::process::abort()
}

impl Master {
    /// Creates the master. A server silent for three `pulse`s is dead; volumes reaching
    /// `size_limit` bytes are no longer assigned to.
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
            size_limit,
            metrics,
        }
    }

    fn topo(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|_| poisoned())
    }

    fn topo_mut(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|_| poisoned())
    }

    /// Volumes reaching this size (bytes) are no longer written to.
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Largest volume id and next key.
    pub async fn counters(&self) -> (VolumeId, u64) {
        let s = self.sequencer.lock().await;
        (s.max_volume_id(), s.next_key())
    }

    /// Parses an assign's replication (the default when absent or empty).
    pub fn replication(&self, r: Option<&str>) -> Result<Replication, Error> {
        match r {
            None | Some("") => Ok(self.default_replication),
            Some(r) => r.parse().map_err(Error::BadReplication),
        }
    }

    /// Checks a collection name ("" is no collection).
    pub fn collection(c: Option<String>) -> Result<String, Error> {
        let c = c.unwrap_or_default();
        if c.len() > MAX_COLLECTION_LEN
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::BadCollection(c));
        }
        Ok(c)
    }

    /// Checks the number of keys one assign reserves.
    pub fn check_count(count: u64) -> Result<(), Error> {
        if count == 0 || count > MAX_COUNT {
            return Err(Error::BadCount(count));
        }
        Ok(())
    }

    /// Hands out `count` consecutive keys on a writable volume, growing one if none is
    /// writable. The answer names the first key's fid.
    #[tracing::instrument(name = "master.assign", skip(self), fields(volume_id))]
    pub async fn assign(
        &self,
        collection: &str,
        replication: Replication,
        count: u64,
    ) -> Result<AssignResponse, Error> {
        Self::check_count(count)?;
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
            seq.next_keys(count).map_err(Error::State)?
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

    fn pick(&self, collection: &str, replication: Replication) -> Option<Writable> {
        self.topo().pick_writable(collection, replication)
    }

    /// Grows one volume of `collection` with `replication` on as many live servers with a
    /// free slot as it has copies. The caller holds `grow_lock`.
    async fn grow(&self, collection: &str, replication: Replication) -> Result<Writable, Error> {
        let copies = replication.copies();
        let nodes = self.topo().pick_nodes_for_growth(copies);
        if nodes.len() < copies {
            return Err(Error::NoWritableVolume {
                collection: collection.to_owned(),
                replication,
                needed: copies,
                available: nodes.len(),
            });
        }
        let vid = {
            let mut seq = self.sequencer.lock().await;
            seq.next_volume_id().map_err(Error::State)?
        };
        let q = AllocateQuery {
            volume_id: vid,
            collection: collection.to_owned(),
            replication: Some(replication.to_string()),
        };
        let results =
            futures::future::join_all(nodes.iter().map(|n| self.volumes.allocate(&n.url, &q)))
                .await;
        for (n, r) in nodes.iter().zip(results) {
            if let Err(source) = r {
                return Err(Error::GrowFailed {
                    volume: vid,
                    server: n.url.clone(),
                    source,
                });
            }
        }
        {
            let mut topo = self.topo_mut();
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
        }
        self.metrics.volumes_grown.inc();
        tracing::info!(volume = vid, collection, %replication, servers = ?nodes.iter().map(|n| &n.url).collect::<Vec<_>>(), "volume grown");
        Ok(Writable {
            volume_id: vid,
            location: Location {
                url: nodes[0].url.clone(),
                public_url: nodes[0].public_url.clone(),
            },
        })
    }

    /// Records a heartbeat and raises the id counters above what the server reports.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), Error> {
        if beat.url.is_empty() || beat.url.len() > MAX_URL_LEN {
            return Err(Error::BadHeartbeat);
        }
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
            seq.observe(max_vid, max_key).map_err(Error::State)?;
        }
        let mut topo = self.topo_mut();
        if topo.heartbeat(beat) {
            tracing::info!(server = %beat.url, volumes = beat.volumes.len(), "volume server joined");
        }
        self.metrics.alive_nodes.set(topo.alive_count() as i64);
        Ok(())
    }

    /// Live servers holding `vid`; [`Error::VolumeNotFound`] when there are none.
    pub fn lookup(&self, vid: VolumeId) -> Result<Vec<Location>, Error> {
        let locations = self.topo().lookup(vid);
        if locations.is_empty() {
            return Err(Error::VolumeNotFound(vid));
        }
        Ok(locations)
    }

    /// Status of every known volume server.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.topo().status()
    }

    /// Live and known volume servers.
    pub fn node_counts(&self) -> (usize, usize) {
        let t = self.topo();
        (t.alive_count(), t.known_count())
    }
}
