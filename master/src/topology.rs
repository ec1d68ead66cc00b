//! Soft state rebuilt from heartbeats: volume servers, their volumes, and which volumes are
//! writable for a given collection and replication.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::api::master::{Heartbeat, Location, NodeStatus, Replication, VolumeInfo};
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

/// The cluster as heartbeats describe it.
#[derive(Debug)]
pub struct Topology {
    nodes: HashMap<String, Node>,
    dead_after: Duration,
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
    /// An empty topology; a node missing heartbeats for `dead_after` is dead.
    pub fn new(dead_after: Duration, size_limit: u64) -> Self {
        Self {
            nodes: HashMap::new(),
            dead_after,
            size_limit,
        }
    }

    fn alive(&self, n: &Node) -> bool {
        n.last_seen.elapsed() < self.dead_after
    }

    /// Records a heartbeat; returns true if the node was new or had been dead.
    pub fn heartbeat(&mut self, beat: &Heartbeat) -> bool {
        let was_alive = self.nodes.get(&beat.url).is_some_and(|n| self.alive(n));
        let node = Node {
            url: beat.url.clone(),
            public_url: beat.public_url.clone(),
            max_volumes: beat.max_volumes,
            last_seen: Instant::now(),
            volumes: beat.volumes.iter().map(|v| (v.id, v.clone())).collect(),
        };
        self.nodes.insert(beat.url.clone(), node);
        !was_alive
    }

    /// Records a volume just allocated on `url` (before its next heartbeat reports it).
    pub fn add_volume(&mut self, url: &str, info: VolumeInfo) {
        if let Some(n) = self.nodes.get_mut(url) {
            n.volumes.insert(info.id, info);
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

    /// A random writable volume of `collection` with `replication`: every copy is on a live
    /// server, none is read-only or full.
    pub fn pick_writable(&self, collection: &str, replication: Replication) -> Option<Writable> {
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
            .collect();
        candidates.sort_by_key(|(vid, _)| *vid);
        let mut rng = rand::rng();
        let (vid, nodes) = candidates.choose(&mut rng)?;
        let node = nodes.choose(&mut rng)?;
        Some(Writable {
            volume_id: *vid,
            location: Location {
                url: node.url.clone(),
                public_url: node.public_url.clone(),
            },
        })
    }

    /// Up to `count` distinct live servers with a free volume slot, emptiest first.
    pub fn pick_nodes_for_growth(&self, count: usize) -> Vec<Node> {
        let mut free: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| self.alive(n) && (n.volumes.len() as u32) < n.max_volumes)
            .collect();
        free.sort_by(|a, b| {
            a.volumes
                .len()
                .cmp(&b.volumes.len())
                .then(a.url.cmp(&b.url))
        });
        free.into_iter().take(count).cloned().collect()
    }

    /// Number of live servers.
    pub fn alive_count(&self) -> usize {
        self.nodes.values().filter(|n| self.alive(n)).count()
    }

    /// Number of known servers.
    pub fn known_count(&self) -> usize {
        self.nodes.len()
    }

    /// Status of every server.
    pub fn status(&self) -> Vec<NodeStatus> {
        let mut nodes: Vec<NodeStatus> = self
            .nodes
            .values()
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
        t.heartbeat(&beat("a", vec![vol(1, "001", 8)]));
        assert_eq!(
            t.pick_writable("", r),
            None,
            "one copy of a 001 volume is not writable"
        );
        t.heartbeat(&beat("b", vec![vol(1, "001", 8)]));
        assert_eq!(t.pick_writable("", r).unwrap().volume_id, 1);
        assert_eq!(t.lookup(1).len(), 2);
    }

    #[test]
    fn test_topology_full_volume_is_not_writable() {
        let mut t = Topology::new(Duration::from_secs(60), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 1000)]));
        assert_eq!(t.pick_writable("", Replication::default()), None);
    }

    #[test]
    fn test_topology_dead_node_is_skipped() {
        let mut t = Topology::new(Duration::from_millis(0), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 8)]));
        assert_eq!(t.pick_writable("", Replication::default()), None);
        assert!(t.lookup(1).is_empty());
        assert!(t.pick_nodes_for_growth(1).is_empty());
    }

    #[test]
    fn test_topology_growth_prefers_emptiest_nodes_with_slots() {
        let mut t = Topology::new(Duration::from_secs(60), 1000);
        t.heartbeat(&beat("a", vec![vol(1, "000", 8), vol(2, "000", 8)]));
        t.heartbeat(&beat("b", vec![vol(3, "000", 8)]));
        t.heartbeat(&beat("c", vec![]));
        let picked: Vec<String> = t
            .pick_nodes_for_growth(3)
            .into_iter()
            .map(|n| n.url)
            .collect();
        assert_eq!(picked, vec!["c", "b"], "a is full (2 of 2)");
    }
}
