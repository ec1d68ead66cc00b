//! Crate tests of the registry: the real router over an in-memory log (`store::mem::MemLog`),
//! and `run` on a real socket.

mod follower;
mod helpers;
mod router;
mod security;
mod server;
