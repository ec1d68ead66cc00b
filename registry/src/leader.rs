//! Which registry instance writes: the lease of `common::lease` at
//! `/registry/<namespace>/<topic>/writer.lease`, and the follower's forwarding target.
//!
//! Several registries may serve the same topic. The one holding the lease writes; the others
//! forward writes to it. Every instance follows the topic for reads. The broker has no
//! conditional publish, so a writer paused longer than its lease between its last check and
//! its publish could still race a new writer; ids stay unique in every case where the lease
//! holds. Without `--filer` there is no lease: the instance is the only writer.

pub use common::lease::{Leadership, Role, run_lease};

/// The lease's path for a topic.
pub fn lease_path(namespace: &str, topic: &str) -> String {
    format!("/registry/{namespace}/{topic}/writer.lease")
}
