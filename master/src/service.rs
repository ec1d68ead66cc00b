//! The master's domain operations: assign (with on-demand growth), grow, lookup, heartbeats and
//! the status views. Errors are [`Error`]; only `http::error` maps them to statuses.
//!
//! Invariant of assign: a file key is handed out only after the state file holds a ceiling
//! above it (see [`crate::state`]), so no key is issued twice, across restarts too.
//!
//! Lock policy (STYLE 18: a panic is fatal): the topology lock is a std `RwLock` whose critical
//! sections never await and never call anything that may panic. Should one panic anyway, the
//! topology can no longer be trusted: [`Master`] aborts the process on a poisoned lock
//! (`common::sync`, the policy of every service) instead
//! of answering every later request with a panic; the topology is soft state rebuilt from the
//! next heartbeats after a restart.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use common::api::master::{
    AllocateQuery, AssignResponse, Heartbeat, Location, NodeStatus, Replication, SeaweedTopology,
    SubmitResponse, VolStatus, VolumeInfo,
};
use common::client::ClientError;
use common::client::volume::{VolumeClient, WriteOptions};
use common::ids::{FileId, VolumeId};
use common::security::Security;
use common::sync::LockExt;
use tokio::sync::Mutex;

use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::state::{Persisted, Sequencer};
use crate::topology::{
    DATA_CENTER, DEFAULT_MAX_NODES, DISK_TYPE, MIN_FORGET_AFTER, RACK, Topology, Writable,
};
use crate::vacuum::VacuumClient;

/// Where a volume must be, from SeaweedFS's placement parameters. Kelp has one data center,
/// one rack and one disk type, so only the server remains to choose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The volume server (`host:port`, internal or public) the volume must be on.
    pub data_node: Option<String>,
}

impl Placement {
    /// Checks SeaweedFS's placement parameters against Kelp's single data center, rack and
    /// disk type (empty values are absent) and refuses a TTL.
    pub fn new(
        ttl: Option<&str>,
        data_center: Option<&str>,
        rack: Option<&str>,
        data_node: Option<&str>,
        disk_type: Option<&str>,
    ) -> Result<Self, Error> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        if let Some(t) = given(ttl) {
            return Err(Error::TtlUnsupported(t.to_owned()));
        }
        if let Some(dc) = given(data_center).filter(|dc| *dc != DATA_CENTER) {
            return Err(Error::UnknownDataCenter(dc.to_owned()));
        }
        if let Some(r) = given(rack).filter(|r| *r != RACK) {
            return Err(Error::UnknownRack(r.to_owned()));
        }
        if let Some(d) = given(disk_type).filter(|d| *d != DISK_TYPE) {
            return Err(Error::UnsupportedDiskType(d.to_owned()));
        }
        Ok(Self {
            data_node: given(data_node).map(str::to_owned),
        })
    }

    fn node(&self) -> Option<&str> {
        self.data_node.as_deref()
    }
}

/// What an assign asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignRequest {
    /// Collection ("" for none).
    pub collection: String,
    /// Replica placement.
    pub replication: Replication,
    /// Consecutive keys to reserve.
    pub count: u64,
    /// Where the volume must be.
    pub placement: Placement,
    /// Volumes to grow when none is writable.
    pub grow: u64,
}

/// Most keys one assign may reserve.
pub const MAX_COUNT: u64 = 100_000;
/// Longest collection name.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Most volumes one `/vol/grow` (or one assign's `writableVolumeCount`) may grow.
pub const MAX_GROW: u64 = 100;
/// The version `/dir/status` and `/vol/status` report.
pub const VERSION: &str = concat!("kelp ", env!("CARGO_PKG_VERSION"));
/// Longest volume server address a heartbeat may carry.
pub const MAX_URL_LEN: usize = 256;
/// Default `--max-collections`.
pub const DEFAULT_MAX_COLLECTIONS: usize = 1000;

/// Bounds on what heartbeats and assigns may make the master remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A volume server silent this long is forgotten with its volume locations.
    pub forget_after: Duration,
    /// Most distinct volume servers remembered; a heartbeat from another is refused.
    pub max_nodes: usize,
    /// Most named collections an assign or grow may create.
    pub max_collections: usize,
}

impl Limits {
    /// The defaults for a pulse: forgotten after `max(20 × pulse, 60 s)`, 10 000 servers,
    /// `max_collections` collections.
    pub fn for_pulse(pulse: Duration, max_collections: usize) -> Self {
        Self {
            forget_after: pulse.saturating_mul(20).max(MIN_FORGET_AFTER),
            max_nodes: DEFAULT_MAX_NODES,
            max_collections,
        }
    }
}

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
    /// A TTL was asked for: Kelp never expires needles, so it refuses rather than ignore it.
    #[error("ttl {0:?} is not supported: Kelp does not expire needles (leave ttl empty)")]
    TtlUnsupported(String),
    /// A data center other than Kelp's only one.
    #[error("data center {0:?} has no volume servers: Kelp's are all in {DATA_CENTER}")]
    UnknownDataCenter(String),
    /// A rack other than Kelp's only one.
    #[error("rack {0:?} has no volume servers: Kelp's are all in {RACK}")]
    UnknownRack(String),
    /// A disk type other than Kelp's only one.
    #[error("disk type {0:?} is not supported: Kelp's volumes are all on {DISK_TYPE}")]
    UnsupportedDiskType(String),
    /// The number of volumes to grow is out of range.
    #[error("count must be 1..={MAX_GROW}, got {0}")]
    BadGrowCount(u64),
    /// Too few free volume slots for a `/vol/grow`.
    #[error("only {left} free volume slots left, not enough for {needed}")]
    NotEnoughSlots {
        /// Free slots on the live servers (on the asked server, with `dataNode`).
        left: u64,
        /// Slots the growth needs (volumes × copies).
        needed: u64,
    },
    /// Writing a submitted file to its volume server failed.
    #[error("writing {fid} to {server} failed: {source}")]
    Upload {
        /// The file id.
        fid: String,
        /// The volume server.
        server: String,
        /// Its answer.
        #[source]
        source: Box<ClientError>,
    },
    /// A garbage threshold outside 0..=1.
    #[error("garbageThreshold must be a ratio between 0 and 1, got {0}")]
    BadGarbageThreshold(f64),
    /// The heartbeat is malformed.
    #[error("heartbeat url must be 1..={MAX_URL_LEN} bytes")]
    BadHeartbeat,
    /// A heartbeat from a new volume server while the master tracks as many as it may.
    #[error(transparent)]
    TooManyNodes(#[from] crate::topology::TooManyNodes),
    /// An assign or grow would create a collection beyond `--max-collections`.
    #[error(
        "collection {collection:?} is new and the cluster already has its maximum of {max} collections (--max-collections)"
    )]
    TooManyCollections {
        /// The collection asked for.
        collection: String,
        /// `--max-collections`.
        max: usize,
    },
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
        source: Box<ClientError>,
    },
    /// `/col/delete` without a collection: the default collection is never deleted this way.
    #[error("give the collection to delete: the default collection (\"\") is not deleted this way")]
    DefaultCollection,
    /// `/col/delete` of a collection no live server holds a volume of (SeaweedFS's text).
    #[error("collection {0} does not exist")]
    CollectionNotFound(String),
    /// Some volumes of a collection could not be deleted; the deleted ones are forgotten, and
    /// a retry deletes the rest.
    #[error("deleting collection {collection:?} failed on {failed} volumes (retry): {detail}")]
    CollectionDeleteFailed {
        /// The collection.
        collection: String,
        /// How many volume copies failed.
        failed: usize,
        /// Each failure: the volume, the server and its answer.
        detail: String,
    },
    /// The state file could not be updated.
    #[error("update the master state file: {0:#}")]
    State(anyhow::Error),
    /// The state in etcd (masters in HA) could not be updated: etcd unreachable, or this
    /// master's term ended.
    #[error("update the master state in etcd: {0:#}")]
    SharedState(anyhow::Error),
    /// This master is a standby (or between terms): the leader hands out ids.
    #[error("this master is not the leader{}", leader.as_deref().map(|l| format!(" (the leader is {l})")).unwrap_or_else(|| " and no leader is elected yet".to_owned()))]
    NotLeader {
        /// The leader's address, when one is known.
        leader: Option<String>,
    },
}

impl Error {
    /// A failure to persist the id state: [`Error::SharedState`] in etcd, else [`Error::State`].
    fn of_state(shared: bool, e: anyhow::Error) -> Self {
        if shared {
            Self::SharedState(e)
        } else {
            Self::State(e)
        }
    }
}

/// The id counters: the sequencer while this master leads, and the floor heartbeats showed.
#[derive(Debug, Default)]
struct Ids {
    /// Present while this master may hand out ids (always, for a master without HA).
    sequencer: Option<Sequencer>,
    /// The largest volume id and a ceiling above every key volume servers reported: a
    /// standby keeps it so that, elected, it starts above them.
    floor: Persisted,
}

/// The master: topology, sequencer and the volume client used to grow volumes.
pub struct Master {
    topology: RwLock<Topology>,
    ids: Mutex<Ids>,
    grow_lock: Mutex<()>,
    volumes: VolumeClient,
    default_replication: Replication,
    size_limit: u64,
    metrics: Metrics,
    security: Arc<Security>,
    max_collections: usize,
    leadership: Arc<Leadership>,
    pub(crate) vacuum_client: VacuumClient,
    pub(crate) vacuum_lock: Mutex<()>,
}

impl Master {
    /// Creates the master. A server silent for three `pulse`s is dead (and forgotten after
    /// [`Limits::for_pulse`]); volumes reaching `size_limit` bytes are no longer assigned to.
    /// Security is off until [`Master::with_security`].
    pub fn new(
        sequencer: Sequencer,
        pulse: Duration,
        size_limit: u64,
        default_replication: Replication,
        volumes: VolumeClient,
        vacuum_client: VacuumClient,
        metrics: Metrics,
    ) -> Self {
        let limits = Limits::for_pulse(pulse, DEFAULT_MAX_COLLECTIONS);
        // It holds a sequencer until told it takes part in an election.
        metrics.is_leader.set(1);
        Self {
            topology: RwLock::new(
                Topology::new(pulse * 3, size_limit)
                    .with_bounds(limits.forget_after, limits.max_nodes),
            ),
            ids: Mutex::new(Ids {
                sequencer: Some(sequencer),
                floor: Persisted::default(),
            }),
            grow_lock: Mutex::new(()),
            volumes,
            default_replication,
            size_limit,
            metrics,
            security: Arc::new(Security::default()),
            max_collections: limits.max_collections,
            leadership: Arc::new(Leadership::alone("")),
            vacuum_client,
            vacuum_lock: Mutex::new(()),
        }
    }

    /// Sets the bounds on remembered servers and created collections.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        let topo = std::mem::replace(
            self.topology.get_mut().unwrap_or_else(|p| p.into_inner()),
            Topology::new(Duration::ZERO, 0),
        );
        self.topology = RwLock::new(topo.with_bounds(limits.forget_after, limits.max_nodes));
        self.max_collections = limits.max_collections;
        self
    }

    /// Mints fid tokens with `security`'s keys (assigns, `/submit`, lookups) and lets the
    /// routes check its credentials ([`Master::security`]).
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = security;
        self
    }

    /// Takes part in an election (see [`crate::leader`]): ids are handed out only while
    /// `leadership` says this master leads. A master starts with no sequencer then; the
    /// election loop gives it one when it wins.
    pub fn with_leadership(mut self, leadership: Arc<Leadership>) -> Self {
        if !leadership.leads() {
            self.ids.get_mut().sequencer = None;
        }
        self.metrics
            .is_leader
            .set(i64::from(self.ids.get_mut().sequencer.is_some()));
        self.leadership = leadership;
        self
    }

    /// The master's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What this master knows of the election.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    fn leader_hint(&self) -> Option<String> {
        self.leadership
            .leader()
            .filter(|l| l != self.leadership.me())
    }

    /// The credentials the master runs with.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    fn topo(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology.read_or_abort()
    }

    fn topo_mut(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write_or_abort()
    }

    /// Volumes reaching this size (bytes) are no longer written to.
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Largest volume id and next key (on a standby: the largest it saw reported).
    pub async fn counters(&self) -> (VolumeId, u64) {
        let ids = self.ids.lock().await;
        match &ids.sequencer {
            Some(s) => (s.max_volume_id(), s.next_key()),
            None => (ids.floor.max_volume_id, ids.floor.key_ceiling),
        }
    }

    /// Makes this master the one handing out ids, from `seq` (a leader's, just loaded),
    /// raised first to what volume servers reported meanwhile.
    pub async fn lead(&self, mut seq: Sequencer) -> anyhow::Result<()> {
        let mut ids = self.ids.lock().await;
        let floor = ids.floor;
        // `floor` holds a ceiling above the largest key reported: observe that key itself.
        seq.observe(floor.max_volume_id, floor.key_ceiling.saturating_sub(1))
            .await?;
        ids.sequencer = Some(seq);
        self.metrics.is_leader.set(1);
        self.metrics.terms_won.inc();
        Ok(())
    }

    /// Stops handing out ids (a leader that lost its term). Waits for an id being persisted.
    pub async fn step_down(&self) {
        if self.ids.lock().await.sequencer.take().is_some() {
            self.metrics.is_leader.set(0);
            self.metrics.step_downs.inc();
        }
    }

    /// Runs `f` on the sequencer, or refuses when this master does not lead.
    async fn with_sequencer<T>(
        &self,
        f: impl AsyncFnOnce(&mut Sequencer) -> anyhow::Result<T>,
    ) -> Result<T, Error> {
        let mut ids = self.ids.lock().await;
        match ids.sequencer.as_mut() {
            Some(seq) => {
                let shared = seq.is_shared();
                f(seq).await.map_err(|e| Error::of_state(shared, e))
            }
            None => Err(Error::NotLeader {
                leader: self.leader_hint(),
            }),
        }
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

    /// Hands out `req.count` consecutive keys on a writable volume, growing `req.grow`
    /// volumes if none is writable. The answer names the first key's fid; the next ones are
    /// SeaweedFS's `fid_1` … `fid_{count-1}`.
    #[tracing::instrument(name = "master.assign", skip(self), fields(volume_id))]
    pub async fn assign(&self, req: &AssignRequest) -> Result<AssignResponse, Error> {
        Self::check_count(req.count)?;
        let (collection, replication) = (req.collection.as_str(), req.replication);
        let writable = match self.pick(collection, replication, &req.placement) {
            Some(w) => w,
            None => {
                let _guard = self.grow_lock.lock().await;
                match self.pick(collection, replication, &req.placement) {
                    Some(w) => w,
                    None => self.grow_for_assign(req).await.inspect_err(|_| {
                        self.metrics.assign_unavailable.inc();
                    })?,
                }
            }
        };
        tracing::Span::current().record("volume_id", writable.volume_id);
        // The state is written inline, under the lock, at most once per 10 000 keys: no key
        // may be handed out before its ceiling is on disk (or in etcd).
        let count = req.count;
        let key = self
            .with_sequencer(async |seq| seq.next_keys(count).await)
            .await?;
        let fid = FileId::new(writable.volume_id, key, rand::random());
        self.metrics.assigns.inc();
        Ok(AssignResponse {
            fid: fid.to_string(),
            url: writable.location.url,
            public_url: writable.location.public_url,
            count: req.count,
            auth: self.security.write_token(&fid),
        })
    }

    /// Grows the first volume (its failure is the assign's) and then up to `req.grow - 1`
    /// more, best effort. The caller holds `grow_lock`.
    async fn grow_for_assign(&self, req: &AssignRequest) -> Result<Writable, Error> {
        let (collection, replication) = (req.collection.as_str(), req.replication);
        let first = self.grow(collection, replication, &req.placement).await?;
        for _ in 1..req.grow.clamp(1, MAX_GROW) {
            if let Err(e) = self.grow(collection, replication, &req.placement).await {
                tracing::warn!(collection, %replication, "growing another writable volume failed: {e}");
                break;
            }
        }
        Ok(first)
    }

    /// `/vol/grow`: grows `count` volumes of `collection` with `replication`, each with all
    /// its copies, refusing up front when the free slots cannot hold them.
    #[tracing::instrument(name = "master.grow", skip(self))]
    pub async fn grow_volumes(
        &self,
        collection: &str,
        replication: Replication,
        placement: &Placement,
        count: u64,
    ) -> Result<u64, Error> {
        if count == 0 || count > MAX_GROW {
            return Err(Error::BadGrowCount(count));
        }
        let _guard = self.grow_lock.lock().await;
        let needed = count * replication.copies() as u64;
        let left = {
            let topo = self.topo();
            let total = topo.free_slots(None);
            // A named server holds one copy of each volume; the other copies go elsewhere.
            match placement.node() {
                Some(n) => total.min(topo.free_slots(Some(n)) * replication.copies() as u64),
                None => total,
            }
        };
        if left < needed {
            return Err(Error::NotEnoughSlots { left, needed });
        }
        for _ in 0..count {
            self.grow(collection, replication, placement).await?;
        }
        Ok(count)
    }

    fn pick(
        &self,
        collection: &str,
        replication: Replication,
        placement: &Placement,
    ) -> Option<Writable> {
        self.topo()
            .pick_writable(collection, replication, placement.node())
    }

    /// Grows one volume of `collection` with `replication` on as many live servers with a
    /// free slot as it has copies. The caller holds `grow_lock`.
    async fn grow(
        &self,
        collection: &str,
        replication: Replication,
        placement: &Placement,
    ) -> Result<Writable, Error> {
        let copies = replication.copies();
        let nodes = {
            let topo = self.topo();
            if !collection.is_empty()
                && !topo.has_collection(collection)
                && topo.collection_count() >= self.max_collections
            {
                return Err(Error::TooManyCollections {
                    collection: collection.to_owned(),
                    max: self.max_collections,
                });
            }
            topo.pick_nodes_for_growth(copies, placement.node())
        };
        if nodes.len() < copies {
            return Err(Error::NoWritableVolume {
                collection: collection.to_owned(),
                replication,
                needed: copies,
                available: nodes.len(),
            });
        }
        let vid = self
            .with_sequencer(async |seq| seq.next_volume_id().await)
            .await?;
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
                    source: Box::new(source),
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
                        deleted_bytes: 0,
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
        // A refused server changes nothing, the id counters included.
        if let Err(e) = self.topo_mut().admit(&beat.url) {
            tracing::warn!(server = %beat.url, max = e.max, "heartbeat from a new volume server refused: too many servers");
            return Err(e.into());
        }
        {
            let mut ids = self.ids.lock().await;
            ids.floor = ids.floor.max(crate::state::floor_of(max_vid, max_key));
            if let Some(seq) = ids.sequencer.as_mut() {
                let shared = seq.is_shared();
                seq.observe(max_vid, max_key)
                    .await
                    .map_err(|e| Error::of_state(shared, e))?;
            }
        }
        let mut topo = self.topo_mut();
        match topo.heartbeat(beat) {
            Ok(true) => {
                tracing::info!(server = %beat.url, volumes = beat.volumes.len(), "volume server joined");
            }
            Ok(false) => {}
            Err(e) => return Err(e.into()),
        }
        self.metrics.alive_nodes.set(topo.alive_count() as i64);
        Ok(())
    }

    /// Live servers holding `vid`; [`Error::VolumeNotFound`] when there are none, or when
    /// `collection` is given (non-empty) and is not the volume's (as SeaweedFS answers).
    pub fn lookup(&self, vid: VolumeId, collection: Option<&str>) -> Result<Vec<Location>, Error> {
        let topo = self.topo();
        if let Some(c) = collection.filter(|c| !c.is_empty())
            && topo.collection_of(vid).is_some_and(|have| have != c)
        {
            return Err(Error::VolumeNotFound(vid));
        }
        let locations = topo.lookup(vid);
        if locations.is_empty() {
            return Err(Error::VolumeNotFound(vid));
        }
        Ok(locations)
    }

    /// Live volume servers, by url.
    pub fn alive_urls(&self) -> Vec<String> {
        self.topo().alive_urls()
    }

    /// The live topology in SeaweedFS's shape.
    pub fn seaweed_topology(&self) -> SeaweedTopology {
        self.topo().seaweed()
    }

    /// `/vol/status`: the volumes of each live server in SeaweedFS's shape.
    pub fn vol_status(&self) -> VolStatus {
        self.topo().vol_status(VERSION)
    }

    /// `/submit`: assigns one key of `req` and writes `data` there as file `name`.
    #[tracing::instrument(name = "master.submit", skip(self, data), fields(bytes = data.len()))]
    pub async fn submit(
        &self,
        req: &AssignRequest,
        name: &str,
        data: Bytes,
    ) -> Result<SubmitResponse, Error> {
        let a = self.assign(req).await?;
        let fid: FileId = a.fid.parse().map_err(|e| {
            Error::State(anyhow::anyhow!("assign produced a bad fid {}: {e}", a.fid))
        })?;
        let opts = WriteOptions {
            name: (!name.is_empty()).then(|| name.to_owned()),
            auth: a.auth.clone(),
            ..WriteOptions::default()
        };
        let written = self
            .volumes
            .write(&a.url, &fid, data, &opts)
            .await
            .map_err(|source| Error::Upload {
                fid: a.fid.clone(),
                server: a.url.clone(),
                source: Box::new(source),
            })?;
        Ok(SubmitResponse {
            file_url: format!("{}/{}", a.public_url, a.fid),
            fid: a.fid,
            file_name: name.to_owned(),
            size: written.size,
            etag: written.etag,
        })
    }

    /// `/col/delete`: deletes every volume of `collection` on every live server holding it,
    /// then forgets them in the topology. A copy already gone (404) counts as deleted; any other
    /// failure leaves that copy known and fails the call, which a retry finishes. Holds the
    /// grow lock, so no volume of the collection is grown meanwhile. Volumes on dead servers are
    /// not reached: a server that comes back reports them again, to be deleted then.
    #[tracing::instrument(name = "master.delete_collection", skip(self))]
    pub async fn delete_collection(&self, collection: &str) -> Result<(), Error> {
        if collection.is_empty() {
            return Err(Error::DefaultCollection);
        }
        let _guard = self.grow_lock.lock().await;
        let held = self.topo().collection_volumes(collection);
        if held.is_empty() {
            return Err(Error::CollectionNotFound(collection.to_owned()));
        }
        let results = futures::future::join_all(
            held.iter()
                .map(|(url, vid)| self.volumes.delete_volume(url, *vid)),
        )
        .await;
        let mut failures = Vec::new();
        {
            let mut topo = self.topo_mut();
            for ((url, vid), r) in held.iter().zip(results) {
                match r {
                    Ok(()) => topo.remove_volume(url, *vid),
                    Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                        topo.remove_volume(url, *vid);
                    }
                    Err(e) => failures.push(format!("volume {vid} on {url}: {e}")),
                }
            }
        }
        if !failures.is_empty() {
            tracing::warn!(
                collection,
                failed = failures.len(),
                "deleting a collection failed on some volumes: {}",
                failures.join("; ")
            );
            return Err(Error::CollectionDeleteFailed {
                collection: collection.to_owned(),
                failed: failures.len(),
                detail: failures.join("; "),
            });
        }
        tracing::info!(collection, volumes = held.len(), "collection deleted");
        Ok(())
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
