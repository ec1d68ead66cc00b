//! pyseaweed (SeaweedFS's Python client) against Kelp and the real SeaweedFS (placeholder:
//! being written).
