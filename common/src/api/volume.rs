//! The volume server's wire contract: upload, delete and status answers.

use serde::{Deserialize, Serialize};

use super::master::VolumeInfo;

/// Answer of `POST|PUT /<fid>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadResponse {
    /// File name from the multipart part or the `name` query ("" if none).
    pub name: String,
    /// Bytes of data stored.
    pub size: u64,
    /// The needle's checksum in hex, also served as the `ETag`.
    #[serde(rename = "eTag")]
    pub etag: String,
    /// The content type stored with the blob (the upload's `Content-Type`, or its multipart
    /// part's), left out when none was stored, as SeaweedFS's `mime`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime: String,
}

/// Answer of `DELETE /<fid>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeleteResponse {
    /// Bytes of data the deleted needle held.
    pub size: u64,
}

/// Answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeServerStatus {
    /// Kelp's version.
    #[serde(rename = "Version")]
    pub version: String,
    /// Volumes on this server.
    #[serde(rename = "Volumes")]
    pub volumes: Vec<VolumeInfo>,
}

/// Query of `POST /admin/vacuum`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VacuumQuery {
    /// Compact the volumes whose garbage ratio (bytes of deleted and overwritten needles over
    /// the `.dat`'s size) exceeds this; 0.3 when absent, as in SeaweedFS.
    #[serde(rename = "garbageThreshold", default)]
    pub garbage_threshold: Option<f64>,
}

/// Query of `DELETE /admin/volume`: the volume to delete with its files (the master's
/// `/col/delete` sends one per volume of the collection).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeleteVolumeQuery {
    /// Id of the volume.
    #[serde(rename = "volumeId")]
    pub volume_id: u32,
}

/// One volume a vacuum compacted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compacted {
    /// Volume id.
    pub volume: u32,
    /// Bytes of its `.dat` before.
    pub before: u64,
    /// Bytes of its `.dat` after.
    pub after: u64,
}

/// Answer of `POST /admin/vacuum`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VacuumResponse {
    /// The volumes compacted (those under the threshold are not listed).
    pub compacted: Vec<Compacted>,
}
