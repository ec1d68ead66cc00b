//! The same client requests against the real SeaweedFS master and against Kelp's master.
