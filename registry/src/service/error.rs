//! The registry's error: why an operation failed, one variant per Confluent error code.
//!
//! This module names the codes only; [`crate::http::error`] alone maps each variant to its
//! HTTP status, so the domain never speaks HTTP.

use crate::store::StoreError;

/// Why an operation failed; each variant has one Confluent error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// Subject.
        subject: String,
        /// Version asked for.
        version: String,
    },
    /// 40403.
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 40404.
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40407.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203.
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibility(String),
    /// 42204.
    #[error("Invalid mode: {0}")]
    InvalidMode(String),
    /// 42205.
    #[error("{0}")]
    NotPermitted(String),
    /// 42206.
    #[error("One or more references exist to the schema {{subject={subject},version={version}}}")]
    ReferenceExists {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 42208 (Confluent: invalid subject).
    #[error("Invalid subject: {0}")]
    InvalidSubject(String),
    /// 409.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", reasons.join(", "))]
    Incompatible {
        /// Subject.
        subject: String,
        /// Why.
        reasons: Vec<String>,
    },
    /// 503 (Confluent's 50004, unknown leader): no instance holds the writer lease now.
    #[error("this registry does not hold the writer lease and no writer is known; retry shortly")]
    NotWriter,
    /// 503: the index is still being rebuilt.
    #[error("the schema index is still being rebuilt from the log")]
    NotReady,
    /// 50001 (503 when the broker is unreachable).
    #[error("Error in the backend data store: {0}")]
    Store(#[from] StoreError),
    /// 50002.
    #[error("Operation timed out: {0}")]
    Timeout(String),
}

/// Result of the registry's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
