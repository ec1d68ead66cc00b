//! The volume server's handlers, one module per resource.

pub mod admin;
pub mod blobs;
pub mod ops;
