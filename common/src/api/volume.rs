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
