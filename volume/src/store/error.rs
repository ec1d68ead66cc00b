//! Errors of volume operations. Each names the volume; none knows about HTTP (the mapping to
//! statuses lives in `crate::http::error`).

use common::ids::VolumeId;

/// Errors of volume operations; each names the volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume on this server.
    #[error("volume {volume} not found on this server")]
    VolumeNotFound {
        /// Volume id.
        volume: VolumeId,
    },
    /// No such needle (or a wrong cookie).
    #[error("needle {key:x} not found in volume {volume}")]
    NeedleNotFound {
        /// Volume id.
        volume: VolumeId,
        /// Needle key.
        key: u64,
    },
    /// A write to a live needle with another cookie (as SeaweedFS refuses it): the fid is
    /// not the one the needle was written under.
    #[error("needle {key:x} in volume {volume} exists with another cookie")]
    CookieMismatch {
        /// Volume id.
        volume: VolumeId,
        /// Needle key.
        key: u64,
    },
    /// A compaction moved the record a deletion was aimed at (the deletion re-reads it).
    #[error("volume {volume} was compacted meanwhile; retry")]
    Moved {
        /// Volume id.
        volume: VolumeId,
    },
    /// A compaction of the volume is running, so it cannot be deleted now (retry after it).
    #[error("volume {volume} is being vacuumed; retry once the vacuum is done")]
    VacuumInProgress {
        /// Volume id.
        volume: VolumeId,
    },
    /// The volume already exists.
    #[error("volume {volume} already exists")]
    Exists {
        /// Volume id.
        volume: VolumeId,
    },
    /// The volume reached its size limit or is read-only.
    #[error("volume {volume} is full or read-only")]
    Full {
        /// Volume id.
        volume: VolumeId,
    },
    /// The blob cannot be encoded (over 4 GiB).
    #[error("blob too large for volume {volume}")]
    TooLarge {
        /// Volume id.
        volume: VolumeId,
    },
    /// The disk is full.
    #[error("disk full writing volume {volume}: {source}")]
    DiskFull {
        /// Volume id.
        volume: VolumeId,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An I/O error.
    #[error("{op} of volume {volume} failed: {source}")]
    Io {
        /// Volume id.
        volume: VolumeId,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Stored data failed verification.
    #[error("volume {volume} is corrupt: {what}")]
    Corrupt {
        /// Volume id.
        volume: VolumeId,
        /// What failed.
        what: String,
    },
    /// A previous fsync or index failure stopped writes.
    #[error("volume {volume} refuses writes after a failure: {reason}")]
    Poisoned {
        /// Volume id.
        volume: VolumeId,
        /// The failure.
        reason: String,
    },
    /// The writer thread is gone (shutting down).
    #[error("volume {volume} is shutting down")]
    WriterGone {
        /// Volume id.
        volume: VolumeId,
    },
}

impl VolumeError {
    pub(crate) fn from_write(volume: VolumeId, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            Self::DiskFull { volume, source }
        } else {
            Self::Io {
                volume,
                op: "append",
                source,
            }
        }
    }

    /// A copy for answering several waiters of one failed batch.
    pub(crate) fn clone_shallow(&self) -> Self {
        match self {
            Self::DiskFull { volume, source } => Self::DiskFull {
                volume: *volume,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::Io { volume, op, source } => Self::Io {
                volume: *volume,
                op,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::Corrupt { volume, what } => Self::Corrupt {
                volume: *volume,
                what: what.clone(),
            },
            Self::Poisoned { volume, reason } => Self::Poisoned {
                volume: *volume,
                reason: reason.clone(),
            },
            Self::VolumeNotFound { volume } => Self::VolumeNotFound { volume: *volume },
            Self::NeedleNotFound { volume, key } => Self::NeedleNotFound {
                volume: *volume,
                key: *key,
            },
            Self::CookieMismatch { volume, key } => Self::CookieMismatch {
                volume: *volume,
                key: *key,
            },
            Self::Moved { volume } => Self::Moved { volume: *volume },
            Self::VacuumInProgress { volume } => Self::VacuumInProgress { volume: *volume },
            Self::Exists { volume } => Self::Exists { volume: *volume },
            Self::Full { volume } => Self::Full { volume: *volume },
            Self::TooLarge { volume } => Self::TooLarge { volume: *volume },
            Self::WriterGone { volume } => Self::WriterGone { volume: *volume },
        }
    }
}
