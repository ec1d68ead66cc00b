//! Soft state rebuilt from heartbeats: volume servers, their volumes, and which volumes are
//! writable for a given collection and replication.
//!
//! The map is bounded: a server not heard from for `forget_after` is forgotten with its volume
//! locations (pruned on heartbeats, at most every tenth of that bound, and hidden from the views
//! meanwhile), and a heartbeat from an unknown server is refused while `max_nodes` are
//! remembered. So heartbeats from made-up servers (on a cluster without a cluster token) cannot
//! grow the master's memory forever.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::api::master::{
    Heartbeat, Location, NodeStatus, Replication, SeaweedDataCenter, SeaweedDataNode,
    SeaweedLayout, SeaweedRack, SeaweedTopology, SeaweedTtl, SeaweedVolume, VolStatus,
    VolStatusVolumes, VolumeInfo,
};
use common::ids::VolumeId;
use rand::seq::IndexedRandom;

/// One volume server.
#[derive(Debug, Clone)]
pub struct Node {
    /// Internal address.
    pub url: String,
    /// Public address.
    pub public_url: String,
    /// Most volumes it may hold.
    pub max_volumes: u32,
    /// When it last reported.
    pub last_seen: Instant,
    /// Its volumes.
    pub volumes: HashMap<VolumeId, VolumeInfo>,
}

/// The one data center Kelp's servers are in, named as SeaweedFS names its default.
pub const DATA_CENTER: &str = "DefaultDataCenter";
/// The one rack Kelp's servers are in.
pub const RACK: &str = "DefaultRack";
/// The one disk type Kelp's volumes have.
pub const DISK_TYPE: &str = "hdd";

impl Node {
    /// Whether `addr` names this server (its internal or public address).
    pub fn is(&self, addr: &str) -> bool {
        self.url == addr || self.public_url == addr
    }

    fn location(&self) -> Location {
        Location {
            url: self.url.clone(),
            public_url: self.public_url.clone(),
        }
    }
}

/// Volume ids as SeaweedFS lists them in `VolumeIds`: runs as ` a-b`, single ids as ` a`.
pub fn volume_id_ranges(sorted: &[VolumeId]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if j == i {
            out.push_str(&format!(" {}", sorted[i]));
        } else {
            out.push_str(&format!(" {}-{}", sorted[i], sorted[j]));
        }
        i = j + 1;
    }
    if out.is_empty() {
        out.push(' ');
    }
    out
}

/// Default number of distinct volume servers the topology remembers.
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Shortest time a silent server is remembered (its volumes are still listed as dead ones).
pub const MIN_FORGET_AFTER: Duration = Duration::from_secs(60);

/// A heartbeat from a new server while the topology holds as many as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the master already tracks its maximum of {max} volume servers")]
pub struct TooManyNodes {
    /// The bound.
    pub max: usize,
}

/// The cluster as heartbeats describe it.
#[derive(Debug)]
pub struct Topology {
    nodes: HashMap<String, Node>,
    dead_after: Duration,
    forget_after: Duration,
    max_nodes: usize,
    last_prune: Instant,
    /// Volumes at or above this size are not assigned to.
    pub size_limit: u64,
}

/// A volume that can take writes and where to send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writable {
    /// Volume id.
    pub volume_id: VolumeId,
    /// A server holding it (the one that receives the write and forwards to replicas).
    pub location: Location,
}

impl Topology {
    /// An empty topology; a node missing heartbeats for `dead_after` is dead, and forgotten
    /// after [`MIN_FORGET_AFTER`] (or `dead_after`, if longer); at most [`DEFAULT_MAX_NODES`]
    /// nodes (see [`Topology::with_bounds`]).
    pub fn new(dead_after: Duration, size_limit: u64) -> Self {
        Self {
            nodes: HashMap::new(),
            dead_after,
            forget_after: dead_after.max(MIN_FORGET_AFTER),
            max_nodes: DEFAULT_MAX_NODES,
            last_prune: Instant::now(),
            size_limit,
        }
    }

    /// Forgets a node silent for `forget_after` and remembers at most `max_nodes` nodes.
    pub fn with_bounds(mut self, forget_after: Duration, max_nodes: usize) -> Self {
        self.forget_after = forget_after;
        self.max_nodes = max_nodes;
        self
    }

    fn alive(&self, n: &Node) -> bool {
        n.last_seen.elapsed() < self.dead_after
    }

    /// Whether `n` is still remembered (not yet silent for `forget_after`); a forgotten node
    /// not pruned yet is hidden from every view.
    fn remembered(&self, n: &Node) -> bool {
        n.last_seen.elapsed() < self.forget_after
    }

    /// Forgets the nodes silent for `forget_after`, with their volume locations: at most every
    /// tenth of that bound unless `force`. Returns how many were forgotten.
    pub fn prune(&mut self, force: bool) -> usize {
        if !force && self.last_prune.elapsed() < self.forget_after / 10 {
            return 0;
        }
        self.last_prune = Instant::now();
        let forget_after = self.forget_after;
        let before = self.nodes.len();
        self.nodes.retain(|url, n| {
            let keep = n.last_seen.elapsed() < forget_after;
            if !keep {
                tracing::info!(server = %url, volumes = n.volumes.len(), silent_ms = n.last_seen.elapsed().as_millis() as u64, "volume server forgotten");
            }
            keep
        });
        before - self.nodes.len()
    }

    /// Whether a heartbeat from `url` would be recorded: a known node always is, a new one
    /// while fewer than `max_nodes` are remembered (after forgetting the silent ones).
    pub fn admit(&mut self, url: &str) -> Result<(), TooManyNodes> {
        self.prune(false);
        if !self.nodes.contains_key(url) && self.nodes.len() >= self.max_nodes {
            self.prune(true);
            if self.nodes.len() >= self.max_nodes {
                return Err(TooManyNodes {
                    max: self.max_nodes,
                });
            }
        }
        Ok(())
    }

    /// Records a heartbeat; returns true if the node was new or had been dead. A heartbeat
    /// from an unknown node while [`Topology::with_bounds`]'s `max_nodes` are remembered (even
    /// after forgetting the silent ones) is refused.
    pub fn heartbeat(&mut self, beat: &Heartbeat) -> Result<bool, TooManyNodes> {
        self.admit(&beat.url)?;
        let was_alive = self.nodes.get(&beat.url).is_some_and(|n| self.alive(n));
        let node = Node {
            url: beat.url.clone(),
            public_url: beat.public_url.clone(),
            max_volumes: beat.max_volumes,
            last_seen: Instant::now(),
            volumes: beat.volumes.iter().map(|v| (v.id, v.clone())).collect(),
        };
        self.nodes.insert(beat.url.clone(), node);
        Ok(!was_alive)
    }

    /// Whether a remembered node holds a volume of `collection`.
    pub fn has_collection(&self, collection: &str) -> bool {
        self.nodes
            .values()
            .filter(|n| self.remembered(n))
            .any(|n| n.volumes.values().any(|v| v.collection == collection))
    }

    /// Number of distinct named collections (`""` is not counted) on remembered nodes.
    pub fn collection_count(&self) -> usize {
        let names: std::collections::HashSet<&str> = self
            .nodes
            .values()
            .filter(|n| self.remembered(n))
            .flat_map(|n| n.volumes.values())
            .map(|v| v.collection.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        names.len()
    }

    /// Records a volume just allocated on `url` (before its next heartbeat reports it).
    pub fn add_volume(&mut self, url: &str, info: VolumeInfo) {
        if let Some(n) = self.nodes.get_mut(url) {
            n.volumes.insert(info.id, info);
        }
    }

    /// The volumes of `collection` on live servers, as `(server url, volume)`, sorted.
    pub fn collection_volumes(&self, collection: &str) -> Vec<(String, VolumeId)> {
        let mut held: Vec<(String, VolumeId)> = self
            .nodes
            .values()
            .filter(|n| self.alive(n))
            .flat_map(|n| {
                n.volumes
                    .values()
                    .filter(|v| v.collection == collection)
                    .map(|v| (n.url.clone(), v.id))
            })
            .collect();
        held.sort();
        held
    }

    /// Forgets volume `vid` on `url` (deleted there; its next heartbeat agrees).
    pub fn remove_volume(&mut self, url: &str, vid: VolumeId) {
        if let Some(n) = self.nodes.get_mut(url) {
            n.volumes.remove(&vid);
        }
    }

    /// Live servers holding `vid`.
    pub fn lookup(&self, vid: VolumeId) -> Vec<Location> {
        let mut locs: Vec<Location> = self
            .nodes
            .values()
            .filter(|n| self.alive(n) && n.volumes.contains_key(&vid))
            .map(|n| Location {
                url: n.url.clone(),
                public_url: n.public_url.clone(),
            })
            .collect();
        locs.sort_by(|a, b| a.url.cmp(&b.url));
        locs
    }

    /// Ids of the writable volumes of `collection` with `replication` (every copy on a live
    /// server, none read-only or full), each with its live holders, by id; with `node`, only
    /// volumes with a copy there.
    fn writables(
        &self,
        collection: &str,
        replication: Replication,
        node: Option<&str>,
    ) -> Vec<(VolumeId, Vec<&Node>)> {
        let mut holders: HashMap<VolumeId, Vec<&Node>> = HashMap::new();
        let mut unusable: Vec<VolumeId> = Vec::new();
        for n in self.nodes.values() {
            for v in n.volumes.values() {
                if v.collection != collection || v.replication != replication {
                    continue;
                }
                if !self.alive(n) || v.read_only || v.size >= self.size_limit {
                    unusable.push(v.id);
                } else {
                    holders.entry(v.id).or_default().push(n);
                }
            }
        }
        let mut candidates: Vec<(VolumeId, Vec<&Node>)> = holders
            .into_iter()
            .filter(|(vid, nodes)| nodes.len() >= replication.copies() && !unusable.contains(vid))
            .filter_map(|(vid, nodes)| match node {
                None => Some((vid, nodes)),
                Some(want) => {
                    let there: Vec<&Node> = nodes.into_iter().filter(|n| n.is(want)).collect();
                    (!there.is_empty()).then_some((vid, there))
                }
            })
            .collect();
        candidates.sort_by_key(|(vid, _)| *vid);
        candidates
    }

    /// A random writable volume of `collection` with `replication`: every copy is on a live
    /// server, none is read-only or full. With `node`, one with a copy on that server, which
    /// is then the one written to.
    pub fn pick_writable(
        &self,
        collection: &str,
        replication: Replication,
        node: Option<&str>,
    ) -> Option<Writable> {
        let candidates = self.writables(collection, replication, node);
        let mut rng = rand::rng();
        let (vid, nodes) = candidates.choose(&mut rng)?;
        let node = nodes.choose(&mut rng)?;
        Some(Writable {
            volume_id: *vid,
            location: node.location(),
        })
    }

    /// Up to `count` distinct live servers with a free volume slot, emptiest first; with
    /// `node`, that server first (and none at all unless it is live with a free slot).
    pub fn pick_nodes_for_growth(&self, count: usize, node: Option<&str>) -> Vec<Node> {
        let mut free: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| self.alive(n) && (n.volumes.len() as u32) < n.max_volumes)
            .collect();
        free.sort_by(|a, b| {
            let first = |n: &Node| node.is_some_and(|want| n.is(want));
            first(b)
                .cmp(&first(a))
                .then(a.volumes.len().cmp(&b.volumes.len()))
                .then(a.url.cmp(&b.url))
        });
        if let Some(want) = node
            && !free.first().is_some_and(|n| n.is(want))
        {
            return Vec::new();
        }
        free.into_iter().take(count).cloned().collect()
    }

    /// Free volume slots of the live servers (of `node` alone when given).
    pub fn free_slots(&self, node: Option<&str>) -> u64 {
        self.nodes
            .values()
            .filter(|n| self.alive(n) && node.is_none_or(|want| n.is(want)))
            .map(|n| u64::from(n.max_volumes).saturating_sub(n.volumes.len() as u64))
            .sum()
    }

    /// The collection of volume `vid`, if a live server holds it.
    pub fn collection_of(&self, vid: VolumeId) -> Option<String> {
        self.nodes
            .values()
            .filter(|n| self.alive(n))
            .find_map(|n| n.volumes.get(&vid).map(|v| v.collection.clone()))
    }

    /// SeaweedFS's view of the live servers: one data center and rack, and a layout per
    /// (collection, replication) with its writable volumes.
    pub fn seaweed(&self) -> SeaweedTopology {
        let mut live: Vec<&Node> = self.nodes.values().filter(|n| self.alive(n)).collect();
        live.sort_by(|a, b| a.url.cmp(&b.url));
        let max: u64 = live.iter().map(|n| u64::from(n.max_volumes)).sum();
        let data_nodes = live
            .iter()
            .map(|n| {
                let mut ids: Vec<VolumeId> = n.volumes.keys().copied().collect();
                ids.sort_unstable();
                SeaweedDataNode {
                    url: n.url.clone(),
                    public_url: n.public_url.clone(),
                    volumes: ids.len() as u64,
                    ec_shards: 0,
                    max: u64::from(n.max_volumes),
                    volume_ids: volume_id_ranges(&ids),
                }
            })
            .collect();
        let mut kinds: Vec<(String, Replication)> = live
            .iter()
            .flat_map(|n| n.volumes.values())
            .map(|v| (v.collection.clone(), v.replication))
            .collect();
        kinds.sort();
        kinds.dedup();
        let layouts = kinds
            .into_iter()
            .map(|(collection, replication)| SeaweedLayout {
                replication: replication.to_string(),
                ttl: String::new(),
                writables: self
                    .writables(&collection, replication, None)
                    .into_iter()
                    .map(|(vid, _)| vid)
                    .collect(),
                collection,
                disk_type: DISK_TYPE.to_owned(),
            })
            .collect();
        SeaweedTopology {
            max,
            free: self.free_slots(None),
            data_centers: vec![SeaweedDataCenter {
                id: DATA_CENTER.to_owned(),
                racks: vec![SeaweedRack {
                    id: RACK.to_owned(),
                    data_nodes,
                }],
            }],
            layouts,
        }
    }

    /// SeaweedFS's `/vol/status` view: the volumes of each live server.
    pub fn vol_status(&self, version: &str) -> VolStatus {
        let mut servers = BTreeMap::new();
        for n in self.nodes.values().filter(|n| self.alive(n)) {
            let mut vols: Vec<&VolumeInfo> = n.volumes.values().collect();
            vols.sort_by_key(|v| v.id);
            let vols = vols
                .into_iter()
                .map(|v| SeaweedVolume {
                    id: v.id,
                    collection: v.collection.clone(),
                    size: v.size,
                    file_count: v.file_count,
                    delete_count: v.delete_count,
                    deleted_byte_count: v.deleted_bytes,
                    read_only: v.read_only,
                    replica_placement: v.replication.into(),
                    ttl: SeaweedTtl::default(),
                    version: 3,
                    disk_type: String::new(),
                })
                .collect();
            servers.insert(n.url.clone(), vols);
        }
        let racks = BTreeMap::from([(RACK.to_owned(), servers)]);
        let live = self.nodes.values().filter(|n| self.alive(n));
        VolStatus {
            version: version.to_owned(),
            volumes: VolStatusVolumes {
                data_centers: BTreeMap::from([(DATA_CENTER.to_owned(), racks)]),
                free: self.free_slots(None),
                max: live.map(|n| u64::from(n.max_volumes)).sum(),
            },
        }
    }

    /// Live servers, by url.
    pub fn alive_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .nodes
            .values()
            .filter(|n| self.alive(n))
            .map(|n| n.url.clone())
            .collect();
        urls.sort();
        urls
    }

    /// Number of live servers.
    pub fn alive_count(&self) -> usize {
        self.nodes.values().filter(|n| self.alive(n)).count()
    }

    /// Number of known (remembered) servers.
    pub fn known_count(&self) -> usize {
        self.nodes.values().filter(|n| self.remembered(n)).count()
    }

    /// Status of every remembered server.
    pub fn status(&self) -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .values()
            .filter(|n| self.remembered(n))
            .map(|n| {
                let mut volumes: Vec<VolumeInfo> = n.volumes.values().cloned().collect();
                volumes.sort_by_key(|v| v.id);
                NodeStatus {
                    url: n.url.clone(),
                    public_url: n.public_url.clone(),
                    last_heartbeat_ms_ago: n.last_seen.elapsed().as_millis() as u64,
                    alive: self.alive(n),
                    max_volumes: n.max_volumes,
                    volumes,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.url.cmp(&b.url));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(id: VolumeId, replication: &str, size: u64) -> VolumeInfo {
        VolumeInfo {
            id,
            collection: String::new(),
            replication: replication.parse().unwrap(),
            size,
            file_count: 0,
            delete_count: 0,
            deleted_bytes: 0,
            read_only: false,
            max_file_key: 0,
        }
    }

    fn beat(url: &str, vols: Vec<VolumeInfo>) -> Heartbeat {
        Heartbeat {
            url: url.into(),
            public_url: url.into(),
            max_volumes: 2,
            volumes: vols,
        }
    }

    #[test]
    fn test_topology_replicated_volume_needs_every_copy_alive() {
        let mut t = Topology::new(Duration::from_secs(60), 1000);
        let r: Replication = "001".parse().unwrap();
        t.heartbeat(&beat("a", vec![vol(1, "001", 8)])).unwrap();
        assert_eq!(
            t.pick_writable("", r, None),
            None,
            "one copy of a 001 volume is not writable"
        );
        t.heartbeat(&beat("b", vec![vol(1, "001", 8)])).unwrap();
        assert_eq!(t.pick_writable("", r, None).unwrap().volume_id, 1);
        assert_eq!(t.lookup(1).len(), 2);
    }

    #[test]
    fn test_topology_full_volume_is_not_writable() {
        let mut t = Topology::new(Duration::from_secs(60), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 1000)])).unwrap();
        assert_eq!(t.pick_writable("", Replication::default(), None), None);
    }

    #[test]
    fn test_topology_dead_node_is_skipped() {
        let mut t = Topology::new(Duration::from_millis(0), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 8)])).unwrap();
        assert_eq!(t.pick_writable("", Replication::default(), None), None);
        assert!(t.lookup(1).is_empty());
        assert!(t.pick_nodes_for_growth(1, None).is_empty());
    }

    #[test]
    fn test_topology_growth_prefers_emptiest_nodes_with_slots() {
        let mut t = Topology::new(Duration::from_secs(60), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 8), vol(2, "000", 8)]))
            .unwrap();
        t.heartbeat(&beat("b", vec![vol(3, "000", 8)])).unwrap();
        t.heartbeat(&beat("c", vec![])).unwrap();
        let picked: Vec<String> = t
            .pick_nodes_for_growth(3, None)
            .into_iter()
            .map(|n| n.url)
            .collect();
        assert_eq!(picked, vec!["c", "b"], "a is full (2 of 2)");
    }

    #[test]
    fn test_topology_forgets_silent_nodes_and_caps_new_ones() {
        let mut t = Topology::new(Duration::from_millis(10), 1000)
            .with_bounds(Duration::from_millis(50), 2);
        t.heartbeat(&beat("a", vec![vol(1, "000", 8)])).unwrap();
        t.heartbeat(&beat("b", vec![])).unwrap();
        assert_eq!(
            t.heartbeat(&beat("c", vec![])),
            Err(TooManyNodes { max: 2 })
        );
        // A known node still reports while the map is full.
        assert_eq!(t.heartbeat(&beat("b", vec![])), Ok(false));
        // Both fall silent for longer than the bound (backdated, not slept).
        for n in t.nodes.values_mut() {
            n.last_seen = n.last_seen.checked_sub(Duration::from_millis(60)).unwrap();
        }
        t.last_prune = t.last_prune.checked_sub(Duration::from_millis(60)).unwrap();
        assert_eq!(
            t.known_count(),
            0,
            "silent nodes are hidden before they are pruned"
        );
        // The silent nodes are forgotten to make room for a new one.
        assert_eq!(t.heartbeat(&beat("c", vec![])), Ok(true));
        assert_eq!(t.nodes.len(), 1);
        assert!(t.lookup(1).is_empty() && !t.has_collection(""));
    }
}

#[cfg(test)]
mod seaweed_tests {
    use super::*;

    #[test]
    fn test_volume_id_ranges_as_seaweedfs_writes_them() {
        assert_eq!(volume_id_ranges(&[]), " ");
        assert_eq!(volume_id_ranges(&[1, 2, 3, 4, 5, 6, 7, 8]), " 1-8");
        assert_eq!(
            volume_id_ranges(&[9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 22]),
            " 9-15 17-22"
        );
        assert_eq!(volume_id_ranges(&[3, 5, 6]), " 3 5-6");
    }
}
