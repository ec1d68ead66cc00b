//! The master's wire contract: assign, lookup, heartbeats and status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::VolumeId;

/// Replica placement `xyz` as in SeaweedFS: `x` copies in other data centers, `y` on other
/// racks, `z` on other servers of the same rack. Kelp has one rack, so every extra copy
/// goes to a distinct server; `001` means two copies on two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Replication {
    /// Copies in other data centers.
    pub diff_dc: u8,
    /// Copies on other racks.
    pub diff_rack: u8,
    /// Copies on other servers of the same rack.
    pub same_rack: u8,
}

impl Replication {
    /// Total number of copies, the original included.
    pub fn copies(self) -> usize {
        1 + usize::from(self.diff_dc) + usize::from(self.diff_rack) + usize::from(self.same_rack)
    }

    /// The byte stored in a volume's superblock (`x*100 + y*10 + z`).
    pub fn to_byte(self) -> u8 {
        self.diff_dc * 100 + self.diff_rack * 10 + self.same_rack
    }

    /// Decodes the superblock byte.
    pub fn from_byte(b: u8) -> Self {
        Self {
            diff_dc: b / 100,
            diff_rack: (b / 10) % 10,
            same_rack: b % 10,
        }
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.diff_dc, self.diff_rack, self.same_rack)
    }
}

impl FromStr for Replication {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = s.bytes().map(|b| b.wrapping_sub(b'0')).collect();
        match digits.as_slice() {
            [x, y, z] if *x <= 2 && *y <= 2 && *z <= 2 => Ok(Self {
                diff_dc: *x,
                diff_rack: *y,
                same_rack: *z,
            }),
            _ => Err(format!(
                "replication {s:?} must be three digits 0-2, like 000 or 001"
            )),
        }
    }
}

impl Serialize for Replication {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Replication {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Query of `GET|POST /dir/assign`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignQuery {
    /// How many consecutive keys to reserve (default 1).
    pub count: Option<u64>,
    /// Collection (volumes are grouped by collection).
    pub collection: Option<String>,
    /// Replica placement, e.g. `001`.
    pub replication: Option<String>,
    /// Accepted for SeaweedFS compatibility; Kelp does not expire needles.
    pub ttl: Option<String>,
}

/// Answer of `/dir/assign`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AssignResponse {
    /// The file id to write to.
    pub fid: String,
    /// The volume server to write to.
    pub url: String,
    /// Its public address.
    #[serde(rename = "publicUrl")]
    pub public_url: String,
    /// Number of keys reserved.
    pub count: u64,
    /// When the cluster signs fid tokens: the token to send with the write, as
    /// `Authorization: BEARER <auth>` (SeaweedFS's field name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// Query of `GET /dir/lookup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    /// A volume id.
    #[serde(rename = "volumeId")]
    pub volume_id: Option<String>,
    /// Or a file id, whose volume is looked up.
    #[serde(rename = "fileId")]
    pub file_id: Option<String>,
    /// Accepted for SeaweedFS compatibility.
    pub collection: Option<String>,
}

/// One server holding a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Location {
    /// Internal address `host:port`.
    pub url: String,
    /// Public address.
    #[serde(rename = "publicUrl")]
    pub public_url: String,
}

/// Answer of `/dir/lookup`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LookupResponse {
    /// What was looked up.
    #[serde(rename = "volumeOrFileId")]
    pub volume_or_file_id: String,
    /// Servers holding it (live ones first).
    pub locations: Vec<Location>,
    /// For a `fileId` lookup when the cluster signs read tokens: the token a read of that fid
    /// needs (SeaweedFS's field name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// For a `fileId` lookup by a caller allowed to write (write API key or cluster token)
    /// when the cluster signs fid tokens: the token a delete of that fid needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// What a volume server reports about one of its volumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Volume id.
    pub id: VolumeId,
    /// Collection ("" for none).
    #[serde(default)]
    pub collection: String,
    /// Replica placement.
    pub replication: Replication,
    /// Size of the `.dat` in bytes.
    pub size: u64,
    /// Live needles.
    pub file_count: u64,
    /// Deleted needles.
    pub delete_count: u64,
    /// Bytes of the `.dat` no live needle holds (overwritten and deleted needles, tombstones):
    /// what a vacuum would give back (0 from servers that do not report it).
    #[serde(default)]
    pub deleted_bytes: u64,
    /// Whether it refuses writes.
    pub read_only: bool,
    /// Largest needle key stored, so a master that lost its state never reissues keys.
    pub max_file_key: u64,
}

/// Body of `POST /heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Internal address `host:port` of the volume server.
    pub url: String,
    /// Public address.
    pub public_url: String,
    /// How many volumes it may hold.
    pub max_volumes: u32,
    /// Its volumes.
    pub volumes: Vec<VolumeInfo>,
}

/// Answer of `POST /heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatResponse {
    /// Volumes reaching this size are no longer written to.
    pub volume_size_limit: u64,
}

/// One volume server as the master sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Internal address.
    pub url: String,
    /// Public address.
    pub public_url: String,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
    /// Whether it is considered alive.
    pub alive: bool,
    /// How many volumes it may hold.
    pub max_volumes: u32,
    /// Its volumes.
    pub volumes: Vec<VolumeInfo>,
}

/// Answer of `GET /dir/status`: Kelp's own fields and SeaweedFS's `Topology` and `Version`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirStatus {
    /// Largest volume id ever allocated.
    pub max_volume_id: VolumeId,
    /// Next file key to be handed out.
    pub next_file_key: u64,
    /// Volume servers.
    pub nodes: Vec<NodeStatus>,
    /// The live topology in SeaweedFS's shape.
    #[serde(rename = "Topology", default)]
    pub topology: SeaweedTopology,
    /// The master's version (`kelp <semver>`).
    #[serde(rename = "Version", default)]
    pub version: String,
}

/// SeaweedFS's topology view (`/dir/status`'s `Topology`): capacity, the data center / rack /
/// server tree and one layout per (collection, replication). Kelp has one data center
/// (`DefaultDataCenter`) with one rack (`DefaultRack`), as SeaweedFS names them by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedTopology {
    /// Volume slots of the live servers.
    pub max: u64,
    /// Free volume slots.
    pub free: u64,
    /// Data centers.
    pub data_centers: Vec<SeaweedDataCenter>,
    /// Writable volumes per (collection, replication).
    pub layouts: Vec<SeaweedLayout>,
}

/// One data center of [`SeaweedTopology`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedDataCenter {
    /// Its name.
    pub id: String,
    /// Its racks.
    pub racks: Vec<SeaweedRack>,
}

/// One rack of a [`SeaweedDataCenter`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedRack {
    /// Its name.
    pub id: String,
    /// Its live volume servers.
    pub data_nodes: Vec<SeaweedDataNode>,
}

/// One volume server of a [`SeaweedRack`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedDataNode {
    /// Internal address.
    pub url: String,
    /// Public address.
    pub public_url: String,
    /// Volumes it holds.
    pub volumes: u64,
    /// Erasure-coded shards (Kelp has none: always 0).
    pub ec_shards: u64,
    /// Most volumes it may hold.
    pub max: u64,
    /// Its volume ids as SeaweedFS writes them (` 1-3 5`).
    pub volume_ids: String,
}

/// One layout of [`SeaweedTopology`]: the writable volumes of a (collection, replication).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeaweedLayout {
    /// Replica placement.
    pub replication: String,
    /// Always "" (Kelp has no TTL).
    pub ttl: String,
    /// Writable volume ids.
    pub writables: Vec<VolumeId>,
    /// Collection.
    pub collection: String,
    /// Always `hdd` (Kelp has one disk type).
    #[serde(rename = "diskType")]
    pub disk_type: String,
}

/// Query of `GET|POST /dir/assign`, `POST /submit` and `GET|POST /vol/grow` as the master reads
/// it: Kelp's [`AssignQuery`] plus the parameters SeaweedFS's clients send. The three routes
/// take the same volume parameters, as in SeaweedFS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeParams {
    /// Assign and submit: how many consecutive keys to reserve (default 1; 0 means 1).
    /// Grow: how many volumes to grow, each with all its copies (required).
    pub count: Option<u64>,
    /// Collection.
    pub collection: Option<String>,
    /// Replica placement.
    pub replication: Option<String>,
    /// Refused unless empty: Kelp does not expire needles.
    pub ttl: Option<String>,
    /// Data center: Kelp's only one is `DefaultDataCenter`.
    #[serde(rename = "dataCenter")]
    pub data_center: Option<String>,
    /// Rack: Kelp's only one is `DefaultRack`.
    pub rack: Option<String>,
    /// A volume server (`host:port`) the volume must be on.
    #[serde(rename = "dataNode")]
    pub data_node: Option<String>,
    /// Disk type: Kelp's only one is `hdd`.
    #[serde(rename = "diskType")]
    pub disk_type: Option<String>,
    /// Accepted and ignored: Kelp volumes are not preallocated.
    pub preallocate: Option<String>,
    /// Accepted and ignored: Kelp volumes are not memory-mapped.
    #[serde(rename = "memoryMapMaxSizeMb")]
    pub memory_map_max_size_mb: Option<String>,
    /// Assign and submit: volumes to grow when none is writable (default 1). Grow: accepted
    /// and ignored, as SeaweedFS does.
    #[serde(rename = "writableVolumeCount")]
    pub writable_volume_count: Option<u64>,
    /// Pretty-print the answer when non-empty.
    pub pretty: Option<String>,
}

/// Query of `GET|POST /dir/assign` and `POST /submit`.
pub type AssignParams = VolumeParams;

/// Query of `GET|POST /vol/grow`.
pub type GrowParams = VolumeParams;

/// Query of `GET /dir/lookup` as the master reads it: [`LookupQuery`] plus SeaweedFS's
/// `read` and `pretty`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupParams {
    /// A volume id (or a full file id).
    #[serde(rename = "volumeId")]
    pub volume_id: Option<String>,
    /// Or a file id, whose volume is looked up.
    #[serde(rename = "fileId")]
    pub file_id: Option<String>,
    /// When non-empty, the volume must belong to this collection (else 404).
    pub collection: Option<String>,
    /// Accepted and ignored: SeaweedFS answers a read JWT with it; Kelp issues none.
    pub read: Option<String>,
    /// Pretty-print the answer when non-empty.
    pub pretty: Option<String>,
}

/// Answer of `/vol/grow`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrowResponse {
    /// Volumes grown.
    pub count: u64,
}

/// Answer of `GET /vol/status` in SeaweedFS's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolStatus {
    /// The master's version.
    pub version: String,
    /// Volumes per data center, rack and server.
    pub volumes: VolStatusVolumes,
}

/// The `Volumes` of [`VolStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolStatusVolumes {
    /// data center → rack → server url → its volumes.
    pub data_centers: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<SeaweedVolume>>>,
    >,
    /// Free volume slots.
    pub free: u64,
    /// Volume slots.
    pub max: u64,
}

/// One volume as SeaweedFS's `/vol/status` describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedVolume {
    /// Volume id.
    pub id: VolumeId,
    /// Collection.
    pub collection: String,
    /// Size of the `.dat` in bytes.
    pub size: u64,
    /// Live needles.
    pub file_count: u64,
    /// Deleted needles.
    pub delete_count: u64,
    /// Bytes held by deleted and overwritten needles, as the volume server's last heartbeat
    /// reported them.
    pub deleted_byte_count: u64,
    /// Whether it refuses writes.
    pub read_only: bool,
    /// Replica placement as SeaweedFS encodes it (`{"node":1}` for `001`).
    pub replica_placement: SeaweedReplicaPlacement,
    /// Always `{"Count":0,"Unit":0}`: Kelp has no TTL.
    pub ttl: SeaweedTtl,
    /// Needle format version (3).
    pub version: u32,
    /// Disk type ("" = hdd).
    pub disk_type: String,
}

/// SeaweedFS's JSON encoding of a replica placement: zero counts are omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeaweedReplicaPlacement {
    /// Copies on other servers of the same rack.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub node: u8,
    /// Copies on other racks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rack: u8,
    /// Copies in other data centers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dc: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl From<Replication> for SeaweedReplicaPlacement {
    fn from(r: Replication) -> Self {
        Self {
            node: r.same_rack,
            rack: r.diff_rack,
            dc: r.diff_dc,
        }
    }
}

/// SeaweedFS's TTL (Kelp's is always zero).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SeaweedTtl {
    /// Always 0.
    pub count: u32,
    /// Always 0.
    pub unit: u32,
}

/// Answer of `POST /submit` (SeaweedFS's shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubmitResponse {
    /// The file id written.
    pub fid: String,
    /// The uploaded part's file name ("" when it had none).
    #[serde(rename = "fileName")]
    pub file_name: String,
    /// `publicUrl/fid`.
    #[serde(rename = "fileUrl")]
    pub file_url: String,
    /// Bytes stored.
    pub size: u64,
    /// The volume server's ETag of the needle.
    #[serde(rename = "eTag")]
    pub etag: String,
}

/// Query of `GET|POST /col/delete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColDeleteParams {
    /// The collection whose volumes to delete; required and non-empty (the default
    /// collection, `""`, is never deleted this way).
    pub collection: Option<String>,
    /// Accepted and ignored (the answer has no body).
    pub pretty: Option<String>,
}

/// Query of `GET|POST /vol/vacuum`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumParams {
    /// Compact volumes whose garbage ratio exceeds this (0..=1; default `--garbage-threshold`).
    #[serde(rename = "garbageThreshold")]
    pub garbage_threshold: Option<f64>,
    /// Pretty-print the answer when non-empty.
    pub pretty: Option<String>,
}

/// One volume a volume server compacted, as the master reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VacuumedVolume {
    /// The volume server (each compacts its own replica).
    pub server: String,
    /// Volume id.
    pub volume: VolumeId,
    /// `.dat` bytes before.
    pub before: u64,
    /// `.dat` bytes after.
    pub after: u64,
}

/// A volume server whose vacuum failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VacuumFailure {
    /// The volume server.
    pub server: String,
    /// What went wrong.
    pub error: String,
}

/// Answer of `/vol/vacuum`: SeaweedFS's `Topology` and `Version` (what it answers) plus what
/// each live volume server compacted and which failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VacuumResponse {
    /// The threshold used.
    #[serde(rename = "garbageThreshold")]
    pub garbage_threshold: f64,
    /// Volumes compacted, by server.
    pub compacted: Vec<VacuumedVolume>,
    /// Servers whose vacuum failed.
    pub failed: Vec<VacuumFailure>,
    /// The live topology in SeaweedFS's shape.
    #[serde(rename = "Topology", default)]
    pub topology: SeaweedTopology,
    /// The master's version.
    #[serde(rename = "Version", default)]
    pub version: String,
}

/// Answer of `GET /cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// Whether the answering master leads (a master without an election always does).
    #[serde(rename = "IsLeader")]
    pub is_leader: bool,
    /// The leader's address ("" while no leader is elected).
    #[serde(rename = "Leader")]
    pub leader: String,
    /// Volume servers alive.
    pub alive_nodes: usize,
    /// Volume servers known.
    pub known_nodes: usize,
}

/// Query of the volume server's `POST /admin/volume` (the master calls it to grow a volume).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateQuery {
    /// Id of the new volume.
    #[serde(rename = "volumeId")]
    pub volume_id: VolumeId,
    /// Collection.
    #[serde(default)]
    pub collection: String,
    /// Replica placement.
    #[serde(default)]
    pub replication: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_replication_parses_and_counts_copies() {
        let r: Replication = "001".parse().unwrap();
        assert_eq!(r.copies(), 2);
        assert_eq!(Replication::from_byte(r.to_byte()), r);
        assert_eq!(r.to_string(), "001");
        assert!("01".parse::<Replication>().is_err());
        assert!("009".parse::<Replication>().is_err());
        assert!("a01".parse::<Replication>().is_err());
    }
}
